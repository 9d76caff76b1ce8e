package crashtest

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
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/auth"
)

// baseDomain is the gateway's base domain: under .localhost, as the dev
// issuer requires; the client dials every name under it as 127.0.0.1.
const baseDomain = "pfr.localhost"

// caddyfile is the configuration of a crash-test gateway: plain HTTP on one
// loopback port, no admin endpoint, the embedded store, drop-off rate
// limits and quotas out of the way so that only crashes decide what
// happens. Arguments: %[1]d the port, %[2]s the work directory.
const caddyfile = `{
	admin off
	persist_config off
	auto_https off
	default_bind 127.0.0.1
	storage file_system {
		root %[2]s/caddy
	}
}

http://pfr.localhost:%[1]d, http://*.pfr.localhost:%[1]d {
	pfr {
		base_domain pfr.localhost
		data_dir %[2]s/data
		dev_issuer
		dropoff {
			source_rate -1
			record_rate -1
			pending_per_record 1000000
			pending_bytes_per_record 100000000000
		}
		upstream pfr_store {
			path %[2]s/data/store.db
		}
	}
}
`

// gatewayProcess is the real pfr binary serving one work directory. It can
// be killed and started again on the same data and port.
type gatewayProcess struct {
	t       *testing.T
	dir     string
	port    int
	dev     *auth.DevIssuer
	client  *http.Client
	cmd     *exec.Cmd
	exited  chan struct{}
	logPath string
	starts  int
}

// newGateway writes the Caddyfile into a fresh work directory, starts the
// gateway and waits until it answers. The process is killed when the test
// ends.
func newGateway(t *testing.T) *gatewayProcess {
	t.Helper()
	dir := t.TempDir()
	g := &gatewayProcess{t: t, dir: dir, port: freePort(t), client: newClient(), logPath: filepath.Join(dir, "caddy.log")}
	if err := os.WriteFile(filepath.Join(dir, "Caddyfile"), fmt.Appendf(nil, caddyfile, g.port, dir), 0o600); err != nil {
		t.Fatal(err)
	}
	dev, err := auth.LoadOrCreateDevIssuer(filepath.Join(dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	g.dev = dev
	t.Cleanup(g.stop)
	g.start()
	return g
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// start runs the binary on the work directory and waits (bounded) until it
// serves HTTP. Caddy's home, config and data directories stay inside it.
func (g *gatewayProcess) start() {
	g.t.Helper()
	g.starts++
	logFile, err := os.OpenFile(g.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		g.t.Fatal(err)
	}
	fmt.Fprintf(logFile, "=== start %d\n", g.starts)
	home := filepath.Join(g.dir, "home")
	cmd := exec.Command(pfrBinary, "run", "--config", filepath.Join(g.dir, "Caddyfile"), "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_DATA_HOME="+home+"/data", "XDG_CONFIG_HOME="+home+"/config")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		g.t.Fatalf("starting pfr: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(exited)
	}()
	g.cmd, g.exited = cmd, exited
	if err := g.waitReady(30 * time.Second); err != nil {
		g.t.Fatalf("pfr start %d: %v\n%s", g.starts, err, g.logTail(30))
	}
}

// waitReady polls the apex until the gateway answers anything.
func (g *gatewayProcess) waitReady(timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second, Transport: g.client.Transport}
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); {
		select {
		case <-g.exited:
			return errors.New("the process exited before it served")
		case <-time.After(50 * time.Millisecond):
		}
		res, err := client.Get(g.apex("/pfr/v1/records"))
		if err == nil {
			res.Body.Close()
			return nil
		}
	}
	return fmt.Errorf("no answer within %s", timeout)
}

// kill sends SIGKILL and waits for the process to be gone: no cleanup, no
// flush, exactly a power cut as far as the process is concerned.
func (g *gatewayProcess) kill() {
	g.t.Helper()
	if err := g.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		g.t.Fatalf("SIGKILL: %v", err)
	}
	select {
	case <-g.exited:
	case <-time.After(30 * time.Second):
		g.t.Fatal("pfr did not die within 30s of SIGKILL")
	}
	g.client.CloseIdleConnections()
}

// restart kills the process and starts it again on the same data.
func (g *gatewayProcess) restart() {
	g.t.Helper()
	g.kill()
	g.start()
}

// stop kills the process if it still runs (test cleanup).
func (g *gatewayProcess) stop() {
	if g.cmd == nil {
		return
	}
	select {
	case <-g.exited:
		return
	default:
	}
	_ = g.cmd.Process.Kill()
	select {
	case <-g.exited:
	case <-time.After(30 * time.Second):
	}
}

// logTail returns the last n lines of the gateway's log, for failures.
func (g *gatewayProcess) logTail(n int) string {
	raw, err := os.ReadFile(g.logPath)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

// logHasLine reports whether one line of the log since the last start
// contains every one of parts.
func (g *gatewayProcess) logHasLine(parts ...string) bool {
	raw, err := os.ReadFile(g.logPath)
	if err != nil {
		return false
	}
	text := string(raw)
	if i := strings.LastIndex(text, fmt.Sprintf("=== start %d\n", g.starts)); i >= 0 {
		text = text[i:]
	}
lines:
	for _, line := range strings.Split(text, "\n") {
		for _, p := range parts {
			if !strings.Contains(line, p) {
				continue lines
			}
		}
		return true
	}
	return false
}

// token mints a dev-issuer token for sub that may do everything on FHIR.
func (g *gatewayProcess) token(sub string) string {
	g.t.Helper()
	tok, err := g.dev.Mint(sub, "openid patient/*.cruds", nil, time.Hour)
	if err != nil {
		g.t.Fatal(err)
	}
	return tok
}

func (g *gatewayProcess) apex(path string) string {
	return fmt.Sprintf("http://%s:%d%s", baseDomain, g.port, path)
}

func (g *gatewayProcess) recordURL(slug, path string) string {
	return fmt.Sprintf("http://%s.%s:%d/fhir%s", slug, baseDomain, g.port, path)
}

// newClient dials every name to 127.0.0.1, as *.localhost resolves.
func newClient() *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				_, port, err := net.SplitHostPort(addr)
				if err != nil {
					return nil, err
				}
				return dialer.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
			},
			MaxIdleConnsPerHost: 16,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
