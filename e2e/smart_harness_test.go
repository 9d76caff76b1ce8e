package e2e

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// The SMART tests run a real OpenID provider (oidc-provider, test/smart)
// configured by testdata/oidc/provider.json. These are its clients and user.
const (
	smartDir            = "../test/smart"
	backendClientID     = "pfr-backend"
	backendClientSecret = "pfr-backend-secret-for-tests-only"
	arrayClientID       = "pfr-backend-array-claims" // aud array, scp array
	arrayClientSecret   = "pfr-backend-array-claims-secret-for-tests-only"
	appClientID         = "pfr-smart-app" // public, authorization_code + PKCE
	appRedirectPath     = "/callback"     // http://127.0.0.1:<any port>/callback
	smartUser           = "john"
	smartPassword       = "john-password-for-tests-only"
)

// managementAudience() is the resource (and token aud) of the management API.
func managementAudience() string { return fmt.Sprintf("https://%s:%d", baseDomain, httpsPort) }

// startSmartGateway loads a gateway that trusts the provider at issuer.
func startSmartGateway(t *testing.T, issuer, extra string) *env {
	t.Helper()
	return startSmartGatewayIn(t, t.TempDir(), issuer, extra)
}

// startSmartGatewayIn loads (or reloads) the gateway on data directory dir,
// so a test can change the configuration and keep its records.
func startSmartGatewayIn(t *testing.T, dir, issuer, extra string) *env {
	t.Helper()
	return loadGateway(t, dir, "\t\tissuer "+issuer+"\n"+withStore(dir, "")+"\n"+extra, "")
}

// oidcProvider is a running test/smart/provider.mjs.
type oidcProvider struct {
	issuer string
	admin  string // bearer token of its /admin endpoints
	client *http.Client
}

// startProvider starts the OpenID provider on a free 127.0.0.1 port and stops
// it when the test ends. A missing node or npm package fails the test. Its
// configuration is testdata/oidc/provider.json with this process's HTTPS
// port wherever it names the gateway at port 9443 (its FHIR bases, its
// apex, the gateway's own login client's redirect URI).
func startProvider(t *testing.T) *oidcProvider {
	t.Helper()
	node := requireNode(t, "oidc-provider")
	admin := randomString(t)
	raw := string(testkit.ReadFile(t, filepath.Join(testkit.Root(t), "testdata", "oidc", "provider.json")))
	if !strings.Contains(raw, ".localhost:9443") {
		t.Fatal("testdata/oidc/provider.json no longer names the gateway at .localhost:9443: the port the tests put in its place")
	}
	config := filepath.Join(t.TempDir(), "provider.json")
	local := strings.ReplaceAll(raw, ".localhost:9443", fmt.Sprintf(".localhost:%d", httpsPort))
	if err := os.WriteFile(config, []byte(local), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(node, "provider.mjs")
	cmd.Dir = smartDir
	cmd.Env = append(os.Environ(), "SMART_ADMIN_TOKEN="+admin, "SMART_PORT=0", "SMART_CONFIG="+config)
	issuer := startNode(t, cmd, "ready ")
	return &oidcProvider{issuer: issuer, admin: admin, client: &http.Client{
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// requireNode returns the node binary, failing the test when node or the
// npm package pkg (installed by `npm ci` in test/smart) is missing.
func requireNode(t *testing.T, pkg string) string {
	t.Helper()
	testkit.Needs(t, "Node and test/smart's npm packages")
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is required for the SMART end-to-end tests: %v", err)
	}
	if _, err := os.Stat(filepath.Join(smartDir, "node_modules", pkg, "package.json")); err != nil {
		t.Fatalf("npm package %s is missing: run `npm ci` in test/smart (scripts/test.sh does): %v", pkg, err)
	}
	return node
}

// startNode starts cmd, waits (bounded) for a stdout line starting with
// prefix and returns the rest of it. The process is stopped by closing its
// stdin when the test ends; its output is logged if the test failed.
func startNode(t *testing.T, cmd *exec.Cmd, prefix string) string {
	t.Helper()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %v: %v", cmd.Args, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		stdin.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("%v stderr:\n%s", cmd.Args, stderr.String())
		}
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), prefix) {
				lines <- strings.TrimPrefix(sc.Text(), prefix)
				break
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case line := <-lines:
		return line
	case <-done:
		t.Fatalf("%v exited before it was ready:\n%s", cmd.Args, stderr.String())
	case <-testkit.WaitContext(t).Done():
		t.Fatalf("%v not ready:\n%s", cmd.Args, stderr.String())
	}
	return ""
}

// lockedBuffer collects a child's stderr while the test may read it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func randomString(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// tokenResponse is the provider's answer at its token endpoint.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	Scope        string `json:"scope"`
	RefreshToken string `json:"refresh_token"`
	IDToken      string `json:"id_token"`
	Patient      string `json:"patient"`
	Error        string `json:"error"`
	Description  string `json:"error_description"`
	status       int
}

// claims decodes the access token's payload (no verification: the gateway
// verifies; the tests only look at the shape the provider produced).
func (tr tokenResponse) claims(t *testing.T) map[string]any {
	t.Helper()
	parts := strings.Split(tr.AccessToken, ".")
	if len(parts) != 3 {
		t.Fatalf("access token is not a JWS: %.40q", tr.AccessToken)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// header decodes the access token's JOSE header.
func (tr tokenResponse) header(t *testing.T) map[string]any {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.Split(tr.AccessToken, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var h map[string]any
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatal(err)
	}
	return h
}

// tokenRequest posts form to the token endpoint, with HTTP Basic client
// authentication when secret is set.
func (p *oidcProvider) tokenRequest(t *testing.T, clientID, secret string, form url.Values) tokenResponse {
	t.Helper()
	if secret == "" {
		form.Set("client_id", clientID) // a public client names itself
	}
	req, err := http.NewRequest("POST", p.issuer+"/token", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if secret != "" {
		req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(secret))
	}
	res, err := p.client.Do(req)
	if err != nil {
		t.Fatalf("token request: %v", err)
	}
	defer res.Body.Close()
	var tr tokenResponse
	if err := json.NewDecoder(res.Body).Decode(&tr); err != nil {
		t.Fatalf("token response (status %d): %v", res.StatusCode, err)
	}
	tr.status = res.StatusCode
	return tr
}

// clientCredentials gets a token for resource with scope from a confidential
// client, failing the test when the provider refuses.
func (p *oidcProvider) clientCredentials(t *testing.T, clientID, secret, resource, scope string) tokenResponse {
	t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}, "resource": {resource}}
	if scope != "" {
		form.Set("scope", scope)
	}
	tr := p.tokenRequest(t, clientID, secret, form)
	if tr.status != http.StatusOK || tr.AccessToken == "" {
		t.Fatalf("client_credentials for %s (%q): status %d %s: %s", resource, scope, tr.status, tr.Error, tr.Description)
	}
	return tr
}

// adminPost calls one of the provider's /admin endpoints.
func (p *oidcProvider) adminPost(t *testing.T, path string, body any) map[string]any {
	t.Helper()
	raw, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest("POST", p.issuer+path, bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+p.admin)
	req.Header.Set("Content-Type", "application/json")
	res, err := p.client.Do(req)
	if err != nil {
		t.Fatalf("admin %s: %v", path, err)
	}
	defer res.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(res.Body).Decode(&out)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("admin %s: status %d: %v", path, res.StatusCode, out)
	}
	return out
}

// setLaunchPatient tells the provider which Patient is the launch context
// of a record's FHIR base.
func (p *oidcProvider) setLaunchPatient(t *testing.T, fhirBase, patientID string) {
	t.Helper()
	p.adminPost(t, "/admin/launch-context", map[string]string{"resource": fhirBase, "patient": patientID})
}

// authRequest is what an app puts in its authorization request.
type authRequest struct {
	params    url.Values // scope, aud or resource, …; client_id, redirect_uri, state and PKCE are added
	user      string
	password  string
	noPKCE    bool   // send no code_challenge
	verifier  string // set by authorize: the PKCE code_verifier
	returnTo  string // set by authorize: the redirect_uri used
	wantError bool   // expect an error at the redirect instead of a code
}

// authorize runs the authorization_code flow of the public app like a
// browser would: it follows redirects, fills the provider's login and
// consent pages, and lands on a callback server the test owns. It returns
// the callback's query (code and state, or error).
func (p *oidcProvider) authorize(t *testing.T, ar *authRequest) url.Values {
	t.Helper()
	callbacks := make(chan url.Values, 1)
	cb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != appRedirectPath {
			http.NotFound(w, r)
			return
		}
		select {
		case callbacks <- r.URL.Query():
		default:
		}
		_, _ = io.WriteString(w, "done")
	}))
	defer cb.Close()
	ar.returnTo = cb.URL + appRedirectPath

	q := url.Values{}
	for k, v := range ar.params {
		q[k] = v
	}
	state := randomString(t)
	q.Set("response_type", "code")
	q.Set("client_id", appClientID)
	q.Set("redirect_uri", ar.returnTo)
	q.Set("state", state)
	if !ar.noPKCE {
		ar.verifier = randomString(t)
		sum := sha256.Sum256([]byte(ar.verifier))
		q.Set("code_challenge", base64.RawURLEncoding.EncodeToString(sum[:]))
		q.Set("code_challenge_method", "S256")
	}

	browser := newBrowser(t)
	next, err := http.NewRequest("GET", p.issuer+"/auth?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	const maxSteps = 20
	for step := 0; step < maxSteps; step++ {
		res, err := browser.Do(next)
		if err != nil {
			t.Fatalf("authorization step %d (%s %s): %v", step, next.Method, next.URL, err)
		}
		body, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
		res.Body.Close()
		switch {
		case res.StatusCode >= 300 && res.StatusCode < 400:
			loc, err := res.Request.URL.Parse(res.Header.Get("Location"))
			if err != nil {
				t.Fatalf("bad Location %q: %v", res.Header.Get("Location"), err)
			}
			next, _ = http.NewRequest("GET", loc.String(), nil)
		case res.StatusCode == http.StatusOK && res.Request.URL.Path == appRedirectPath && strings.HasPrefix(res.Request.URL.String(), cb.URL):
			got := <-callbacks
			if got.Get("state") != state {
				t.Fatalf("callback state %q, want %q", got.Get("state"), state)
			}
			if got.Get("error") != "" && !ar.wantError {
				t.Fatalf("authorization refused: %s: %s", got.Get("error"), got.Get("error_description"))
			}
			if got.Get("iss") != p.issuer {
				t.Errorf("callback iss %q, want %q (RFC 9207)", got.Get("iss"), p.issuer)
			}
			return got
		case res.StatusCode == http.StatusOK:
			next = p.fillInteraction(t, res.Request.URL, string(body), ar)
		default:
			t.Fatalf("authorization step %d (%s): status %d: %.500s", step, res.Request.URL, res.StatusCode, body)
		}
	}
	t.Fatalf("authorization did not reach the callback in %d steps", maxSteps)
	return nil
}

// newBrowser is a user agent with a cookie jar that lets the caller follow
// redirects one by one.
func newBrowser(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{
		Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// encodeClaims is the base64url JSON of a JWT payload.
func encodeClaims(t *testing.T, claims map[string]any) string {
	t.Helper()
	raw, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(raw)
}

var (
	promptRE     = regexp.MustCompile(`data-prompt="([a-z_]+)"`)
	formActionRE = regexp.MustCompile(`<form method="post" action="([^"]+)">`)
)

// fillInteraction answers the provider's login or consent page.
func (p *oidcProvider) fillInteraction(t *testing.T, page *url.URL, body string, ar *authRequest) *http.Request {
	t.Helper()
	prompt := promptRE.FindStringSubmatch(body)
	action := formActionRE.FindStringSubmatch(body)
	if prompt == nil || action == nil {
		t.Fatalf("page %s is no interaction: %.500s", page, body)
	}
	form := url.Values{}
	switch prompt[1] {
	case "login":
		form.Set("username", ar.user)
		form.Set("password", ar.password)
	case "consent":
	default:
		t.Fatalf("unexpected prompt %q", prompt[1])
	}
	target, err := page.Parse(action[1])
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest("POST", target.String(), strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return req
}

// exchangeCode redeems an authorization code of the public app.
func (p *oidcProvider) exchangeCode(t *testing.T, ar *authRequest, code, verifier string) tokenResponse {
	t.Helper()
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {ar.returnTo}}
	if verifier != "" {
		form.Set("code_verifier", verifier)
	}
	return p.tokenRequest(t, appClientID, "", form)
}

// userToken runs the whole flow for the test user and returns the token.
func (p *oidcProvider) userToken(t *testing.T, params url.Values) tokenResponse {
	t.Helper()
	ar := &authRequest{params: params, user: smartUser, password: smartPassword}
	got := p.authorize(t, ar)
	tr := p.exchangeCode(t, ar, got.Get("code"), ar.verifier)
	if tr.status != http.StatusOK || tr.AccessToken == "" {
		t.Fatalf("code exchange: status %d %s: %s", tr.status, tr.Error, tr.Description)
	}
	return tr
}

// joinRecord makes the holder of token (a management API token of the
// provider) a member of slug with role, through an invitation by owner.
func (e *env) joinRecord(owner, slug, role, token string) {
	e.t.Helper()
	inv := e.do("POST", apex("/pfr/v1/records/"+slug+"/invitations"), owner, map[string]any{"role": role}).
		Expect(e.t, http.StatusCreated, "invite "+role)
	code, _ := inv.Body["code"].(string)
	e.do("POST", apex("/pfr/v1/invitations/"+code+"/accept"), token, nil).Expect(e.t, http.StatusOK, "accept as "+role)
}
