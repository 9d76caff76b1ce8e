package crashtest

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/pfrgateway/caddy-pfr/internal/pfrproc"
	"github.com/pfrgateway/caddy-pfr/internal/pgtest"
)

// pfrBinary is the cmd/pfr binary every test runs, built once by TestMain.
var pfrBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pfr-crashtest-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "crashtest:", err)
		os.Exit(1)
	}
	if pfrBinary, err = pfrproc.Build(context.Background(), dir); err != nil {
		fmt.Fprintln(os.Stderr, "crashtest:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	pgtest.Stop()
	os.RemoveAll(dir)
	os.Exit(code)
}
