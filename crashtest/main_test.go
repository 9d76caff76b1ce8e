package crashtest

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/pfrgateway/caddy-pfr/internal/pfrproc"
	"github.com/pfrgateway/caddy-pfr/internal/pgtest"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// The cmd/pfr binary every test runs, built once, by the first test that
// needs it, into binDir.
var (
	binDir   string
	binOnce  sync.Once
	binPath  string
	binError error
)

// pfrBinary returns the pfr binary, building it on first use. Under -short
// the test skips: the crash tests run the binary as a separate process.
func pfrBinary(t *testing.T) string {
	t.Helper()
	testkit.Needs(t, "the pfr binary run as a separate process (crash and fault tests)")
	binOnce.Do(func() { binPath, binError = pfrproc.Build(context.Background(), binDir) })
	if binError != nil {
		t.Fatalf("building cmd/pfr: %v", binError)
	}
	return binPath
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pfr-crashtest-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "crashtest:", err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	pgtest.Stop()
	os.RemoveAll(dir)
	os.Exit(code)
}
