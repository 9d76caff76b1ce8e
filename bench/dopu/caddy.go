package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// baseDomain is the gateway's base domain: under .localhost, as the dev
// issuer requires, and dialled as 127.0.0.1 by the bench client.
const baseDomain = "pfr.localhost"

// pendingBytes is the per-record quota of pending bytes: far above what a
// run drops off, so the quota never refuses a measured drop-off.
const pendingBytes = 64 << 30

// ports are the loopback ports of the bench Caddy.
type ports struct {
	gateway int // the gateway's plain-HTTP sites (apex and records)
	admin   int // Caddy's admin endpoint (pprof)
}

// freePorts reserves n distinct loopback ports chosen by the kernel (so
// never e2e's fixed 2999/9080/9443). They are released before Caddy binds
// them: another process taking one in between makes Caddy fail to start
// loudly, never measure the wrong server.
func freePorts(n int) ([]int, error) {
	out := make([]int, 0, n)
	var held []net.Listener
	defer func() {
		for _, l := range held {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("reserving a loopback port: %w", err)
		}
		held = append(held, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

// caddyfile renders the bench configuration: one gateway on plain HTTP in
// front of the embedded store, drop-off rate limits off and quotas out of
// reach, so the bench measures the work and not the limiter.
func caddyfile(p ports, workDir string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `{
	admin 127.0.0.1:%[1]d
	persist_config off
	default_bind 127.0.0.1
	auto_https off
	skip_install_trust
	storage file_system {
		root %[2]s/caddy
	}
}

http://%[3]s:%[4]d, http://*.%[3]s:%[4]d {
	pfr {
		base_domain %[3]s
		data_dir %[2]s/gateway
		dev_issuer
		dropoff {
			source_rate -1
			record_rate -1
			pending_per_record 100000
			pending_bytes_per_record %[5]d
		}
		upstream pfr_store {
			path %[2]s/store.db
		}
	}
}
`, p.admin, workDir, baseDomain, p.gateway, int64(pendingBytes))
	return b.String()
}

// buildPFR compiles cmd/pfr into dir and returns the binary's path.
func buildPFR(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "pfr")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/pfrgateway/caddy-pfr/cmd/pfr")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building cmd/pfr (run inside the caddy-pfr module, or pass -pfr): %w", err)
	}
	return bin, nil
}

// caddyProcess is a running `pfr run`.
type caddyProcess struct {
	cmd  *exec.Cmd
	log  string // Caddy's log file
	done chan error
}

// startCaddy runs binary with config in workDir. Caddy's home, data and
// config directories are inside workDir, so nothing outside it is touched.
// Cancelling ctx interrupts Caddy (and kills it if it lingers).
func startCaddy(ctx context.Context, binary, workDir, config string) (*caddyProcess, error) {
	cfgPath := filepath.Join(workDir, "Caddyfile")
	if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
		return nil, fmt.Errorf("writing the Caddyfile: %w", err)
	}
	logPath := filepath.Join(workDir, "caddy.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("creating Caddy's log: %w", err)
	}
	home := filepath.Join(workDir, "home")
	cmd := exec.CommandContext(ctx, binary, "run", "--config", cfgPath, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_DATA_HOME="+home+"/data", "XDG_CONFIG_HOME="+home+"/config")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", binary, err)
	}
	p := &caddyProcess{cmd: cmd, log: logPath, done: make(chan error, 1)}
	go func() {
		p.done <- cmd.Wait()
		_ = logFile.Close()
	}()
	return p, nil
}

// stop interrupts Caddy and waits for it to exit, killing it after a grace
// period.
func (p *caddyProcess) stop() {
	_ = p.cmd.Process.Signal(os.Interrupt) // an error means it has exited already
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// logTail returns the end of Caddy's log, for error messages.
func (p *caddyProcess) logTail() string {
	raw, err := os.ReadFile(p.log)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	return strings.Join(lines[max(len(lines)-15, 0):], "\n")
}

// waitReady polls the gateway's apex until it answers (any management API
// answer, even a 401, means the pfr handler is serving), Caddy exits, or
// the timeout passes.
func (p *caddyProcess) waitReady(ctx context.Context, port int, timeout time.Duration) error {
	client := newClient(1)
	url := fmt.Sprintf("http://%s:%d/pfr/v1/records", baseDomain, port)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case err := <-p.done:
			p.done <- err
			return fmt.Errorf("caddy exited before it was ready (%v):\n%s", err, p.logTail())
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
		if res.StatusCode == http.StatusUnauthorized {
			return nil
		}
	}
	return errors.New("caddy did not answer within " + timeout.String() + ":\n" + p.logTail())
}
