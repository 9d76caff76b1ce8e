package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pfrgateway/caddy-pfr/audit"
)

// With -callgrind, Caddy runs under valgrind's callgrind with its
// instrumentation off and its garbage collector off (GOGC=off); after the
// warm-up, windows of -callgrind-n requests, one client at a time, are
// counted with it on: (b), (c), (b), (c) per kind, each window dumped to a
// file of its own. The instructions the whole Caddy process executes per
// request (the store, both proxies, the gateway, its access log writer) do
// not depend on the machine's load, as the timings do, and without the
// collector's cycles, which fall in one window or another, two windows of
// one path agree; what the collector costs follows what was allocated,
// given beside them (the runtime's TotalAlloc, from the admin endpoint's
// /debug/vars). Each window starts after a full collection (the admin
// endpoint's /debug/pprof/heap?gc=1, uncounted), so the heap stays small,
// and ends flushWait after its last answer, so that it pays for its own
// access log events (written once a second). Before the first window the
// record's access log is filled past its limit (-callgrind-fill reads,
// uncounted; defaultLogFill),
// as any record's is after some use: from then on every event written
// makes the oldest one go, as in the timed runs. The dumps say where the
// instructions went (callgrind_annotate).

// defaultLogFill is how many uncounted reads fill the record's access log
// past its default limit (audit.DefaultMaxPerRecord) before the windows.
const defaultLogFill = audit.DefaultMaxPerRecord + 1000

// flushWait is how long a window stays counted after its last answer:
// the access log's writer flushes once a second.
const flushWait = 3 * time.Second

// callgrindWrapper writes a script that runs binary's `run` under
// callgrind (the other commands as they are) and returns its path. Go's
// asynchronous preemption signals are off: callgrind 3.19 stops at them.
// So is the garbage collector (see above).
func callgrindWrapper(dir, binary string) (string, error) {
	binary, err := filepath.Abs(binary)
	if err != nil {
		return "", fmt.Errorf("the pfr binary: %w", err)
	}
	script := fmt.Sprintf(`#!/bin/sh
if [ "$1" = run ]; then
	GOGC=off GODEBUG=asyncpreemptoff=1 exec valgrind --tool=callgrind --instr-atstart=no --separate-threads=no --callgrind-out-file=%s/callgrind.out.%%p %s "$@"
fi
exec %s "$@"
`, dir, binary, binary)
	path := filepath.Join(dir, "pfr-callgrind.sh")
	if err := os.WriteFile(path, []byte(script), 0o700); err != nil {
		return "", fmt.Errorf("writing the callgrind wrapper: %w", err)
	}
	return path, nil
}

// countInstructions counts the windows and prints, per window, the
// instructions per request.
func countInstructions(ctx context.Context, pid, adminPort int, dir string, targets []*target, fx *fixture, n, fill int, out, logw io.Writer) error {
	control := func(args ...string) error {
		cmd := exec.CommandContext(ctx, "callgrind_control", append(args, strconv.Itoa(pid))...)
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("callgrind_control %s: %w: %s", strings.Join(args, " "), err, b)
		}
		return nil
	}
	fmt.Fprintf(out, "\ninstructions Caddy executed per request (callgrind, garbage collector off, %d requests a window, one client), and bytes allocated:\n\n", n)
	fmt.Fprintf(out, "%8s  %-22s %14s %12s  %s\n", "kind", "target", "instr/req", "bytes/req", "dump")
	if fill > 0 {
		fmt.Fprintf(logw, "filling the record's access log (%d reads, uncounted) …\n", fill)
		if _, _, err := batch(ctx, targets[2], readKind, fx, fill, 4, (*target).checkFast); err != nil {
			return err
		}
	}
	// (b) and (c) take turns, twice; (f), the gateway with the store in
	// its process, follows each (c) when it is measured.
	order := []int{1, 2, 1, 2}
	for i, t := range targets {
		if t.label[1] == 'f' {
			order = []int{1, 2, i, 1, 2, i}
		}
	}
	window := 0
	for _, k := range kinds {
		for _, ti := range order {
			t := targets[ti]
			fmt.Fprintf(logw, "counting %s on %s …\n", k, t.label)
			if err := collectGarbage(ctx, adminPort); err != nil {
				return err
			}
			allocBefore, err := totalAlloc(ctx, adminPort)
			if err != nil {
				return err
			}
			if err := control("-i", "on"); err != nil {
				return err
			}
			_, _, err = batch(ctx, t, k, fx, n, 1, (*target).checkFast)
			if err == nil {
				select {
				case <-time.After(flushWait):
				case <-ctx.Done():
					err = ctx.Err()
				}
			}
			if err2 := control("-i", "off"); err == nil {
				err = err2
			}
			if err != nil {
				return err
			}
			if err := control("-d", fmt.Sprintf("%s-%c", k, t.label[1])); err != nil {
				return err
			}
			allocAfter, err := totalAlloc(ctx, adminPort)
			if err != nil {
				return err
			}
			window++
			dump := filepath.Join(dir, fmt.Sprintf("callgrind.out.%d.%d", pid, window))
			total, err := dumpTotal(dump)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "%8s  %-22s %14.0f %12.0f  %s\n", k, t.label, float64(total)/float64(n),
				float64(allocAfter-allocBefore)/float64(n), dump)
		}
	}
	return nil
}

// collectGarbage has Caddy run a full garbage collection.
func collectGarbage(ctx context.Context, adminPort int) error {
	_, err := adminGet(ctx, adminPort, "/debug/pprof/heap?gc=1")
	return err
}

// totalAlloc returns how many bytes Caddy has allocated since it started.
func totalAlloc(ctx context.Context, adminPort int) (uint64, error) {
	body, err := adminGet(ctx, adminPort, "/debug/vars")
	if err != nil {
		return 0, err
	}
	var vars struct {
		MemStats struct{ TotalAlloc uint64 } `json:"memstats"`
	}
	if err := json.Unmarshal(body, &vars); err != nil || vars.MemStats.TotalAlloc == 0 {
		return 0, fmt.Errorf("reading TotalAlloc from /debug/vars: %v", err)
	}
	return vars.MemStats.TotalAlloc, nil
}

// adminGet reads path from Caddy's admin endpoint.
func adminGet(ctx context.Context, adminPort int, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", adminPort, path), nil)
	if err != nil {
		return nil, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("admin %s: %w", path, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, fmt.Errorf("admin %s: %w", path, err)
	}
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("admin %s: status %d", path, res.StatusCode)
	}
	return body, nil
}

// dumpTotal reads the instruction count of a callgrind dump.
func dumpTotal(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("reading a callgrind dump: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "totals: "); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("reading %s: %w", path, err)
	}
	return 0, fmt.Errorf("%s has no totals line", path)
}
