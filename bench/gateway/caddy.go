package main

import (
	"context"
	"debug/buildinfo"
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

// slug is the record every gateway request goes to.
const slug = "bench"

// freePorts reserves n distinct loopback ports. They are released before
// Caddy binds them: another process could take one in between, which makes
// Caddy fail to start loudly, never measure the wrong server.
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

// revision returns the VCS revision binary was built from ("+dirty" when
// the working tree had changes), as stamped in the binary, or else, when
// the bench built it, the git HEAD it was built at; or "unknown revision".
func revision(ctx context.Context, binary string, builtHere bool) string {
	unknown := "unknown revision"
	if builtHere {
		if head, err := exec.CommandContext(ctx, "git", "rev-parse", "--short=12", "HEAD").Output(); err == nil {
			unknown = "git HEAD " + strings.TrimSpace(string(head))
		}
	}
	info, err := buildinfo.ReadFile(binary)
	if err != nil {
		return unknown
	}
	rev, dirty := "", false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" { // built with -buildvcs=false
		return unknown
	}
	rev = rev[:min(len(rev), 12)]
	if dirty {
		rev += "+dirty"
	}
	return rev
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

// stop interrupts Caddy and waits for it to exit (killing it after a grace
// period).
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

// waitReady polls the store's metadata until Caddy answers, Caddy exits, or
// the timeout passes.
func (p *caddyProcess) waitReady(ctx context.Context, storePort int, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	url := fmt.Sprintf("http://127.0.0.1:%d/fhir/metadata", storePort)
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
		res, err := client.Get(url)
		if err != nil {
			continue
		}
		_ = res.Body.Close()
		if res.StatusCode == http.StatusOK {
			return nil
		}
	}
	return errors.New("caddy did not answer within " + timeout.String() + ":\n" + p.logTail())
}
