package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/pfrproc"
)

// profileRequest is one profile to take while the gateway is loaded: a
// pprof kind of Caddy's admin /debug/pprof ("profile" for CPU, "allocs")
// and the file it goes to.
type profileRequest struct {
	kind, path string
}

// profileGateway loads only the gateway target t with the profiled request
// kinds for length while Caddy's admin endpoint records the asked profiles
// (all over the same window), and writes each to its path.
// Everything in the profiles is then the gateway's path: the pfr handler,
// its reverse_proxy, and the store behind it, in one process.
func profileGateway(ctx context.Context, adminPort int, t *target, fx *fixture, profiled []kind, concurrency int, length time.Duration, want []profileRequest) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	seconds := max(int(length.Seconds()), 1)
	done := make(chan error, len(want))
	for _, p := range want {
		go func() { done <- pfrproc.Profile(ctx, adminPort, p.kind, seconds, p.path) }()
	}
	var errs []error
	for pending := len(want); pending > 0; {
		select {
		case err := <-done:
			errs = append(errs, err)
			pending--
			continue
		default:
		}
		for _, k := range profiled {
			if _, _, err := batch(ctx, t, k, fx, 4*concurrency, concurrency, (*target).checkFast); err != nil {
				cancel()
				for ; pending > 0; pending-- {
					<-done
				}
				return fmt.Errorf("loading the gateway while profiling: %w", err)
			}
		}
	}
	return errors.Join(errs...)
}
