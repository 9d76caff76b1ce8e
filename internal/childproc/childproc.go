// Package childproc runs the test servers under internal/ (BIND, Pebble)
// as child processes: their output collected while they run, SIGKILL when
// the process that started them dies (Linux parent-death signal), so a
// crashed test or bench never leaves one running.
package childproc

import (
	"bytes"
	"fmt"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Process is a started child.
type Process struct {
	cmd    *exec.Cmd
	output buffer
	done   chan struct{}
	err    error // how it exited; read after done is closed
}

// Start starts cmd with its standard output and error collected and the
// parent-death signal set (added to any cmd.SysProcAttr the caller set).
func Start(cmd *exec.Cmd) (*Process, error) {
	p := &Process{cmd: cmd, done: make(chan struct{})}
	// Keep what the caller set (e.g. Credential to run as another user);
	// Go sets the parent-death signal after changing credentials, so it
	// holds for a child that runs as someone else too.
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	cmd.Stdout, cmd.Stderr = &p.output, &p.output
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", cmd.Path, err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	return p, nil
}

// Exited is closed once the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.done }

// Err is how the process exited; valid once Exited is closed.
func (p *Process) Err() error { return p.err }

// Output is everything the process printed so far.
func (p *Process) Output() string { return p.output.String() }

// Stop kills the process (once; later calls return at once) and waits
// (bounded) until it is gone.
func (p *Process) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
}

// buffer is a bytes.Buffer safe for the child's writes and the caller's
// reads at once.
type buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
