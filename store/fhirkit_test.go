package store

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// TestFhirKitClient runs test/fhirkit (fhir-kit-client, a third-party FHIR
// client, under node:test) against the store served on 127.0.0.1. It
// skips under -short; without node or the suite's node_modules (npm ci in
// test/fhirkit) it fails.
func TestFhirKitClient(t *testing.T) {
	testkit.Needs(t, "Node and test/fhirkit's npm packages")
	dir, err := filepath.Abs("../test/fhirkit")
	if err != nil {
		t.Fatal(err)
	}
	node, nodeErr := exec.LookPath("node")
	_, modErr := os.Stat(filepath.Join(dir, "node_modules", "fhir-kit-client"))
	if nodeErr != nil || modErr != nil {
		t.Fatalf("fhir-kit suite cannot run (run npm ci in test/fhirkit; scripts/test.sh does): node %v, node_modules %v", nodeErr, modErr)
	}
	s := newTestServer(t)
	s.createPartition(1)

	ctx, cancel := context.WithCancel(testkit.WaitContext(t))
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "store.test.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PFR_STORE_URL="+s.srv.URL+"/fhir", "PFR_STORE_PARTITION=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("fhir-kit-client suite failed: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}
