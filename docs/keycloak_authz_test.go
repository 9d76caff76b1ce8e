package docs_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func randomHex(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// getJSON GETs u without credentials and decodes the JSON answer.
func getJSON(ctx context.Context, t *testing.T, client *http.Client, u string) map[string]any {
	t.Helper()
	code, body := callWith(ctx, t, client, "", http.MethodGet, u, "")
	var out map[string]any
	if code != http.StatusOK || json.Unmarshal([]byte(body), &out) != nil {
		t.Fatalf("GET %s: %d %s", u, code, body)
	}
	return out
}

func strs(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, x := range list {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// checkKeycloakDiscovery: with Keycloak as the external token issuer, a
// record's SMART configuration says only what is true (docs/smart.md,
// "What works with stock Keycloak"): Keycloak's endpoints, none of its
// grant types the gateway's apps cannot use, S256 only, no patient
// context; and Keycloak's listed registration endpoint refuses an
// anonymous SMART app.
func checkKeycloakDiscovery(ctx context.Context, t *testing.T, client *http.Client, realm, fhirBase string) {
	t.Helper()
	kc := getJSON(ctx, t, client, realm+"/.well-known/openid-configuration")
	kcGrants := strs(kc["grant_types_supported"])
	if !slices.Contains(kcGrants, "implicit") && !slices.Contains(kcGrants, "password") {
		t.Errorf("Keycloak no longer lists implicit or password (%v): docs/smart.md says it does", kcGrants)
	}
	conf := getJSON(ctx, t, client, fhirBase+"/.well-known/smart-configuration")
	for _, k := range []string{"issuer", "authorization_endpoint", "token_endpoint", "jwks_uri", "registration_endpoint"} {
		if conf[k] == nil || conf[k] != kc[k] {
			t.Errorf("smart-configuration %s = %v, Keycloak's is %v", k, conf[k], kc[k])
		}
	}
	grants := strs(conf["grant_types_supported"])
	for _, g := range grants {
		if !slices.Contains([]string{"authorization_code", "refresh_token", "client_credentials"}, g) {
			t.Errorf("smart-configuration copies grant type %q", g)
		}
	}
	if !slices.Contains(grants, "authorization_code") {
		t.Errorf("smart-configuration grant types %v lack authorization_code", grants)
	}
	if m := strs(conf["code_challenge_methods_supported"]); !slices.Equal(m, []string{"S256"}) {
		t.Errorf("code_challenge_methods_supported %v, want [S256]", m)
	}
	caps := strs(conf["capabilities"])
	if slices.Contains(caps, "context-standalone-patient") || !slices.Contains(caps, "launch-standalone") {
		t.Errorf("capabilities %v: launch-standalone without context-standalone-patient expected", caps)
	}
	// A SMART app registering itself, as it would from the configuration.
	code, body := callWith(ctx, t, client, "", http.MethodPost, fmt.Sprint(conf["registration_endpoint"]),
		`{"client_name":"A SMART app","redirect_uris":["http://localhost:5173/cb"],"token_endpoint_auth_method":"none"}`)
	if code != http.StatusForbidden {
		t.Errorf("anonymous registration at Keycloak: %d %s, want 403 (docs/smart.md: Trusted Hosts)", code, body)
	}
}

var (
	requestField = regexp.MustCompile(`name="request" value="([^"]+)"`)
	csrfField    = regexp.MustCompile(`name="csrf" value="([^"]+)"`)
	scopeField   = regexp.MustCompile(`name="scope" value="([^"]+)"`)
)

// builtinWithKeycloakLogin: a gateway whose built-in authorization server
// logs people in at Keycloak. The Keycloak user creates their record with
// Keycloak's token; a SMART app registers itself, the user signs in at
// Keycloak and approves on the gateway's consent page, and the app gets
// the patient context, an ID token with fhirUser, a refresh token and an
// access token for the record: what stock Keycloak alone cannot give.
func builtinWithKeycloakLogin(ctx context.Context, t *testing.T, realm, kcToken string, port int, user, password string) {
	t.Helper()
	apex := fmt.Sprintf("https://pfr.localhost:%d", port)
	fhirBase := fmt.Sprintf("https://john.pfr.localhost:%d/fhir", port)
	client := gatewayClient(nil)
	code, body := callWith(ctx, t, client, kcToken, http.MethodPost, apex+"/pfr/v1/records", recordJohn)
	var rec struct {
		PatientID string `json:"patientId"`
	}
	if code != http.StatusCreated || json.Unmarshal([]byte(body), &rec) != nil || rec.PatientID == "" {
		t.Fatalf("creating a record with Keycloak's token beside the authorization server: %d %s", code, body)
	}

	conf := getJSON(ctx, t, client, fhirBase+"/.well-known/smart-configuration")
	if conf["issuer"] != apex || !slices.Contains(strs(conf["capabilities"]), "context-standalone-patient") ||
		conf["token_endpoint"] != fmt.Sprintf("https://john.pfr.localhost:%d/oauth/token", port) {
		t.Fatalf("the record's smart-configuration is not the built-in server's: %v", conf)
	}
	redirect := "http://127.0.0.1:5173/cb"
	code, body = callWith(ctx, t, client, "", http.MethodPost, fmt.Sprint(conf["registration_endpoint"]),
		`{"client_name":"My health app","redirect_uris":["`+redirect+`"],"token_endpoint_auth_method":"none","grant_types":["authorization_code","refresh_token"]}`)
	var reg struct {
		ClientID string `json:"client_id"`
	}
	if code != http.StatusCreated || json.Unmarshal([]byte(body), &reg) != nil {
		t.Fatalf("registering the app: %d %s", code, body)
	}

	// The browser: the gateway's redirects until Keycloak's login page.
	jar, _ := cookiejar.New(nil)
	browser := gatewayClient(jar)
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	verifier := base64.RawURLEncoding.EncodeToString(raw)
	sum := sha256.Sum256([]byte(verifier))
	next, _ := url.Parse(fmt.Sprint(conf["authorization_endpoint"]) + "?" + url.Values{
		"response_type": {"code"}, "client_id": {reg.ClientID}, "redirect_uri": {redirect}, "state": {"st"},
		"scope": {"launch/patient openid fhirUser patient/*.rs offline_access"}, "aud": {fhirBase},
		"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"},
	}.Encode())
	follow := func(what string, until func(*url.URL) bool) (*url.URL, string) {
		t.Helper()
		for range 6 {
			if until(next) {
				return next, ""
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, next.String(), nil)
			res, err := browser.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			page, _ := io.ReadAll(res.Body)
			_ = res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return next, string(page)
			}
			loc, err := next.Parse(res.Header.Get("Location"))
			if res.StatusCode/100 != 3 || err != nil {
				t.Fatalf("%s: %s answered %d %s", what, next, res.StatusCode, tail(string(page), 10))
			}
			next = loc
		}
		t.Fatalf("%s: too many redirects", what)
		return nil, ""
	}
	login, _ := follow("to Keycloak", func(u *url.URL) bool { return strings.HasPrefix(u.String(), realm+"/") })
	next = keycloakLogin(ctx, t, login.String(), user, password)
	if !strings.HasPrefix(next.String(), apex+"/oauth/callback?") {
		t.Fatalf("Keycloak sent the browser to %s, not the gateway's callback", next)
	}
	_, page := follow("back to the consent page", func(*url.URL) bool { return false })
	request, csrf := requestField.FindStringSubmatch(page), csrfField.FindStringSubmatch(page)
	if request == nil || csrf == nil || !strings.Contains(page, fhirBase) {
		t.Fatalf("no consent page for John's record:\n%s", tail(page, 30))
	}
	form := url.Values{"request": {html.UnescapeString(request[1])}, "csrf": {html.UnescapeString(csrf[1])}, "decision": {"approve"}}
	for _, m := range scopeField.FindAllStringSubmatch(page, -1) {
		form.Add("scope", html.UnescapeString(m[1]))
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, apex+"/oauth/consent", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	res, err := browser.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close()
	back, _ := url.Parse(res.Header.Get("Location"))
	if res.StatusCode != http.StatusSeeOther || back == nil || back.Query().Get("code") == "" || back.Query().Get("state") != "st" {
		t.Fatalf("approval: %d %s", res.StatusCode, res.Header.Get("Location"))
	}

	// The app, at the record's token endpoint.
	token := func(form url.Values) tokenAnswer {
		t.Helper()
		form.Set("client_id", reg.ClientID)
		code, body := callWith(ctx, t, client, "", http.MethodPost, fmt.Sprint(conf["token_endpoint"]), form.Encode())
		var tok tokenAnswer
		if code != http.StatusOK || json.Unmarshal([]byte(body), &tok) != nil {
			t.Fatalf("token: %d %s", code, body)
		}
		return tok
	}
	tok := token(url.Values{"grant_type": {"authorization_code"}, "code": {back.Query().Get("code")},
		"redirect_uri": {redirect}, "code_verifier": {verifier}})
	if tok.Patient != rec.PatientID || tok.RefreshToken == "" {
		t.Errorf("token response: patient %q (want %q), refresh token %t", tok.Patient, rec.PatientID, tok.RefreshToken != "")
	}
	if id := jwtClaims(t, tok.IDToken); id["iss"] != apex || id["fhirUser"] != fhirBase+"/Patient/"+rec.PatientID {
		t.Errorf("ID token %v: want iss %s and fhirUser %s/Patient/%s", id, apex, fhirBase, rec.PatientID)
	}
	if code, body := callWith(ctx, t, client, tok.AccessToken, http.MethodGet, fhirBase+"/Patient/"+tok.Patient, ""); code != http.StatusOK {
		t.Errorf("reading the launch patient: %d %s", code, body)
	}
	if code, body := callWith(ctx, t, client, tok.AccessToken, http.MethodPost, fhirBase+"/Observation", `{"resourceType":"Observation","status":"final","code":{"text":"x"}}`); code != http.StatusForbidden {
		t.Errorf("writing with a read-only grant: %d %s, want 403", code, body)
	}
	if again := token(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}}); again.Patient != rec.PatientID || again.AccessToken == "" {
		t.Errorf("refresh: %+v", again)
	}
	// The owner (Keycloak's token) sees the app among the record's apps.
	if code, body := callWith(ctx, t, client, kcToken, http.MethodGet, apex+"/pfr/v1/records/john/apps", ""); code != http.StatusOK || !strings.Contains(body, reg.ClientID) {
		t.Errorf("connected apps: %d %s", code, body)
	}
}
