package pfrproc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// startMarker opens each run's output in the log, so that Log can tell the
// current run from earlier ones on the same work directory.
const startMarker = "=== pfr run\n"

// Grace periods: how long Stop waits after the interrupt before it kills,
// and how long Kill waits for the process to be gone.
const (
	interruptGrace = 10 * time.Second
	killWait       = 30 * time.Second
)

// Process is a running `pfr run`.
type Process struct {
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{} // closed once the process has exited
	waitErr error         // how it exited; read only after exited is closed
}

// Start writes caddyfile to workDir/Caddyfile and runs `binary run` on it.
// Caddy's home, data and config directories are inside workDir, so nothing
// outside it is touched. Its output is appended to workDir/caddy.log, so
// a process started again on the same work directory keeps the earlier
// runs' output. Cancelling ctx interrupts the process (and kills it if it
// lingers).
func Start(ctx context.Context, binary, workDir, caddyfile string) (*Process, error) {
	cfgPath := filepath.Join(workDir, "Caddyfile")
	if err := os.WriteFile(cfgPath, []byte(caddyfile), 0o600); err != nil {
		return nil, fmt.Errorf("writing the Caddyfile: %w", err)
	}
	logPath := filepath.Join(workDir, "caddy.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening pfr's log: %w", err)
	}
	if _, err := logFile.WriteString(startMarker); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("writing pfr's log: %w", err)
	}
	home := filepath.Join(workDir, "home")
	cmd := exec.CommandContext(ctx, binary, "run", "--config", cfgPath, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_DATA_HOME="+home+"/data", "XDG_CONFIG_HOME="+home+"/config")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = interruptGrace
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", binary, err)
	}
	p := &Process{cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		_ = logFile.Close()
		close(p.exited)
	}()
	return p, nil
}

// Stop interrupts the process, as Ctrl-C would, and waits for it to exit,
// killing it if it still runs after a grace period.
func (p *Process) Stop() {
	_ = p.cmd.Process.Signal(os.Interrupt) // an error means it has exited already
	select {
	case <-p.exited:
	case <-time.After(interruptGrace):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// Kill sends SIGKILL and waits (bounded) until the process is gone: no
// cleanup, no flush, a power cut as far as the process can tell. Killing
// a process that has exited already does nothing.
func (p *Process) Kill() error {
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("SIGKILL: %w", err)
	}
	select {
	case <-p.exited:
		return nil
	case <-time.After(killWait):
		return fmt.Errorf("pfr did not exit within %s of SIGKILL", killWait)
	}
}

// Signal sends sig to the process, e.g. SIGSTOP and SIGCONT to freeze and
// thaw it in fault tests.
func (p *Process) Signal(sig os.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %v: %w", sig, err)
	}
	return nil
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// WaitReady polls url until it answers with status want (any status when
// want is 0), and fails when the process exits, ctx ends or timeout
// passes first. Every name in url is dialled on 127.0.0.1.
func (p *Process) WaitReady(ctx context.Context, url string, want int, timeout time.Duration) error {
	client := LocalClient(time.Second, LocalTransport())
	defer client.CloseIdleConnections()
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); {
		select {
		case <-p.exited:
			return fmt.Errorf("pfr exited before it was ready (%v)", p.waitErr)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("readiness request: %w", err)
		}
		res, err := client.Do(req)
		if err != nil {
			continue
		}
		_ = res.Body.Close()
		if want == 0 || res.StatusCode == want {
			return nil
		}
	}
	return fmt.Errorf("pfr did not answer %s within %s", url, timeout)
}

// LogTail returns the last n lines of the work directory's log (earlier
// runs' included), for error messages.
func (p *Process) LogTail(n int) string {
	raw, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

// Log returns the output since the latest start on the work directory:
// this run's, as long as no later process was started there.
func (p *Process) Log() (string, error) {
	raw, err := os.ReadFile(p.logPath)
	if err != nil {
		return "", fmt.Errorf("reading pfr's log: %w", err)
	}
	text := string(raw)
	if i := strings.LastIndex(text, startMarker); i >= 0 {
		text = text[i+len(startMarker):]
	}
	return text, nil
}

// VmRSS returns the resident set size of process pid in bytes (VmRSS in
// /proc/pid/status), or 0 when it cannot be read.
func VmRSS(pid int) int64 { return ProcStatus(pid, "VmRSS") }

// ProcStatus returns a size field of /proc/pid/status in bytes ("VmRSS",
// "RssAnon": the resident memory that is not a mapped file, so not the
// embedded store's database pages), or 0 when it cannot be read.
func ProcStatus(pid int, field string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// CPUTime returns the CPU time process pid has used so far, summed over
// its threads from /proc/pid/task/*/schedstat (nanoseconds, unlike the
// clock ticks of /proc/pid/stat), or 0 when it cannot be read. The
// difference over a stretch of load is what the process spent on it,
// whatever else the machine runs meanwhile.
func CPUTime(pid int) time.Duration {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0
	}
	var total time.Duration
	for _, t := range tasks {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue // the thread ended meanwhile
		}
		onCPU, _, _ := strings.Cut(string(raw), " ")
		ns, _ := strconv.ParseInt(onCPU, 10, 64)
		total += time.Duration(ns)
	}
	return total
}
