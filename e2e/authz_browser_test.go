package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// authzLines turns on the built-in authorization server in a pfr block (a
// function: the apex's port is this process's, set by TestMain).
func authzLines() string {
	return "\t\tauthorization_server {\n\t\t\tissuer " + apex("") + "\n\t\t}\n"
}

// chromiumPath is Debian's chromium (scripts/test.sh installs it).
const chromiumPath = "/usr/bin/chromium"

// browserLaunch runs test/smart/browser-launch.mjs and returns its result.
type browserLaunch struct {
	fhirBase, user, scope, untick, denied, login, shotPrefix string
}

func (bl browserLaunch) run(t *testing.T) map[string]any {
	t.Helper()
	node := requireNode(t, "puppeteer-core")
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("chromium is required for the browser test (apt-get install chromium; scripts/test.sh does): %v", err)
	}
	root := filepath.Join(caddyStorage, "pki", "authorities", "local", "root.crt")
	inter := filepath.Join(caddyStorage, "pki", "authorities", "local", "intermediate.crt")
	shots, err := filepath.Abs("../.build")
	if err != nil {
		t.Fatal(err)
	}
	if bl.login == "" {
		bl.login = "dev"
	}
	if bl.shotPrefix == "" {
		bl.shotPrefix = "smart-"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "browser-launch.mjs")
	cmd.Dir = smartDir
	cmd.Env = append(os.Environ(), "FHIR_BASE="+bl.fhirBase, "APP_USER="+bl.user, "SCOPE="+bl.scope,
		"UNTICK="+bl.untick, "DENIED_TYPE="+bl.denied, "CHROMIUM="+chromiumPath, "SHOT_DIR="+shots,
		"LOGIN="+bl.login, "SHOT_PREFIX="+bl.shotPrefix, "NODE_EXTRA_CA_CERTS="+root, "SPKI="+spkiHash(t, root)+","+spkiHash(t, inter))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	for _, line := range strings.Split(stdout.String(), "\n") {
		if rest, ok := strings.CutPrefix(line, "result "); ok {
			var out map[string]any
			if err := json.Unmarshal([]byte(rest), &out); err != nil {
				t.Fatalf("result: %v: %s", err, rest)
			}
			return out
		}
	}
	t.Fatalf("browser launch: %v\n%s\n%s", err, stdout.String(), stderr.String())
	return nil
}

// spkiHash is the base64 SHA-256 of a PEM certificate's public key, as
// Chromium's --ignore-certificate-errors-spki-list wants it.
func spkiHash(t *testing.T, file string) string {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("Caddy's local CA: %v", err)
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		t.Fatalf("%s is not PEM", file)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// TestBuiltinAuthzBrowserLaunch: a real SMART app (fhirclient.js in headless
// Chromium) registers itself, launches standalone against a PFR of the
// quickstart configuration with only the built-in authorization server,
// the person logs in with a development account and unticks Conditions on
// the consent page; the app reads the Patient and the Observations and is
// refused the Conditions. The owner then lists the connected app and
// disconnects it: its access token stops at once.
func TestBuiltinAuthzBrowserLaunch(t *testing.T) {
	dir := t.TempDir()
	e := loadGateway(t, dir, authzLines()+withStore(dir, ""), "")
	owner := e.token("alice")
	rec := e.createRecord(owner, "john", "Doe", "John")
	base, pid := rec["fhirBase"].(string), rec["patientId"].(string)
	for _, code := range []string{"29463-7", "8302-2", "8867-4"} {
		e.do("POST", recordURL("john", "/Observation"), owner, observation("Patient/"+pid, code)).Expect(t, http.StatusCreated, "observation")
	}
	e.do("POST", recordURL("john", "/Condition"), owner, map[string]any{
		"resourceType": "Condition", "subject": map[string]any{"reference": "Patient/" + pid},
		"code": map[string]any{"text": "Hypertension"},
	}).Expect(t, http.StatusCreated, "condition")

	// Discovery names the built-in server, true to its behaviour.
	conf := e.do("GET", recordURL("john", "/.well-known/smart-configuration"), "", nil).Expect(t, http.StatusOK, "smart-configuration")
	if conf.Body["issuer"] != apex("") || conf.Body["authorization_endpoint"] != apex("/oauth/authorize") {
		t.Errorf("smart-configuration %v", conf.Body)
	}

	out := browserLaunch{fhirBase: base, user: "alice", untick: "patient/Condition.rs", denied: "Condition",
		scope: "openid fhirUser launch/patient offline_access patient/Patient.rs patient/Observation.rs patient/Condition.rs"}.run(t)
	patient, _ := out["patient"].(map[string]any)
	if patient["id"] != pid || out["launchPatient"] != pid || out["serverUrl"] != base {
		t.Fatalf("the app read %v (launch patient %v, server %v), want Patient/%s", patient["id"], out["launchPatient"], out["serverUrl"], pid)
	}
	if obs, _ := out["observations"].([]any); len(obs) != 3 {
		t.Errorf("the app read %v Observations, want 3", out["observations"])
	}
	if denied, _ := out["denied"].(map[string]any); denied["status"] != float64(http.StatusForbidden) {
		t.Errorf("the unticked type: %v, want 403", out["denied"])
	}
	if scope, _ := out["tokenScope"].(string); strings.Contains(scope, "Condition") || !strings.Contains(scope, "patient/Observation.rs") {
		t.Errorf("granted scope %q", scope)
	}
	for _, name := range []string{"smart-login.png", "smart-consent.png", "smart-app.png"} {
		if st, err := os.Stat(filepath.Join("..", ".build", name)); err != nil || st.Size() == 0 {
			t.Errorf("screenshot %s: %v", name, err)
		}
	}

	// The connected app: listed for the owner, disconnected, its token dead.
	access := out["accessToken"].(string)
	clientID := out["clientId"].(string)
	e.do("GET", recordURL("john", "/Observation"), access, nil).Expect(t, http.StatusOK, "read with the app's token")
	// The access log names the app (AuditEvent agent altId) and the person.
	testkit.WaitFor(t, "the access log to name the app and the person", 200*time.Millisecond, func() error {
		log := e.do("GET", apex("/pfr/v1/records/john/audit"), owner, nil).Expect(t, http.StatusOK, "audit")
		if !strings.Contains(string(log.Raw), `"altId":"`+clientID+`"`) || !strings.Contains(string(log.Raw), `"value":"alice"`) {
			return fmt.Errorf("it holds %.500s", log.Raw)
		}
		return nil
	})
	apps := e.do("GET", apex("/pfr/v1/records/john/apps"), owner, nil).Expect(t, http.StatusOK, "apps")
	list, _ := apps.Body["apps"].([]any)
	if len(list) != 1 || list[0].(map[string]any)["clientId"] != clientID || list[0].(map[string]any)["clientName"] != "My health app" {
		t.Fatalf("apps %s", apps.Raw)
	}
	e.do("DELETE", apex("/pfr/v1/records/john/apps/"+clientID), e.token("mallory"), nil).ExpectOutcome(t, http.StatusNotFound, "a stranger revoking")
	e.do("DELETE", apex("/pfr/v1/records/john/apps/"+clientID), owner, nil).Expect(t, http.StatusNoContent, "revoke")
	e.do("GET", recordURL("john", "/Observation"), access, nil).ExpectOutcome(t, http.StatusUnauthorized, "read after revocation")
	e.do("DELETE", apex("/pfr/v1/records/john/apps/"+clientID), owner, nil).ExpectOutcome(t, http.StatusNotFound, "second revoke")
}

// TestBuiltinAuthzBrowserOIDCLogin: the same flow with a real OpenID
// provider (oidc-provider, test/smart) as the login: the gateway is its
// relying party (code + PKCE), the account is the provider's (iss, sub),
// the one that created the record with a provider token.
func TestBuiltinAuthzBrowserOIDCLogin(t *testing.T) {
	p := startProvider(t)
	dir := t.TempDir()
	lines := "\t\tissuer " + p.issuer + "\n\t\tauthorization_server {\n\t\t\tissuer " + apex("") +
		"\n\t\t\tlogin oidc " + p.issuer + " {\n\t\t\t\tclient_id pfr-gateway-login\n" +
		"\t\t\t\tclient_secret pfr-gateway-login-secret-for-tests-only\n\t\t\t}\n\t\t}\n"
	e := loadGateway(t, dir, lines+withStore(dir, ""), "")
	mgmt := p.userToken(t, url.Values{"scope": {"openid"}, "resource": {managementAudience()}})
	rec := e.createRecord(mgmt.AccessToken, "john-oidc", "Doe", "John")
	base, pid := rec["fhirBase"].(string), rec["patientId"].(string)
	writer := p.userToken(t, url.Values{"scope": {"openid patient/*.cruds"}, "aud": {base}})
	for _, code := range []string{"29463-7", "8302-2"} {
		e.do("POST", recordURL("john-oidc", "/Observation"), writer.AccessToken, observation("Patient/"+pid, code)).Expect(t, http.StatusCreated, "observation")
	}
	out := browserLaunch{fhirBase: base, user: smartUser, untick: "patient/Condition.rs", denied: "Condition",
		login: "provider:" + smartUser + ":" + smartPassword, shotPrefix: "smart-oidc-",
		scope: "openid launch/patient patient/Patient.rs patient/Observation.rs patient/Condition.rs"}.run(t)
	patient, _ := out["patient"].(map[string]any)
	if patient["id"] != pid || out["launchPatient"] != pid {
		t.Fatalf("the app read %v (launch patient %v), want Patient/%s", patient["id"], out["launchPatient"], pid)
	}
	if obs, _ := out["observations"].([]any); len(obs) != 2 {
		t.Errorf("the app read %v Observations, want 2", out["observations"])
	}
	if denied, _ := out["denied"].(map[string]any); denied["status"] != float64(http.StatusForbidden) {
		t.Errorf("the unticked type: %v, want 403", out["denied"])
	}
	if scope, _ := out["tokenScope"].(string); strings.Contains(scope, "Condition") {
		t.Errorf("granted scope %q", scope)
	}
	apps := e.do("GET", apex("/pfr/v1/records/john-oidc/apps"), mgmt.AccessToken, nil).Expect(t, http.StatusOK, "apps")
	list, _ := apps.Body["apps"].([]any)
	if len(list) != 1 || list[0].(map[string]any)["iss"] != p.issuer || list[0].(map[string]any)["sub"] != smartUser {
		t.Errorf("the grant is not the provider's account: %s", apps.Raw)
	}
}
