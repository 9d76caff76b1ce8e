package main

import (
	"context"
	"fmt"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/pfrproc"
)

// profileGateway loads only the gateway target t with the profiled request
// kinds for length while Caddy's admin endpoint records a CPU profile, and
// writes the profile to path.
// Everything in the profile is then the gateway's path: the pfr handler,
// its reverse_proxy, and the store behind it, in one process.
func profileGateway(ctx context.Context, adminPort int, t *target, fx *fixture, profiled []kind, concurrency int, length time.Duration, path string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	seconds := max(int(length.Seconds()), 1)
	done := make(chan error, 1)
	go func() {
		done <- pfrproc.CPUProfile(ctx, adminPort, seconds, path)
	}()
	for {
		select {
		case err := <-done:
			return err
		default:
		}
		for _, k := range profiled {
			if _, _, err := batch(ctx, t, k, fx, 4*concurrency, concurrency, (*target).checkFast); err != nil {
				cancel()
				<-done
				return fmt.Errorf("loading the gateway while profiling: %w", err)
			}
		}
	}
}
