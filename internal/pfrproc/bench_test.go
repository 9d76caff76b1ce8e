package pfrproc

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
)

func TestBenchStartsTheGivenBinaryAndCloseCleansUp(t *testing.T) {
	t.Setenv(fakeEnv, "serve")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewBench(context.Background(), "pfrproc-test", self, 2, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if len(b.Ports) != 2 || b.Ports[0] == b.Ports[1] {
		t.Fatalf("ports %v, want two distinct", b.Ports)
	}
	if got := b.Revision(context.Background()); got != "unknown revision" {
		t.Errorf("Revision of a given, unstamped binary: %q", got)
	}
	if b.LogTail() != "" {
		t.Error("a log tail before Start")
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/", b.Ports[0])
	if err := b.Start(context.Background(), fmt.Sprintf("127.0.0.1:%d", b.Ports[0]), url, http.StatusUnauthorized); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.LogTail(), "request 127.0.0.1:") {
		t.Errorf("the log tail lacks the readiness request:\n%s", b.LogTail())
	}
	b.Close()
	if _, err := os.Stat(b.WorkDir); !os.IsNotExist(err) {
		t.Errorf("Close left the work directory (%v)", err)
	}
	if err := b.proc.WaitReady(context.Background(), url, 0, readyTimeout); err == nil {
		t.Error("pfr still answers after Close")
	}
}

func TestBenchStartFailsWithTheLogWhenPFRExits(t *testing.T) {
	t.Setenv(fakeEnv, "exit")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewBench(context.Background(), "pfrproc-test", self, 1, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	err = b.Start(context.Background(), "", fmt.Sprintf("http://127.0.0.1:%d/", b.Ports[0]), 0)
	if err == nil || !strings.Contains(err.Error(), "exited before it was ready") || !strings.Contains(err.Error(), "HOME=") {
		t.Fatalf("Start of a pfr that exits: %v", err)
	}
}
