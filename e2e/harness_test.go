// Package e2e runs caddy-pfr end to end inside real Caddy (in process): TLS
// with on-demand certificates, the gateway, the embedded store, real tokens.
package e2e

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/golang-jwt/jwt/v5"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/pfrgateway/caddy-pfr"
	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
	"github.com/pfrgateway/caddy-pfr/internal/testkit/incaddy"
)

const baseDomain = "pfr.localhost"

// The in-process Caddy's ports, held for the whole test process
// (testkit.Port) so that no other process (another copy of these tests, a
// gateway someone runs) is ever given them: set by TestMain.
var (
	httpsPort int
	httpPort  int
	adminPort int // Caddy's admin API: a real endpoint the SSRF tests aim at
	// rawStorePort serves, in the attack suite's embedded run, the same
	// store file as the gateway's upstream, without the gateway.
	rawStorePort int
)

// processOptions are the global options every configuration of the
// in-process Caddy starts with: this process's ports, loopback only, the
// config never saved to disk.
func processOptions() string {
	return fmt.Sprintf("\tadmin 127.0.0.1:%d\n\tpersist_config off\n\tdefault_bind 127.0.0.1\n\thttp_port %d\n\thttps_port %d\n\tskip_install_trust\n",
		adminPort, httpPort, httpsPort)
}

// env is one running gateway: Caddy with a fresh data directory, its dev
// issuer, and a second, JWKS-based issuer whose tokens the tests craft freely.
type env struct {
	t       *testing.T
	dataDir string
	dev     *auth.DevIssuer
	idp     *testIssuer
	client  *http.Client
}

// gatewayConfig is the Caddyfile every end-to-end test starts from; %[1]s is
// the data directory, %[2]s the pfr block's further lines (issuers,
// partition, upstream, …), %[3]s more sites, %[4]s processOptions, %[5]d
// the HTTPS port, %[6]s Caddy's storage.
const gatewayConfig = `{
%[4]s	local_certs
	storage file_system {
		root %[6]s
	}
	on_demand_tls {
		permission pfr {
			base_domain pfr.localhost
			data_dir %[1]s
		}
	}
}

# Every host on the port reaches the gateway, which answers unknown hosts
# with a 404 OperationOutcome; certificates come only for the apex and
# active records (the permission module).
https://:%[5]d {
	tls {
		on_demand
	}
	pfr {
		base_domain pfr.localhost
		data_dir %[1]s
		dev_issuer
		webhook_allow ` + webhookAllowed + `/32
%[2]s
	}
}
%[3]s`

// caddyStorage is Caddy's storage for the whole test process: the
// in-process Caddy keeps certificates in memory across config loads, so every
// config must use the same local CA.
var caddyStorage string

// TestMain gives the in-process Caddy (one per test binary, so the tests of
// this package run one after the other) ports of its own and a temporary
// home for everything Caddy writes: its storage, and the data and config
// directories (XDG_DATA_HOME, XDG_CONFIG_HOME) it would otherwise create
// in the user's home. So copies of this package run at once on one
// machine, beside a running quickstart, without touching each other.
func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	home, err := incaddy.IsolateHome("pfr-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(home)
	ports, err := testkit.ReservePorts(4)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer func() {
		for _, p := range ports {
			_ = p.Release()
		}
	}()
	httpsPort, httpPort, adminPort, rawStorePort = ports[0].Number, ports[1].Number, ports[2].Number, ports[3].Number
	caddyStorage = filepath.Join(home, "storage")
	defer func() { _ = caddy.Stop() }()
	return m.Run()
}

// loadCaddy loads config into the in-process Caddy (incaddy.Load); a
// config that listens anywhere but on this process's held ports is refused.
func loadCaddy(config, adapter string) error {
	return incaddy.Load(config, adapter, httpsPort, httpPort, adminPort, rawStorePort)
}

// mustLoadCaddy is loadCaddy, failing t on error.
func mustLoadCaddy(t *testing.T, config, adapter string) {
	t.Helper()
	if err := loadCaddy(config, adapter); err != nil {
		t.Fatalf("loading the config into Caddy: %v\n%s", err, config)
	}
}

// startGateway loads a gateway config into the in-process Caddy, trusting
// the dev issuer and a fresh test issuer (JWKS only). upstream holds the pfr
// block's partition/upstream lines; empty means the embedded store in the
// data directory.
func startGateway(t *testing.T, upstream string) *env {
	t.Helper()
	dir := t.TempDir()
	idp := newTestIssuer(t)
	e := loadGateway(t, dir, idp.issuerLines()+withStore(dir, upstream), "")
	e.idp = idp
	return e
}

// withStore returns upstream, or the embedded store in dir when it is empty.
func withStore(dir, upstream string) string {
	if upstream == "" {
		return "\t\tupstream pfr_store {\n\t\t\tpath " + dir + "/store.db\n\t\t}"
	}
	return upstream
}

// loadGateway loads (or reloads) the gateway on data directory dir with
// pfrLines in its pfr block and extraSites after its site.
func loadGateway(t *testing.T, dir, pfrLines, extraSites string) *env {
	t.Helper()
	mustLoadCaddy(t, fmt.Sprintf(gatewayConfig, dir, pfrLines, extraSites, processOptions(), httpsPort, caddyStorage), "caddyfile")
	dev, err := auth.LoadOrCreateDevIssuer(dir)
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, dataDir: dir, dev: dev, client: newClient()}
}

// newClient dials every name to 127.0.0.1 (as *.localhost resolves) and
// does not verify the local CA: the TLS test checks certificates itself.
func newClient() *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				_, port, _ := net.SplitHostPort(addr)
				return dialer.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
			},
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // test client; certificates are checked in TestOnDemandTLS
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func apex(path string) string { return fmt.Sprintf("https://%s:%d%s", baseDomain, port(), path) }

func recordURL(slug, path string) string {
	return fmt.Sprintf("https://%s.%s:%d/fhir%s", slug, baseDomain, port(), path)
}

// port is the gateway's HTTPS port; asked before TestMain held it (from a
// package-level variable's initializer), it panics rather than give 0.
func port() int {
	if httpsPort == 0 {
		panic("e2e: the HTTPS port is not held yet: build URLs inside the tests, not in package-level variables")
	}
	return httpsPort
}

// token mints a dev-issuer token for sub with the default scope.
func (e *env) token(sub string) string {
	e.t.Helper()
	tok, err := e.dev.Mint(sub, "openid patient/*.cruds", nil, time.Hour)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

// response is what do returns: the status, headers, raw and decoded body.
type response = testkit.Response

// do sends a request; body may be nil, a []byte, a string or anything
// JSON-encodable; headers are name, value pairs.
func (e *env) do(method, url, token string, body any, headers ...string) response {
	e.t.Helper()
	h := http.Header{}
	for i := 0; i+1 < len(headers); i += 2 {
		h.Add(headers[i], headers[i+1])
	}
	res, err := testkit.Send(context.Background(), e.client, method, url, token, body, h)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, url, err)
	}
	return res
}

// createRecord creates a record for the caller and returns its view.
func (e *env) createRecord(token, slug, family, given string) map[string]any {
	e.t.Helper()
	res := e.do("POST", apex("/pfr/v1/records"), token, map[string]any{
		"slug": slug, "relationship": "self",
		"patient": map[string]any{
			"resourceType": "Patient",
			"name":         []any{map[string]any{"family": family, "given": []any{given}}},
			"gender":       "female", "birthDate": "1980-04-02",
		},
	})
	res.Expect(e.t, http.StatusCreated, "create record "+slug)
	return res.Body
}

// testIssuer is an OpenID-provider stand-in that only serves a JWKS: the
// tests sign whatever tokens they need with its RSA key (the full OIDC
// flows with a real provider live in the SMART tests).
type testIssuer struct {
	url string
	key *rsa.PrivateKey
	kid string
}

func newTestIssuer(t *testing.T) *testIssuer {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ti := &testIssuer{key: key, kid: "test-key-1"}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/jwks" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []any{map[string]any{
			"kty": "RSA", "kid": ti.kid, "use": "sig", "alg": "RS256",
			"n": base64.RawURLEncoding.EncodeToString(key.N.Bytes()),
			"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(key.E)).Bytes()),
		}}})
	}))
	t.Cleanup(srv.Close)
	ti.url = srv.URL
	return ti
}

// issuerLines are the pfr block lines that trust this issuer.
func (ti *testIssuer) issuerLines() string {
	return "\t\tissuer " + ti.url + " {\n\t\t\tjwks_url " + ti.url + "/jwks\n\t\t}\n"
}

// sign signs claims with the issuer's key; iss defaults to the issuer.
func (ti *testIssuer) sign(t *testing.T, claims jwt.MapClaims) string {
	t.Helper()
	if _, ok := claims["iss"]; !ok {
		claims["iss"] = ti.url
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = ti.kid
	s, err := tok.SignedString(ti.key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// startOtherDevIssuer mints a token from a dev issuer this gateway does not
// trust (another data directory).
func startOtherDevIssuer(t *testing.T) string {
	t.Helper()
	other, err := auth.LoadOrCreateDevIssuer(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := other.Mint("alice", "patient/*.cruds", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
