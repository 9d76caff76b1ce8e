package main

import (
	"bytes"
	"context"
	"regexp"
	"testing"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// TestBenchSmoke runs the whole harness with tiny counts, without HAPI:
// pfr built and started twice, records registered before start, records
// created and read through the gateway, keep-alive clients connected, both
// tables printed. It asserts what was measured, never how fast.
func TestBenchSmoke(t *testing.T) {
	testkit.Needs(t, "the pfr binary run as a separate process")
	ctx, cancel := context.WithCancel(testkit.WaitContext(t))
	defer cancel()
	var out, log bytes.Buffer
	o := options{n: 4, nHAPI: 0, records: []int{1, 30}, clients: 12, reads: 5, hapiJar: "-"}
	if err := run(ctx, o, &out, &log); err != nil {
		t.Fatalf("run: %v\nlog:\n%s", err, log.String())
	}
	text := out.String()
	t.Log("\n" + text)
	if !regexp.MustCompile(`(?m)^\s+pfr_store \(embedded\)\s+4\s+[\d.]+ms\s+[\d.]+ms\s+[\d.]+ms$`).MatchString(text) {
		t.Error("no provisioning row of 4 records on the embedded store")
	}
	for _, row := range []string{`1\s+0`, `1\s+12`, `30\s+0`} {
		if !regexp.MustCompile(`(?m)^\s+` + row + `\s+\d+ms\s+[\d.]+ MiB\s+[\d.]+ MiB\s+[\d.]+ms\s+[\d.]+ms$`).MatchString(text) {
			t.Errorf("no memory row %q", row)
		}
	}
}

// TestOptionsRefused: counts that cannot give a measurement are refused
// before anything starts.
func TestOptionsRefused(t *testing.T) {
	for _, o := range []options{{n: 0, records: []int{1}, reads: 1}, {n: 1, reads: 1}, {n: 1, records: []int{1}, reads: 0}} {
		if err := run(context.Background(), o, &bytes.Buffer{}, &bytes.Buffer{}); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
}
