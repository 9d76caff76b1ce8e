package store

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestFhirKitClient runs test/fhirkit (fhir-kit-client, a third-party FHIR
// client, under node:test) against the store served on 127.0.0.1. It skips
// when node or the suite's node_modules (npm ci in test/fhirkit) are absent,
// unless PFR_REQUIRE_FHIRKIT=1 makes that a failure (CI).
func TestFhirKitClient(t *testing.T) {
	dir, err := filepath.Abs("../test/fhirkit")
	if err != nil {
		t.Fatal(err)
	}
	node, nodeErr := exec.LookPath("node")
	_, modErr := os.Stat(filepath.Join(dir, "node_modules", "fhir-kit-client"))
	if nodeErr != nil || modErr != nil {
		if os.Getenv("PFR_REQUIRE_FHIRKIT") == "1" {
			t.Fatalf("fhir-kit suite cannot run: node %v, node_modules %v", nodeErr, modErr)
		}
		t.Skip("node or test/fhirkit/node_modules missing (run npm ci in test/fhirkit)")
	}
	s := newTestServer(t)
	s.createPartition(1)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
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
