package main

import (
	"context"
	"fmt"
	"io"
	"slices"

	"github.com/pfrgateway/caddy-pfr/internal/pfrproc"
)

// profileCaddy records a CPU profile of Caddy through its admin endpoint
// while the chosen load runs: pick-up rounds into fresh records, or 2 MB
// drop-offs from the configured senders. Everything in the profile is the
// gateway's path: the pfr handler, DOPU and the store, in one process.
func profileCaddy(ctx context.Context, g *gateway, adminPort int, src, doc *syntheaBundle, o options, logw io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	seconds := max(int(o.profileTime.Seconds()), 1)
	fmt.Fprintf(logw, "profiling Caddy for %ds under %s load …\n", seconds, o.profileLoad)
	done := make(chan error, 1)
	go func() { done <- pfrproc.CPUProfile(ctx, adminPort, seconds, o.cpuProfile) }()

	maker := newBodyMaker(fillEntries(src, largeBundle), "profile")
	seen := &receipts{}
	senders := slices.Max(o.concurrency)
	for i := 1; ; i++ {
		select {
		case err := <-done:
			return err
		default:
		}
		var err error
		if o.profileLoad == "pickup" {
			_, err = pickupOnce(ctx, g, doc, fmt.Sprintf("profile-%d", i))
		} else if r := measureIntake(ctx, g, seen, intakePlan{slug: "intake", maker: maker, first: i * senders,
			count: senders, concurrency: senders}); r.failed > 0 {
			err = r.firstFail
		}
		if err != nil {
			cancel()
			<-done
			return fmt.Errorf("loading Caddy while profiling: %w", err)
		}
	}
}
