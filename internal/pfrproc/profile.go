package pfrproc

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// CPUProfile asks Caddy's admin endpoint on 127.0.0.1:adminPort for a CPU
// profile of seconds (its /debug/pprof/profile) and writes it to path. The
// file is created only once the admin endpoint has answered 200.
func CPUProfile(ctx context.Context, adminPort, seconds int, path string) error {
	return Profile(ctx, adminPort, "profile", seconds, path)
}

// AllocProfile is CPUProfile for allocations: the difference of
// /debug/pprof/allocs over seconds, so it shows what was allocated while
// the load ran, not since Caddy started (go tool pprof -sample_index
// alloc_space or alloc_objects).
func AllocProfile(ctx context.Context, adminPort, seconds int, path string) error {
	return Profile(ctx, adminPort, "allocs", seconds, path)
}

// Profile fetches /debug/pprof/{kind}?seconds=N (CPU, or a delta profile
// of a sampled kind such as allocs) from Caddy's admin endpoint and writes
// it to path once the endpoint has answered 200.
func Profile(ctx context.Context, adminPort int, kind string, seconds int, path string) error {
	url := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/%s?seconds=%d", adminPort, kind, seconds)
	ctx, cancel := context.WithTimeout(ctx, time.Duration(seconds+30)*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("profile request: %w", err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("fetching the %s profile: %w", kind, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(io.LimitReader(res.Body, 500))
		return fmt.Errorf("fetching the %s profile: status %d: %s", kind, res.StatusCode, raw)
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
