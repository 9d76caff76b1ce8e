package pfrproc

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// readyTimeout bounds how long a bench waits for pfr to answer.
const readyTimeout = time.Minute

// Bench is one run of pfr for a command-line bench: a fresh temporary work
// directory, the binary, the free ports its Caddyfile binds, and, once
// started, the process.
type Bench struct {
	WorkDir string // everything pfr writes; removed by Close
	Binary  string // the pfr binary: given, or built into WorkDir
	Ports   []int  // loopback ports held for pfr's Caddyfile (testkit.Port)

	held  []*testkit.Port
	built bool     // Binary was built from the working directory's module
	proc  *Process // nil until Start
}

// NewBench creates a temporary work directory named after name, takes
// binary or, when it is empty, builds cmd/pfr into the work directory
// (saying so on progress), and holds ports loopback ports until Close
// (pfr binds them with SO_REUSEPORT, as Caddy does; nothing else is given
// them meanwhile). Close undoes it.
func NewBench(ctx context.Context, name, binary string, ports int, progress io.Writer) (*Bench, error) {
	workDir, err := os.MkdirTemp("", "pfr-bench-"+name+"-")
	if err != nil {
		return nil, fmt.Errorf("creating the work directory: %w", err)
	}
	b := &Bench{WorkDir: workDir, Binary: binary}
	if binary == "" {
		fmt.Fprintln(progress, "building cmd/pfr …")
		if b.Binary, err = Build(ctx, workDir); err != nil {
			b.Close()
			return nil, fmt.Errorf("%w; or pass -pfr", err)
		}
		b.built = true
	}
	if b.held, err = testkit.ReservePorts(ports); err != nil {
		b.Close()
		return nil, err
	}
	for _, p := range b.held {
		b.Ports = append(b.Ports, p.Number)
	}
	return b, nil
}

// Start runs pfr on caddyfile and waits until readyURL answers with
// status readyStatus (any status when it is 0). Cancelling ctx interrupts
// pfr.
func (b *Bench) Start(ctx context.Context, caddyfile, readyURL string, readyStatus int) error {
	proc, err := Start(ctx, b.Binary, b.WorkDir, caddyfile)
	if err != nil {
		return err
	}
	b.proc = proc
	if err := proc.WaitReady(ctx, readyURL, readyStatus, readyTimeout); err != nil {
		return fmt.Errorf("%w:\n%s", err, b.LogTail())
	}
	return nil
}

// LogTail returns the end of pfr's log, for error messages ("" before
// Start).
func (b *Bench) LogTail() string {
	if b.proc == nil {
		return ""
	}
	return b.proc.LogTail(15)
}

// Pid is pfr's process id (0 before Start), e.g. to read its memory.
func (b *Bench) Pid() int {
	if b.proc == nil {
		return 0
	}
	return b.proc.Pid()
}

// Revision names the code the binary was built from, for the report.
func (b *Bench) Revision(ctx context.Context) string {
	return Revision(ctx, b.Binary, b.built)
}

// Stop stops pfr, keeping the ports and the work directory for another
// Start.
func (b *Bench) Stop() {
	if b.proc != nil {
		b.proc.Stop()
		b.proc = nil
	}
}

// Close stops pfr if it runs and removes the work directory.
func (b *Bench) Close() {
	if b.proc != nil {
		b.proc.Stop()
	}
	for _, p := range b.held {
		_ = p.Release()
	}
	_ = os.RemoveAll(b.WorkDir)
}

// Main runs a bench command named name: run gets a context that Ctrl-C or
// SIGTERM cancel, which interrupts pfr. It exits 130 when interrupted, 1
// with the error when run fails, and returns otherwise.
func Main(name string, run func(ctx context.Context) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx)
	interrupted := ctx.Err() != nil
	stop()
	if interrupted {
		fmt.Fprintln(os.Stderr, name+": interrupted; Caddy stopped")
		os.Exit(130)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}
