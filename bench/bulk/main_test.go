package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// TestBenchSmoke runs the whole harness on a small record: cmd/pfr built,
// Caddy started, the record loaded, each phase reading, exporting and
// importing every resource (run checks the counts), the table printed.
// It asserts what was measured, never how fast.
func TestBenchSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs cmd/pfr")
	}
	ctx, cancel := context.WithCancel(testkit.WaitContext(t))
	defer cancel()
	var out, log bytes.Buffer
	if err := run(ctx, options{n: 30, rounds: 1}, &out, &log); err != nil {
		t.Fatalf("run: %v\nlog:\n%s", err, log.String())
	}
	for _, want := range []string{"a record of 31 resources", "| pages |", "| export |", "| import |"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the report lacks %q:\n%s", want, out.String())
		}
	}
}
