package pfrproc

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// startFake starts the test binary as a fake pfr in mode, serving on a free
// port, and returns the process and the port.
func startFake(t *testing.T, dir, mode string) (*Process, int) {
	t.Helper()
	t.Setenv(fakeEnv, mode)
	port := testkit.Reserve(t).Number
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p, err := Start(context.Background(), self, dir, fmt.Sprintf("127.0.0.1:%d\n", port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Kill() })
	return p, port
}

func TestStartRunsInsideTheWorkDirAndStopInterrupts(t *testing.T) {
	dir := t.TempDir()
	p, port := startFake(t, dir, "serve")
	url := fmt.Sprintf("http://john.pfr.localhost:%d/pfr/v1/records", port)
	if err := p.WaitReady(context.Background(), url, http.StatusUnauthorized, time.Minute); err != nil {
		t.Fatalf("WaitReady: %v\n%s", err, p.LogTail(20))
	}
	p.Stop()
	log, err := p.Log()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"args: run --config " + filepath.Join(dir, "Caddyfile") + " --adapter caddyfile",
		"HOME=" + filepath.Join(dir, "home"),
		"request john.pfr.localhost:", // the record's name reached 127.0.0.1
		"interrupted",                 // Stop interrupted before killing
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if p.waitErr != nil {
		t.Errorf("an interrupted pfr exited with %v, want status 0", p.waitErr)
	}
}

func TestWaitReadyFailsWhenThePFRExits(t *testing.T) {
	p, port := startFake(t, t.TempDir(), "exit")
	err := p.WaitReady(context.Background(), fmt.Sprintf("http://127.0.0.1:%d/", port), 0, time.Hour)
	if err == nil || !strings.Contains(err.Error(), "exited before it was ready") {
		t.Fatalf("WaitReady on an exited pfr: %v", err)
	}
}

func TestWaitReadyWantsTheStatus(t *testing.T) {
	p, port := startFake(t, t.TempDir(), "serve")
	url := fmt.Sprintf("http://127.0.0.1:%d/fhir/metadata", port)
	if err := p.WaitReady(context.Background(), url, http.StatusOK, time.Second); err == nil {
		t.Fatal("WaitReady accepted a 401 when it wanted 200")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.WaitReady(ctx, url, http.StatusOK, time.Hour); err != context.Canceled {
		t.Fatalf("WaitReady with a cancelled context: %v", err)
	}
}

func TestKillAndStartAgainKeepsTheEarlierLog(t *testing.T) {
	dir := t.TempDir()
	first, port := startFake(t, dir, "serve")
	if err := first.WaitReady(context.Background(), fmt.Sprintf("http://127.0.0.1:%d/first", port), 0, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := first.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := first.Kill(); err != nil {
		t.Fatalf("killing an exited pfr: %v", err)
	}
	second, port := startFake(t, dir, "serve")
	if err := second.WaitReady(context.Background(), fmt.Sprintf("http://127.0.0.1:%d/second", port), 0, time.Minute); err != nil {
		t.Fatal(err)
	}
	log, err := second.Log()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(log, "/first") || !strings.Contains(log, "/second") {
		t.Errorf("the second run's log is not its own:\n%s", log)
	}
	tail := second.LogTail(100)
	if !strings.Contains(tail, "/first") || !strings.Contains(tail, "/second") {
		t.Errorf("the log tail lost a run:\n%s", tail)
	}
	if got := strings.Count(second.LogTail(2), "\n"); got != 1 {
		t.Errorf("LogTail(2) has %d newlines, want 1", got)
	}
}

func TestStartFailsOnAMissingBinary(t *testing.T) {
	if _, err := Start(context.Background(), filepath.Join(t.TempDir(), "no-pfr"), t.TempDir(), ""); err == nil {
		t.Fatal("Start ran a binary that does not exist")
	}
	if _, err := Start(context.Background(), "/bin/true", filepath.Join(t.TempDir(), "missing"), ""); err == nil {
		t.Fatal("Start wrote into a work directory that does not exist")
	}
}
