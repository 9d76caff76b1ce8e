package crashtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// pfrBinary is the cmd/pfr binary every test runs, built once by TestMain.
var pfrBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pfr-crashtest-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "crashtest:", err)
		os.Exit(1)
	}
	pfrBinary = filepath.Join(dir, "pfr")
	// The import path builds from anywhere inside the module.
	build := exec.Command("go", "build", "-o", pfrBinary, "github.com/pfrgateway/caddy-pfr/cmd/pfr")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "crashtest: building cmd/pfr:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
