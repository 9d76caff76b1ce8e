package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// codeFlow is the built-in server's authorization code flow driven over
// HTTP, as a browser would: a public app registers, the person logs in with
// a development account and approves the ticked scopes.
func codeFlow(t *testing.T, base, user, scope string, ticked []string) map[string]any {
	t.Helper()
	c := newClient()
	c.Jar, _ = cookiejar.New(nil)
	call := func(method, u string, form url.Values, ctype string, body []byte) (*http.Response, string) {
		t.Helper()
		if form != nil {
			body, ctype = []byte(form.Encode()), "application/x-www-form-urlencoded"
		}
		req, _ := http.NewRequest(method, u, bytes.NewReader(body))
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		raw, _ := io.ReadAll(res.Body)
		return res, string(raw)
	}
	redirect := "http://127.0.0.1:9/callback"
	_, reg := call("POST", apex("/oauth/register"), nil, "application/json",
		[]byte(`{"client_name":"fhir-kit app","token_endpoint_auth_method":"none","redirect_uris":["`+redirect+`"]}`))
	var client map[string]any
	if err := json.Unmarshal([]byte(reg), &client); err != nil || client["client_id"] == nil {
		t.Fatalf("register: %s", reg)
	}
	verifier := randomString(t)
	sum := sha256.Sum256([]byte(verifier))
	q := url.Values{"response_type": {"code"}, "client_id": {client["client_id"].(string)}, "redirect_uri": {redirect},
		"scope": {scope}, "state": {"s1"}, "aud": {base},
		"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"}}
	res, _ := call("GET", apex("/oauth/authorize?"+q.Encode()), nil, "", nil)
	res, _ = call("GET", apex(res.Header.Get("Location")), nil, "", nil) // consent: not logged in yet
	_, page := call("GET", apex(res.Header.Get("Location")), nil, "", nil)
	hidden := regexp.MustCompile(`name="(request|csrf)" value="([^"]+)"`)
	fields := func(page string) url.Values {
		v := url.Values{}
		for _, m := range hidden.FindAllStringSubmatch(page, -1) {
			v.Set(m[1], m[2])
		}
		return v
	}
	form := fields(page)
	form.Set("username", user)
	res, _ = call("POST", apex("/oauth/login"), form, "", nil)
	_, page = call("GET", apex(res.Header.Get("Location")), nil, "", nil)
	form = fields(page)
	form.Set("decision", "approve")
	form["scope"] = ticked
	res, body := call("POST", apex("/oauth/consent"), form, "", nil)
	loc, _ := url.Parse(res.Header.Get("Location"))
	if loc.Query().Get("code") == "" || loc.Query().Get("state") != "s1" {
		t.Fatalf("approve: %d %s %s", res.StatusCode, loc, body)
	}
	_, body = call("POST", apex("/oauth/token"), url.Values{"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")},
		"redirect_uri": {redirect}, "code_verifier": {verifier}, "client_id": {client["client_id"].(string)}}, "", nil)
	var tok map[string]any
	if err := json.Unmarshal([]byte(body), &tok); err != nil || tok["access_token"] == nil {
		t.Fatalf("token: %s", body)
	}
	return tok
}

// TestBuiltinAuthzFhirKitClient: fhir-kit-client, a third-party FHIR
// client, finds the built-in server through the record's SMART discovery
// and works with its token alone: reads, searches, creates; what was not
// approved is refused.
func TestBuiltinAuthzFhirKitClient(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is required: %v", err)
	}
	if _, err := os.Stat("../test/fhirkit/node_modules/fhir-kit-client/package.json"); err != nil {
		t.Fatalf("run npm ci in test/fhirkit (scripts/test.sh does): %v", err)
	}
	dir := t.TempDir()
	e := loadGateway(t, dir, authzLines()+withStore(dir, ""), "")
	rec := e.createRecord(e.token("alice"), "john-kit", "Doe", "John")
	base, pid := rec["fhirBase"].(string), rec["patientId"].(string)
	scope := "launch/patient patient/Patient.rs patient/Observation.cruds patient/Condition.rs"
	tok := codeFlow(t, base, "alice", scope, []string{"launch/patient", "patient/Patient.rs", "patient/Observation.cruds"})
	if tok["patient"] != pid {
		t.Errorf("token response patient %v, want %s", tok["patient"], pid)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "builtin-token.test.mjs")
	cmd.Dir = "../test/fhirkit"
	cmd.Env = append(os.Environ(), "PFR_FHIR_BASE="+base, "PFR_TOKEN="+tok["access_token"].(string), "PFR_PATIENT_ID="+pid,
		"PFR_ISSUER="+apex(""), "NODE_EXTRA_CA_CERTS="+filepath.Join(caddyStorage, "pki", "authorities", "local", "root.crt"))
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "# fail 0") {
		t.Fatalf("fhir-kit-client with a built-in token: %v\n%s", err, out)
	}
}
