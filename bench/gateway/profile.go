package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
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
		done <- fetchProfile(ctx, adminPort, seconds, path)
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

// fetchProfile asks Caddy's admin endpoint for a CPU profile of seconds and
// writes it to path.
func fetchProfile(ctx context.Context, adminPort, seconds int, path string) error {
	url := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", adminPort, seconds)
	ctx, cancel := context.WithTimeout(ctx, time.Duration(seconds+30)*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("profile request: %w", err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("fetching the CPU profile: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(io.LimitReader(res.Body, 500))
		return fmt.Errorf("fetching the CPU profile: status %d: %s", res.StatusCode, raw)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("creating %s: %w", path, err)
	}
	if _, err := io.Copy(f, res.Body); err != nil {
		_ = f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
