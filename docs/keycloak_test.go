package docs_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// TestKeycloakRecipe runs the Keycloak recipe of docs/smart.md as written
// against a real Keycloak (PFR_KEYCLOAK_HOME, the unpacked Quarkus
// distribution that scripts/test.sh fetches from Maven Central; Java from
// PFR_KEYCLOAK_JAVA_HOME), logs its user in through the authorization code
// flow with PKCE, and has a gateway configured with the recipe's issuer
// block accept the token and enforce its scopes. Without Keycloak it skips,
// unless PFR_REQUIRE_KEYCLOAK=1 (set by scripts/test.sh), when it fails.
func TestKeycloakRecipe(t *testing.T) {
	testkit.Needs(t, "Keycloak (PFR_KEYCLOAK_HOME) and Java")
	kcHome := os.Getenv("PFR_KEYCLOAK_HOME")
	if kcHome == "" {
		if os.Getenv("PFR_REQUIRE_KEYCLOAK") == "1" {
			t.Fatal("PFR_KEYCLOAK_HOME is not set (scripts/test.sh unpacks Keycloak and sets it)")
		}
		t.Skip("PFR_KEYCLOAK_HOME is not set: no Keycloak to try the recipe on")
	}
	if _, err := os.Stat(filepath.Join(kcHome, "bin", "kc.sh")); err != nil {
		t.Fatalf("no Keycloak at PFR_KEYCLOAK_HOME (scripts/test.sh unpacks it there): %v", err)
	}
	raw, err := os.ReadFile(filepath.Join(root, "docs", "smart.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, recipe, ok := strings.Cut(string(raw), "**Keycloak**")
	if !ok {
		t.Fatal("docs/smart.md has no **Keycloak** recipe")
	}
	// The recipe's blocks in order: the realm (sh) and the issuer block
	// (caddyfile), then the login client (sh) and the authorization
	// server block (caddyfile) of "Keycloak as the login".
	var shBlocks, caddyBlocks []string
	for _, b := range blocks(recipe) {
		switch b.info {
		case "sh":
			shBlocks = append(shBlocks, b.body)
		case "caddyfile":
			caddyBlocks = append(caddyBlocks, b.body)
		}
	}
	if len(shBlocks) < 2 || len(caddyBlocks) < 2 || !strings.Contains(caddyBlocks[1], "authorization_server") {
		t.Fatal("the Keycloak recipe needs its sh and caddyfile blocks, then the login client's sh block and the authorization_server block")
	}
	// Keycloak (Java) binds without SO_REUSEPORT: a port free a moment
	// ago; the gateways' (Caddy) are held for the test (testkit.Port).
	kcFree, err := testkit.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	ports := []int{kcFree, testkit.Reserve(t).Number, testkit.Reserve(t).Number, testkit.Reserve(t).Number, testkit.Reserve(t).Number}
	kcPort := fmt.Sprint(ports[0])
	// Keycloak's port, and the quickstart's apex port (8443) where the
	// second gateway, the one with the authorization server, listens.
	local := func(s string) string {
		s = regexp.MustCompile(`\b8081\b`).ReplaceAllString(s, kcPort)
		return regexp.MustCompile(`\b8443\b`).ReplaceAllString(s, fmt.Sprint(ports[3]))
	}
	script, issuerBlock := local(shBlocks[0]+"\n"+shBlocks[1]), local(caddyBlocks[0])
	authzBlock := local(caddyBlocks[1])
	loginSecret := randomHex(t)
	t.Setenv("PFR_LOGIN_SECRET", loginSecret) // the gateway's {env.PFR_LOGIN_SECRET}

	// Step 1 of the recipe starts Keycloak in the background; the test
	// starts it itself (to stop it at the end) with exactly that command
	// line, and runs the rest of the recipe as written.
	startLine := regexp.MustCompile(`(?s)KC_BOOTSTRAP_ADMIN_USERNAME=\S+ KC_BOOTSTRAP_ADMIN_PASSWORD=\S+ \\\n\s*(bin/kc\.sh start-dev [^&\n]*)&\n`)
	m := startLine.FindStringSubmatch(script)
	if m == nil {
		t.Fatalf("the recipe's step 1 no longer starts Keycloak as this test expects:\n%s", script)
	}
	script = strings.Replace(script, m[0], "", 1)
	work := t.TempDir()
	ctx := testkit.WaitContext(t)
	env := append(os.Environ(), "HOME="+work, // kcadm keeps its login in ~/.keycloak, PFR_LOGIN_SECRET included
		"KC_BOOTSTRAP_ADMIN_USERNAME=admin", "KC_BOOTSTRAP_ADMIN_PASSWORD=admin",
		"JAVA_OPTS_APPEND=-Dnet.bytebuddy.experimental=true")
	if jh := os.Getenv("PFR_KEYCLOAK_JAVA_HOME"); jh != "" {
		env = append(env, "JAVA_HOME="+jh, "PATH="+filepath.Join(jh, "bin")+string(os.PathListSeparator)+os.Getenv("PATH"))
	}
	// An in-memory database: nothing of this run stays in the distribution.
	kc := exec.Command("bash", "-c", strings.TrimSpace(m[1])+" --db dev-mem")
	kc.Dir, kc.Env = kcHome, env
	kcLog := &syncBuffer{}
	kc.Stdout, kc.Stderr = kcLog, kcLog
	kc.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := kc.Start(); err != nil {
		t.Fatal(err)
	}
	kcDone := make(chan struct{})
	go func() { _ = kc.Wait(); close(kcDone) }()
	defer func() {
		_ = syscall.Kill(-kc.Process.Pid, syscall.SIGTERM)
		select {
		case <-kcDone:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-kc.Process.Pid, syscall.SIGKILL)
			<-kcDone
		}
	}()
	kcBase := "http://localhost:" + kcPort
	if err := waitHTTP(ctx, kcBase+"/realms/master", kcDone); err != nil {
		t.Fatalf("Keycloak: %v\n%s", err, tail(kcLog.String(), 30))
	}

	run := exec.CommandContext(ctx, "bash", "-euo", "pipefail")
	run.Dir, run.Env = kcHome, env
	run.Stdin = strings.NewReader(script)
	if out, err := run.CombinedOutput(); err != nil {
		t.Fatalf("the recipe failed: %v\n%s", err, out)
	}

	// A SMART app's login: authorization code with PKCE, as the recipe's
	// client (my-app) and user (john) are set up. Stock Keycloak gives no
	// patient context, whatever the app asks.
	tok := authorizationCode(ctx, t, kcBase+"/realms/pfr", "openid launch/patient patient/*.rs fhirUser", "john", "change me")
	if tok.Patient != "" {
		t.Errorf("Keycloak's token response has patient %q: docs/smart.md says stock Keycloak cannot give it", tok.Patient)
	}
	claims := jwtClaims(t, tok.AccessToken)
	if claims["iss"] != kcBase+"/realms/pfr" || !hasString(claims["aud"], "pfr-gateway") ||
		!slices.Contains(strings.Fields(fmt.Sprint(claims["scope"])), "patient/*.rs") || claims["fhirUser"] != "Patient/123" {
		t.Errorf("access token claims %v: want the realm's iss, aud pfr-gateway, scope patient/*.rs, fhirUser Patient/123", claims)
	}
	if id := jwtClaims(t, tok.IDToken); id["fhirUser"] != "Patient/123" {
		t.Errorf("ID token has no fhirUser: %v", id)
	}

	// A gateway with the recipe's issuer block (and no dev_issuer) takes
	// the token: the record is created, read, and the scopes hold.
	caddyfile := gatewayCaddyfile(ports[1], ports[2], issuerBlock)
	gw := startQuickstart(ctx, t, pfrBinary(t), work, caddyfile)
	if _, err := gw.waitReady(ctx); err != nil {
		t.Fatalf("%v\n%s", err, gw.log())
	}
	client := gatewayClient(nil)
	call := func(method, u, body string) (int, string) {
		return callWith(ctx, t, client, tok.AccessToken, method, u, body)
	}
	apex := fmt.Sprintf("https://pfr.localhost:%d", ports[1])
	code, body := call(http.MethodPost, apex+"/pfr/v1/records", recordJohn)
	if code != http.StatusCreated {
		t.Fatalf("creating a record with Keycloak's token: %d %s", code, body)
	}
	fhirBase := fmt.Sprintf("https://john.pfr.localhost:%d/fhir", ports[1])
	if code, body = call(http.MethodGet, fhirBase+"/Patient", ""); code != http.StatusOK || !strings.Contains(body, `"family":"Doe"`) {
		t.Errorf("reading the record's Patient (patient/*.rs): %d %s", code, body)
	}
	if code, body = call(http.MethodPost, fhirBase+"/Observation", `{"resourceType":"Observation","status":"final","code":{"text":"x"}}`); code != http.StatusForbidden {
		t.Errorf("writing with a read-only scope: %d %s, want 403", code, body)
	}
	checkKeycloakDiscovery(ctx, t, client, kcBase+"/realms/pfr", fhirBase)

	// The second half: Keycloak as the login of the built-in
	// authorization server, in a gateway of its own.
	gw.stop()
	work2 := filepath.Join(work, "authz")
	if err := os.Mkdir(work2, 0o700); err != nil {
		t.Fatal(err)
	}
	gw2 := startQuickstart(ctx, t, pfrBinary(t), work2, gatewayCaddyfile(ports[3], ports[4], issuerBlock+"\n"+authzBlock))
	if _, err := gw2.waitReady(ctx); err != nil {
		t.Fatalf("%v\n%s", err, gw2.log())
	}
	builtinWithKeycloakLogin(ctx, t, kcBase+"/realms/pfr", tok.AccessToken, ports[3], "john", "change me")
}

// recordJohn is the record the Keycloak user creates for themselves.
const recordJohn = `{"slug":"john","relationship":"self","patient":{"resourceType":"Patient","name":[{"family":"Doe","given":["John"]}],"birthDate":"1970-01-01","gender":"male"}}`

// gatewayCaddyfile is a gateway on 127.0.0.1 with Caddy's local CA and
// the embedded store, with pfrLines in its pfr block.
func gatewayCaddyfile(httpsPort, httpPort int, pfrLines string) string {
	return fmt.Sprintf(`{
	admin off
	storage file_system ./pfr-data/caddy
	persist_config off
	storage_clean_interval off
	default_bind 127.0.0.1
	http_port %[2]d
	https_port %[1]d
	local_certs
	skip_install_trust
	on_demand_tls {
		permission pfr {
			base_domain pfr.localhost
			data_dir ./pfr-data
		}
	}
}
https://:%[1]d {
	tls {
		on_demand
	}
	pfr {
		base_domain pfr.localhost
		data_dir ./pfr-data
%[3]s
		upstream pfr_store {
			path ./pfr-data/store.db
		}
	}
}
`, httpsPort, httpPort, pfrLines)
}

// gatewayClient reaches the gateways on 127.0.0.1 (any name, Caddy's local
// CA) with jar's cookies and without following redirects.
func gatewayClient(jar http.CookieJar) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Jar: jar, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // Caddy's local CA
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			_, port, _ := net.SplitHostPort(addr)
			return (&net.Dialer{}).DialContext(ctx, network, "127.0.0.1:"+port)
		}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// callWith sends a request with a bearer token (none when empty) and
// returns the status and body.
func callWith(ctx context.Context, t *testing.T, client *http.Client, token, method, u, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, method, u, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	switch {
	case strings.HasPrefix(body, "{") && strings.Contains(u, "/fhir/"):
		req.Header.Set("Content-Type", "application/fhir+json")
	case strings.HasPrefix(body, "{"):
		req.Header.Set("Content-Type", "application/json")
	case body != "":
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// tokenAnswer is a token endpoint's answer.
type tokenAnswer struct {
	AccessToken  string `json:"access_token"`
	IDToken      string `json:"id_token"`
	RefreshToken string `json:"refresh_token"`
	Patient      string `json:"patient"`
	Scope        string `json:"scope"`
}

// authorizationCode logs user in at the realm as the recipe's public client
// my-app with PKCE S256 and returns the tokens.
func authorizationCode(ctx context.Context, t *testing.T, realm, scope, user, password string) tokenAnswer {
	t.Helper()
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	verifier := base64.RawURLEncoding.EncodeToString(raw)
	sum := sha256.Sum256([]byte(verifier))
	redirect := "http://localhost:5173/cb"
	noFollow := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	authURL := realm + "/protocol/openid-connect/auth?" + url.Values{
		"client_id": {"my-app"}, "redirect_uri": {redirect}, "response_type": {"code"}, "scope": {scope},
		"state": {"s"}, "code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"},
	}.Encode()
	code := keycloakLogin(ctx, t, authURL, user, password).Query().Get("code")
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, realm+"/protocol/openid-connect/token", strings.NewReader(url.Values{
		"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect}, "client_id": {"my-app"}, "code_verifier": {verifier},
	}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	res, err := noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var tok tokenAnswer
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK || json.Unmarshal(body, &tok) != nil || tok.AccessToken == "" {
		t.Fatalf("token endpoint: %d %s", res.StatusCode, body)
	}
	return tok
}

// keycloakLogin opens Keycloak's login page at authURL, signs user in and
// returns where Keycloak sends the browser back (with the code).
func keycloakLogin(ctx context.Context, t *testing.T, authURL, user, password string) *url.URL {
	t.Helper()
	noFollow := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, authURL, nil)
	res, err := noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(res.Body)
	_ = res.Body.Close()
	form := regexp.MustCompile(`action="([^"]+)"`).FindSubmatch(page)
	if form == nil {
		t.Fatalf("no login form (%d):\n%s", res.StatusCode, tail(string(page), 20))
	}
	// Keycloak's session cookies are Secure; over plain http on loopback
	// they are sent back by hand.
	req, _ = http.NewRequestWithContext(ctx, http.MethodPost, html.UnescapeString(string(form[1])),
		strings.NewReader(url.Values{"username": {user}, "password": {password}, "credentialId": {""}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for _, c := range res.Cookies() {
		req.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
	}
	res, err = noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	page, _ = io.ReadAll(res.Body)
	_ = res.Body.Close()
	loc, _ := url.Parse(res.Header.Get("Location"))
	if loc == nil || loc.Query().Get("code") == "" {
		t.Fatalf("login did not redirect with a code (%d, Location %q):\n%s", res.StatusCode, res.Header.Get("Location"), tail(string(page), 20))
	}
	return loc
}

// jwtClaims decodes a JWT's payload (its signature is the gateway's to check).
func jwtClaims(t *testing.T, jwt string) map[string]any {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", jwt)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	var claims map[string]any
	if err != nil || json.Unmarshal(raw, &claims) != nil {
		t.Fatalf("JWT payload: %v %s", err, raw)
	}
	return claims
}

// hasString reports whether v is s or a list holding s.
func hasString(v any, s string) bool {
	switch v := v.(type) {
	case string:
		return v == s
	case []any:
		return slices.Contains(v, any(s))
	}
	return false
}

// waitHTTP waits until u answers 200, or done closes, or ctx ends
// (testkit.WaitContext: the test's deadline is near).
func waitHTTP(ctx context.Context, u string, done <-chan struct{}) error {
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		if res, err := client.Get(u); err == nil {
			_ = res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-done:
			return fmt.Errorf("exited before %s answered", u)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}
