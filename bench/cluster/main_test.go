package main

import (
	"bytes"
	"context"
	"regexp"
	"testing"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// TestBenchSmoke runs the harness with a handful of requests: PostgreSQL,
// the five processes, records provisioned on both kinds of state, reads
// through one node and through the balancer, every answer checked, the
// ratios printed. It asserts what was measured, never how fast.
func TestBenchSmoke(t *testing.T) {
	testkit.Needs(t, "PostgreSQL and the pfr binary run as five processes")
	ctx, cancel := context.WithCancel(testkit.WaitContext(t))
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, options{reads: 20, clients: 2, records: 3, round: 10}, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	text := out.String()
	t.Log("\n" + text)
	for _, want := range []string{
		`reads through one node:\s+\d+/s \(20\)`, `reads through two nodes \(lb\):\s+\d+/s \(20\)`, `ratio two/one:\s+\d+\.\d\d`,
		`provisioning, PostgreSQL:\s+[\d.]+ ms median \(3\)`, `provisioning, bbolt:\s+[\d.]+ ms median \(3\)`, `ratio PostgreSQL/bbolt:\s+\d+\.\d\d`,
	} {
		if !regexp.MustCompile(want).MatchString(text) {
			t.Errorf("output lacks %s", want)
		}
	}
}
