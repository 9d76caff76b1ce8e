package hapitest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// TestProgress: a start moves on when the log grows, not while the
// process sleeps and writes nothing.
func TestProgress(t *testing.T) {
	sleeper := exec.Command("sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() })
	log := filepath.Join(t.TempDir(), "hapi.log")
	if err := os.WriteFile(log, []byte("starting\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := progress{log: log, pid: sleeper.Process.Pid}
	t0 := time.Unix(1000, 0)
	if !p.moved(t0) {
		t.Fatal("the first look is progress")
	}
	if p.moved(t0.Add(time.Minute)) || p.last != t0 {
		t.Errorf("a sleeping process with a still log moved (last %v)", p.last)
	}
	f, err := os.OpenFile(log, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString("Started Application\n")
	f.Close()
	if t1 := t0.Add(2 * time.Minute); !p.moved(t1) || p.last != t1 {
		t.Errorf("a growing log is progress (last %v)", p.last)
	}
}

// TestCPUTime reads this process's CPU time from /proc.
func TestCPUTime(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc here: progress is the log alone")
	}
	// Busy until the kernel has counted a clock tick of CPU (10 ms).
	cpu, ok := cpuTime(os.Getpid())
	wait := testkit.WaitContext(t)
	for x := 0; ok && cpu == 0 && wait.Err() == nil; x++ {
		if x%1_000_000 == 0 {
			cpu, ok = cpuTime(os.Getpid())
		}
	}
	if !ok || cpu <= 0 {
		t.Fatalf("cpuTime = %v, %v", cpu, ok)
	}
	if _, ok := cpuTime(1 << 30); ok {
		t.Error("a pid that does not exist has a CPU time")
	}
}
