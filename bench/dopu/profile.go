package main

import (
	"context"
	"debug/buildinfo"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"
)

// profileCaddy records a CPU profile of Caddy through its admin endpoint
// while the chosen load runs: pick-up rounds into fresh records, or 2 MB
// drop-offs from the configured senders. Everything in the profile is the
// gateway's path: the pfr handler, DOPU and the store, in one process.
func profileCaddy(ctx context.Context, g *gateway, adminPort int, src *syntheaBundle, o options, logw io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	seconds := max(int(o.profileTime.Seconds()), 1)
	fmt.Fprintf(logw, "profiling Caddy for %ds under %s load …\n", seconds, o.profileLoad)
	done := make(chan error, 1)
	go func() { done <- fetchProfile(ctx, adminPort, seconds, o.cpuProfile) }()

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
			_, err = pickupOnce(ctx, g, src, fmt.Sprintf("profile-%d", i))
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

// revision returns the VCS revision binary was built from ("+dirty" when
// the working tree had changes), as stamped in the binary, or else, when
// the bench built it, the git HEAD it was built at (with "+dirty" when the
// working tree differs from it); or "unknown revision".
func revision(ctx context.Context, binary string, builtHere bool) string {
	unknown := "unknown revision"
	if builtHere {
		if head, err := exec.CommandContext(ctx, "git", "rev-parse", "--short=12", "HEAD").Output(); err == nil {
			unknown = "git HEAD " + strings.TrimSpace(string(head))
			if changes, err := exec.CommandContext(ctx, "git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(changes) > 0 {
				unknown += "+dirty"
			}
		}
	}
	info, err := buildinfo.ReadFile(binary)
	if err != nil {
		return unknown
	}
	rev, dirty := "", false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" { // built with -buildvcs=false
		return unknown
	}
	rev = rev[:min(len(rev), 12)]
	if dirty {
		rev += "+dirty"
	}
	return rev
}
