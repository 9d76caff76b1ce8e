package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// With -callgrind, Caddy runs under valgrind's callgrind with its
// instrumentation off; after the warm-up, windows of -callgrind-n
// requests, one client at a time, are counted with it on: (b), (c), (b),
// (c) per kind, each window dumped to a file of its own. The instructions
// the whole Caddy process executes per request (the store, both proxies,
// the gateway, its access log writer, the garbage collector) do not depend
// on the machine's load, as the timings do; the dumps say where they go
// (callgrind_annotate). Two windows per target show what the garbage
// collector's cycles, which fall in one window or another, add to a count.

// callgrindWrapper writes a script that runs binary's `run` under
// callgrind (the other commands as they are) and returns its path. Go's
// asynchronous preemption signals are off: callgrind 3.19 stops at them.
func callgrindWrapper(dir, binary string) (string, error) {
	binary, err := filepath.Abs(binary)
	if err != nil {
		return "", fmt.Errorf("the pfr binary: %w", err)
	}
	script := fmt.Sprintf(`#!/bin/sh
if [ "$1" = run ]; then
	GODEBUG=asyncpreemptoff=1 exec valgrind --tool=callgrind --instr-atstart=no --separate-threads=no --callgrind-out-file=%s/callgrind.out.%%p %s "$@"
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
func countInstructions(ctx context.Context, pid int, dir string, targets []*target, fx *fixture, n int, out, logw io.Writer) error {
	control := func(args ...string) error {
		cmd := exec.CommandContext(ctx, "callgrind_control", append(args, strconv.Itoa(pid))...)
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("callgrind_control %s: %w: %s", strings.Join(args, " "), err, b)
		}
		return nil
	}
	fmt.Fprintf(out, "\ninstructions Caddy executed per request (callgrind, %d requests a window, one client):\n\n", n)
	fmt.Fprintf(out, "%8s  %-22s %14s  %s\n", "kind", "target", "instr/req", "dump")
	window := 0
	for _, k := range kinds {
		for _, ti := range []int{1, 2, 1, 2} {
			t := targets[ti]
			fmt.Fprintf(logw, "counting %s on %s …\n", k, t.label)
			if err := control("-i", "on"); err != nil {
				return err
			}
			_, _, err := batch(ctx, t, k, fx, n, 1, (*target).checkFast)
			if err2 := control("-i", "off"); err == nil {
				err = err2
			}
			if err != nil {
				return err
			}
			if err := control("-d", fmt.Sprintf("%s-%c", k, t.label[1])); err != nil {
				return err
			}
			window++
			dump := filepath.Join(dir, fmt.Sprintf("callgrind.out.%d.%d", pid, window))
			total, err := dumpTotal(dump)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "%8s  %-22s %14.0f  %s\n", k, t.label, float64(total)/float64(n), dump)
		}
	}
	return nil
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
