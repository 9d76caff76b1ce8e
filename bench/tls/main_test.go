package main

import (
	"bytes"
	"context"
	"regexp"
	"testing"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// TestBenchSmoke runs the whole harness with two visits per kind: BIND,
// Pebble and cmd/pfr started, the wildcard obtained through DNS-01, each
// on-demand visit served a certificate of its own after one order, each
// wildcard visit the wildcard after none (run fails otherwise), the table
// printed, everything stopped. It asserts what was measured, never how
// fast.
func TestBenchSmoke(t *testing.T) {
	testkit.Needs(t, "BIND, Pebble and the pfr binary run as a separate process")
	ctx, cancel := context.WithCancel(testkit.WaitContext(t))
	defer cancel()
	var out, log bytes.Buffer
	if err := run(ctx, options{visits: 2}, &out, &log); err != nil {
		t.Fatalf("run: %v\nlog:\n%s", err, log.String())
	}
	text := out.String()
	t.Log("\n" + text)
	for _, row := range []string{
		`(?m)^\s*on demand\s+2\s+2\s+[\d.]+ms\s+[\d.]+ms\s+[\d.]+ms\s*$`,
		`(?m)^\s*wildcard\s+2\s+0\s+[\d.]+ms\s+[\d.]+ms\s+[\d.]+ms\s*$`,
		`(?m)^ratio \(median\): on demand / wildcard = [\d.]+×$`,
	} {
		if !regexp.MustCompile(row).MatchString(text) {
			t.Errorf("the report lacks a line matching %s", row)
		}
	}
}

func TestOptions(t *testing.T) {
	if err := run(context.Background(), options{visits: 0}, &bytes.Buffer{}, &bytes.Buffer{}); err == nil {
		t.Error("-n 0 was accepted")
	}
}
