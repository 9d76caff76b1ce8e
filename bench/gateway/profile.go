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

// profileGateway loads only target t (the gateway, or the bare proxy to
// compare it with) with the profiled request kinds for length while
// Caddy's admin endpoint records the asked profiles (all over the same
// window), writes each to its path and returns how many requests were
// answered meanwhile (about: the load starts a little before the profile
// and ends a little after it). Everything in the profiles is then t's
// path: for the gateway the pfr handler, its reverse_proxy, and the store
// behind it, in one process.
func profileGateway(ctx context.Context, adminPort int, t *target, fx *fixture, profiled []kind, concurrency int, length time.Duration, want []profileRequest) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	seconds := max(int(length.Seconds()), 1)
	done := make(chan error, len(want))
	for _, p := range want {
		go func() { done <- pfrproc.Profile(ctx, adminPort, p.kind, seconds, p.path) }()
	}
	var errs []error
	sent := 0
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
				return 0, fmt.Errorf("loading %s while profiling: %w", t.label, err)
			}
			sent += 4 * concurrency
		}
	}
	return sent, errors.Join(errs...)
}
