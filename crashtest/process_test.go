package crashtest

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/internal/pfrproc"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// baseDomain is the gateway's base domain: under .localhost, as the dev
// issuer requires; the client dials every name under it as 127.0.0.1.
const baseDomain = "pfr.localhost"

// gatewayTemplate is the configuration of a crash-test gateway: plain HTTP
// on one loopback port, no admin endpoint, drop-off rate limits and quotas
// out of the way so that only crashes decide what happens. Arguments: %[1]d
// the port, %[2]s the work directory; upstreamSlot stands for the upstream
// (and any more pfr options).
const gatewayTemplate = `{
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
		webhook_allow 127.0.0.1/32
		dropoff {
			source_rate -1
			record_rate -1
			pending_per_record 1000000
			pending_bytes_per_record 100000000000
		}
UPSTREAM
	}
}
`

// withUpstream is gatewayTemplate with the upstream lines.
func withUpstream(lines string) string {
	return strings.Replace(gatewayTemplate, "UPSTREAM", lines, 1)
}

// caddyfile is the crash tests' gateway: the embedded store.
var caddyfile = withUpstream(`		upstream pfr_store {
			path %[2]s/data/store.db
		}`)

// gatewayProcess is the real pfr binary serving one work directory. It can
// be killed and started again on the same data and port.
type gatewayProcess struct {
	t      *testing.T
	dir    string
	port   int
	dev    *auth.DevIssuer
	client *http.Client
	proc   *pfrproc.Process // the latest start
	starts int
	opts   gatewayOptions
}

// gatewayOptions vary a test gateway.
type gatewayOptions struct {
	// config is the Caddyfile, with %[1]d the port, %[2]s the work
	// directory and args after them. Default: caddyfile.
	config string
	args   []any
	// prepare runs on the work directory before anything is written there
	// (e.g. to mount a file system on its data directory).
	prepare func(dir string)
}

// newGateway starts the gateway on a fresh work directory and waits until
// it answers. The process is killed when the test ends.
func newGateway(t *testing.T) *gatewayProcess {
	t.Helper()
	return newGatewayWith(t, gatewayOptions{})
}

// newGatewayWith is newGateway with options.
func newGatewayWith(t *testing.T, opts gatewayOptions) *gatewayProcess {
	t.Helper()
	if opts.config == "" {
		opts.config = caddyfile
	}
	g := &gatewayProcess{t: t, dir: t.TempDir(), port: freePort(t), client: newClient(), opts: opts}
	if opts.prepare != nil {
		opts.prepare(g.dir)
	}
	dev, err := auth.LoadOrCreateDevIssuer(filepath.Join(g.dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	g.dev = dev
	t.Cleanup(g.stop)
	g.start()
	return g
}

// freePort holds a loopback port for the test (testkit.Port): the gateway
// process (Caddy, SO_REUSEPORT) listens on it, and between a kill and the
// next start no other process can be given it.
func freePort(t *testing.T) int {
	t.Helper()
	return testkit.Reserve(t).Number
}

// start runs the binary on the work directory and waits (bounded) until it
// serves HTTP, answering anything on the apex.
func (g *gatewayProcess) start() {
	g.t.Helper()
	g.starts++
	proc, err := pfrproc.Start(context.Background(), pfrBinary(g.t), g.dir,
		fmt.Sprintf(g.opts.config, append([]any{g.port, g.dir}, g.opts.args...)...))
	if err != nil {
		g.t.Fatalf("pfr start %d: %v", g.starts, err)
	}
	g.proc = proc
	if err := proc.WaitReady(context.Background(), g.apex("/pfr/v1/records"), 0, 30*time.Second); err != nil {
		g.t.Fatalf("pfr start %d: %v\n%s", g.starts, err, g.logTail(30))
	}
}

// kill sends SIGKILL and waits for the process to be gone: no cleanup, no
// flush, exactly a power cut as far as the process is concerned.
func (g *gatewayProcess) kill() {
	g.t.Helper()
	if err := g.proc.Kill(); err != nil {
		g.t.Fatal(err)
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
	if g.proc != nil {
		_ = g.proc.Kill()
	}
}

// logTail returns the last n lines of the gateway's log, for failures.
func (g *gatewayProcess) logTail(n int) string {
	return g.proc.LogTail(n)
}

// logHasLine reports whether one line of the log since the last start
// contains every one of parts.
func (g *gatewayProcess) logHasLine(parts ...string) bool {
	text, err := g.proc.Log()
	if err != nil {
		return false
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
	transport := pfrproc.LocalTransport()
	transport.MaxIdleConnsPerHost = 16
	return pfrproc.LocalClient(60*time.Second, transport)
}
