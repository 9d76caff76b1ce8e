package childproc

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

func TestOutputAndStop(t *testing.T) {
	p, err := Start(exec.Command("sh", "-c", "echo ready; echo oops >&2; exec sleep 60"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	testkit.Wait(t, "the child's standard error", func() bool { return strings.Contains(p.Output(), "oops") })
	if out := p.Output(); !strings.Contains(out, "ready\n") || !strings.Contains(out, "oops\n") {
		t.Errorf("output %q lacks standard output or error", out)
	}
	select {
	case <-p.Exited():
		t.Fatal("exited before Stop")
	default:
	}
	p.Stop()
	select {
	case <-p.Exited():
	default:
		t.Fatal("still running after Stop")
	}
	if p.Err() == nil {
		t.Error("a killed process reports no error")
	}
	p.Stop() // a second Stop returns at once
}

func TestStartFails(t *testing.T) {
	if _, err := Start(exec.Command("/nonexistent/binary")); err == nil {
		t.Error("starting a missing binary succeeded")
	}
}

// helperEnv makes the test binary a parent that starts a child and waits.
const helperEnv = "CHILDPROC_TEST_PARENT"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		p, err := Start(exec.Command("sleep", "60"))
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println(p.cmd.Process.Pid)
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestChildDiesWithParent: when the process that started a child is
// killed (no cleanup runs), the child gets SIGKILL too.
func TestChildDiesWithParent(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	parent := exec.Command(self, "-test.run=^$")
	parent.Env = append(os.Environ(), helperEnv+"=1")
	stdout, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the child's pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("the parent said %q", line)
	}
	if !alive(pid) {
		t.Fatalf("child %d is not running", pid)
	}
	_ = parent.Process.Kill()
	_ = parent.Wait()
	t.Cleanup(func() {
		if alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	testkit.Wait(t, fmt.Sprintf("child %d to end with its killed parent", pid), func() bool { return !alive(pid) })
}

// alive reports whether pid runs (a zombie waiting for its reaper does not).
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || (s[i+2] != 'Z' && s[i+2] != 'X')
}
