package e2e

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestSMARTClientCredentials: a backend service gets tokens from the real
// provider with client_credentials; the gateway lets the scopes it was
// granted read, and refuses what they do not cover with a 403 naming the
// missing scope.
func TestSMARTClientCredentials(t *testing.T) {
	p := startProvider(t)
	e := startSmartGateway(t, p.issuer, "")
	alice := e.token("alice")
	rec := e.createRecord(alice, "alice-smart", "Smith", "Alice")
	e.createRecord(e.token("bob"), "bob-smart", "Jones", "Bob")
	base := rec["fhirBase"].(string)
	patient := "Patient/" + rec["patientId"].(string)
	e.do("POST", recordURL("alice-smart", "/Observation"), alice, observation(patient, "29463-7")).
		Expect(t, http.StatusCreated, "owner writes an Observation")

	read := p.clientCredentials(t, backendClientID, backendClientSecret, base, "system/*.rs")
	c := read.claims(t)
	if c["aud"] != base || c["sub"] != backendClientID || c["scope"] != "system/*.rs" || c["iss"] != p.issuer {
		t.Fatalf("provider's token claims: %v", c)
	}
	if h := read.header(t); h["alg"] != "RS256" || h["kid"] == "" {
		t.Fatalf("provider's token header: %v", h)
	}

	// Valid token, no membership yet: authenticated but forbidden.
	e.do("GET", recordURL("alice-smart", "/Observation"), read.AccessToken, nil).
		ExpectOutcome(t, http.StatusForbidden, "client without membership")

	// The client joins as manager (read and write by role), with a token for
	// the management API (sub is the client id: the same account).
	mgmt := p.clientCredentials(t, backendClientID, backendClientSecret, managementAudience(), "")
	if aud := mgmt.claims(t)["aud"]; aud != managementAudience() {
		t.Fatalf("management token aud = %v", aud)
	}
	e.joinRecord(alice, "alice-smart", "manager", mgmt.AccessToken)

	// system/*.rs: read and search, no write.
	obs := e.do("GET", recordURL("alice-smart", "/Observation"), read.AccessToken, nil).
		Expect(t, http.StatusOK, "system/*.rs searches Observations")
	if total, _ := obs.Body["total"].(float64); total != 1 {
		t.Errorf("search total %v: %.500s", obs.Body["total"], obs.Raw)
	}
	e.do("GET", recordURL("alice-smart", "/"+patient), read.AccessToken, nil).Expect(t, http.StatusOK, "system/*.rs reads the Patient")
	e.do("POST", recordURL("alice-smart", "/Observation"), read.AccessToken, observation(patient, "8302-2")).
		ExpectInsufficientScope(t, "system/Observation.c", "system/*.rs creates")
	e.do("DELETE", recordURL("alice-smart", "/"+patient), read.AccessToken, nil).
		ExpectInsufficientScope(t, "system/Patient.d", "system/*.rs deletes")

	// patient/Observation.rs: Observations only.
	obsOnly := p.clientCredentials(t, backendClientID, backendClientSecret, base, "patient/Observation.rs")
	e.do("GET", recordURL("alice-smart", "/Observation"), obsOnly.AccessToken, nil).Expect(t, http.StatusOK, "patient/Observation.rs searches")
	e.do("GET", recordURL("alice-smart", "/"+patient), obsOnly.AccessToken, nil).
		ExpectInsufficientScope(t, "patient/Patient.r", "patient/Observation.rs reads the Patient")

	// patient/Patient.rs: the Patient, not the Observations.
	patOnly := p.clientCredentials(t, backendClientID, backendClientSecret, base, "patient/Patient.rs")
	e.do("GET", recordURL("alice-smart", "/"+patient), patOnly.AccessToken, nil).Expect(t, http.StatusOK, "patient/Patient.rs reads the Patient")
	e.do("GET", recordURL("alice-smart", "/Observation"), patOnly.AccessToken, nil).
		ExpectInsufficientScope(t, "patient/Observation.s", "patient/Patient.rs searches Observations")
	e.do("POST", recordURL("alice-smart", ""), patOnly.AccessToken, map[string]any{
		"resourceType": "Bundle", "type": "batch", "entry": []any{map[string]any{
			"request": map[string]any{"method": "GET", "url": "Observation"},
		}},
	}).ExpectInsufficientScope(t, "patient/Observation.s", "a batch entry outside the scopes")

	// With the write scope the same manager writes.
	write := p.clientCredentials(t, backendClientID, backendClientSecret, base, "patient/*.cruds")
	e.do("POST", recordURL("alice-smart", "/Observation"), write.AccessToken, observation(patient, "8302-2")).
		Expect(t, http.StatusCreated, "patient/*.cruds creates")

	// A token without SMART scopes reaches no FHIR data (default config).
	none := p.clientCredentials(t, backendClientID, backendClientSecret, base, "")
	if s, ok := none.claims(t)["scope"]; ok {
		t.Fatalf("scope-less request got scope %v", s)
	}
	e.do("GET", recordURL("alice-smart", "/Observation"), none.AccessToken, nil).ExpectOutcome(t, http.StatusForbidden, "no scopes")

	// Audiences are bound: a token for another record, or for the
	// management API, is no token for this record.
	other := p.clientCredentials(t, backendClientID, backendClientSecret, recordURL("bob-smart", ""), "system/*.rs")
	for name, tok := range map[string]string{"other record's aud": other.AccessToken, "management aud": mgmt.AccessToken} {
		r := e.do("GET", recordURL("alice-smart", "/Observation"), tok, nil)
		r.ExpectOutcome(t, http.StatusUnauthorized, name)
		if !strings.Contains(r.Header.Get("WWW-Authenticate"), "invalid_token") {
			t.Errorf("%s: WWW-Authenticate = %q", name, r.Header.Get("WWW-Authenticate"))
		}
	}
	// The other record's token is valid there, but the client is no member.
	e.do("GET", recordURL("bob-smart", "/Observation"), other.AccessToken, nil).ExpectOutcome(t, http.StatusForbidden, "member of alice only")

	// A tampered token (scope widened, signature kept) is refused.
	parts := strings.Split(read.AccessToken, ".")
	forged := parts[0] + "." + encodeClaims(t, map[string]any{
		"iss": p.issuer, "sub": backendClientID, "aud": base, "scope": "system/*.cruds",
		"exp": c["exp"], "iat": c["iat"], "client_id": backendClientID,
	}) + "." + parts[2]
	e.do("POST", recordURL("alice-smart", "/Observation"), forged, observation(patient, "1-1")).
		ExpectOutcome(t, http.StatusUnauthorized, "widened scope, old signature")

	// The provider itself refuses a wrong secret and unknown resources.
	if tr := p.tokenRequest(t, backendClientID, "wrong-secret", url.Values{"grant_type": {"client_credentials"}, "resource": {base}}); tr.status != http.StatusUnauthorized || tr.AccessToken != "" {
		t.Errorf("wrong client secret: status %d, token %v", tr.status, tr.AccessToken != "")
	}
	if tr := p.tokenRequest(t, backendClientID, backendClientSecret, url.Values{"grant_type": {"client_credentials"}, "resource": {"https://evil.example/fhir"}}); tr.Error != "invalid_target" {
		t.Errorf("unknown resource: %d %s", tr.status, tr.Error)
	}
}

// TestSMARTTokenShapes: tokens whose aud is an array (Auth0 style) and whose
// scopes are an scp array (Okta, Azure AD style) are accepted like the
// string forms, and their scopes are enforced the same way.
func TestSMARTTokenShapes(t *testing.T) {
	p := startProvider(t)
	e := startSmartGateway(t, p.issuer, "")
	alice := e.token("alice")
	rec := e.createRecord(alice, "alice-shapes", "Smith", "Alice")
	base := rec["fhirBase"].(string)
	patient := "Patient/" + rec["patientId"].(string)

	mgmt := p.clientCredentials(t, arrayClientID, arrayClientSecret, managementAudience(), "")
	if aud, ok := mgmt.claims(t)["aud"].([]any); !ok || len(aud) != 2 || aud[0] != managementAudience() {
		t.Fatalf("management token aud = %v, want an array", mgmt.claims(t)["aud"])
	}
	e.joinRecord(alice, "alice-shapes", "manager", mgmt.AccessToken)

	tok := p.clientCredentials(t, arrayClientID, arrayClientSecret, base, "system/*.rs")
	c := tok.claims(t)
	aud, _ := c["aud"].([]any)
	scp, _ := c["scp"].([]any)
	if len(aud) != 2 || aud[0] != base || len(scp) != 1 || scp[0] != "system/*.rs" || c["scope"] != nil {
		t.Fatalf("token shape: aud %v scp %v scope %v", c["aud"], c["scp"], c["scope"])
	}
	e.do("GET", recordURL("alice-shapes", "/"+patient), tok.AccessToken, nil).Expect(t, http.StatusOK, "aud array, scp array: read")
	e.do("GET", recordURL("alice-shapes", "/Observation"), tok.AccessToken, nil).Expect(t, http.StatusOK, "aud array, scp array: search")
	e.do("POST", recordURL("alice-shapes", "/Observation"), tok.AccessToken, observation(patient, "8302-2")).
		ExpectInsufficientScope(t, "system/Observation.c", "scp array: write")

	// The array must still contain this record: another record's token
	// with an array aud is refused.
	other := p.clientCredentials(t, arrayClientID, arrayClientSecret, recordURL("nobody-here", ""), "system/*.rs")
	e.do("GET", recordURL("alice-shapes", "/Observation"), other.AccessToken, nil).
		ExpectOutcome(t, http.StatusUnauthorized, "aud array without this record")
}

// TestSMARTAuthorizationCodePKCE: a person logs in at the provider
// (scripted login and consent), creates their record through the management
// API, and a SMART app with PKCE reads the record's Patient and
// Observations, with the Patient as launch context in the token response.
func TestSMARTAuthorizationCodePKCE(t *testing.T) {
	p := startProvider(t)
	e := startSmartGateway(t, p.issuer, "")

	// John, logged in at the provider, creates his record.
	mgmt := p.userToken(t, url.Values{"scope": {"openid"}, "resource": {managementAudience()}})
	if c := mgmt.claims(t); c["sub"] != smartUser || c["aud"] != managementAudience() {
		t.Fatalf("management token claims %v", c)
	}
	rec := e.createRecord(mgmt.AccessToken, "john-smart", "Doe", "John")
	base := rec["fhirBase"].(string)
	patientID := rec["patientId"].(string)
	p.setLaunchPatient(t, base, patientID)

	// A writing app (SMART's aud names the FHIR server) adds Observations.
	writer := p.userToken(t, url.Values{"scope": {"openid patient/*.cruds"}, "aud": {base}})
	for _, code := range []string{"29463-7", "8302-2"} {
		e.do("POST", recordURL("john-smart", "/Observation"), writer.AccessToken, observation("Patient/"+patientID, code)).
			Expect(t, http.StatusCreated, "writer app creates "+code)
	}

	// The reading app: launch/patient puts the Patient in the token response;
	// offline_access needs prompt=consent (OpenID Connect Core 11).
	app := p.userToken(t, url.Values{
		"scope": {"openid fhirUser launch/patient patient/*.rs offline_access"}, "aud": {base}, "prompt": {"consent"},
	})
	c := app.claims(t)
	if c["aud"] != base || c["sub"] != smartUser || c["client_id"] != appClientID {
		t.Fatalf("app token claims %v", c)
	}
	if !strings.Contains(app.Scope, "patient/*.rs") || !strings.Contains(app.Scope, "launch/patient") {
		t.Fatalf("granted scope %q", app.Scope)
	}
	if app.Patient != patientID {
		t.Fatalf("token response patient = %q, want the record's Patient %q", app.Patient, patientID)
	}
	if app.RefreshToken == "" || app.IDToken == "" {
		t.Errorf("offline_access and openid: refresh token %v, id token %v", app.RefreshToken != "", app.IDToken != "")
	}
	pat := e.do("GET", recordURL("john-smart", "/Patient/"+app.Patient), app.AccessToken, nil).Expect(t, http.StatusOK, "app reads the Patient")
	if !strings.Contains(string(pat.Raw), `"Doe"`) {
		t.Errorf("Patient: %.400s", pat.Raw)
	}
	obs := e.do("GET", recordURL("john-smart", "/Observation?patient="+app.Patient), app.AccessToken, nil).
		Expect(t, http.StatusOK, "app searches Observations")
	if total, _ := obs.Body["total"].(float64); total != 2 {
		t.Errorf("Observations total %v: %.600s", obs.Body["total"], obs.Raw)
	}
	e.do("POST", recordURL("john-smart", "/Observation"), app.AccessToken, observation("Patient/"+patientID, "1-1")).
		ExpectInsufficientScope(t, "patient/Observation.c", "read-only app writes")

	// The refresh token gives a new access token that works too.
	refreshed := p.tokenRequest(t, appClientID, "", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {app.RefreshToken}})
	if refreshed.status != http.StatusOK || refreshed.AccessToken == "" || refreshed.AccessToken == app.AccessToken {
		t.Fatalf("refresh: %d %s %s", refreshed.status, refreshed.Error, refreshed.Description)
	}
	e.do("GET", recordURL("john-smart", "/Patient/"+patientID), refreshed.AccessToken, nil).Expect(t, http.StatusOK, "refreshed token reads")
}

// TestSMARTAuthorizationRefusals: PKCE is required and checked, codes are
// single-use, a wrong password gets no code, and an app cannot ask for a
// resource the provider does not serve.
func TestSMARTAuthorizationRefusals(t *testing.T) {
	p := startProvider(t)
	base := recordURL("john-smart", "")
	params := func() url.Values { return url.Values{"scope": {"openid patient/*.rs"}, "aud": {base}} }

	// No code_challenge: the public client is refused at the authorization endpoint.
	ar := &authRequest{params: params(), user: smartUser, password: smartPassword, noPKCE: true, wantError: true}
	if got := p.authorize(t, ar); got.Get("error") != "invalid_request" || got.Get("code") != "" {
		t.Errorf("no PKCE: %v", got)
	}

	// Wrong or missing code_verifier, then a replayed code.
	ar = &authRequest{params: params(), user: smartUser, password: smartPassword}
	code := p.authorize(t, ar).Get("code")
	if tr := p.exchangeCode(t, ar, code, randomString(t)); tr.Error != "invalid_grant" || tr.AccessToken != "" {
		t.Errorf("wrong verifier: %d %s", tr.status, tr.Error)
	}
	ar = &authRequest{params: params(), user: smartUser, password: smartPassword}
	code = p.authorize(t, ar).Get("code")
	if tr := p.exchangeCode(t, ar, code, ""); tr.Error == "" || tr.AccessToken != "" {
		t.Errorf("missing verifier: %d %s", tr.status, tr.Error)
	}
	ar = &authRequest{params: params(), user: smartUser, password: smartPassword}
	code = p.authorize(t, ar).Get("code")
	if tr := p.exchangeCode(t, ar, code, ar.verifier); tr.status != http.StatusOK {
		t.Fatalf("good exchange: %d %s %s", tr.status, tr.Error, tr.Description)
	}
	if tr := p.exchangeCode(t, ar, code, ar.verifier); tr.Error != "invalid_grant" || tr.AccessToken != "" {
		t.Errorf("replayed code: %d %s", tr.status, tr.Error)
	}

	// A resource outside the PFRs: refused before any login.
	ar = &authRequest{params: url.Values{"scope": {"openid patient/*.rs"}, "aud": {"https://evil.example/fhir"}}, wantError: true}
	if got := p.authorize(t, ar); got.Get("error") != "invalid_target" {
		t.Errorf("unknown resource: %v", got)
	}
}

// TestSMARTWrongPassword: the login page refuses a wrong password and
// issues no code.
func TestSMARTWrongPassword(t *testing.T) {
	p := startProvider(t)
	q := url.Values{
		"response_type": {"code"}, "client_id": {appClientID}, "redirect_uri": {"http://127.0.0.1:9/callback"},
		"scope": {"openid"}, "resource": {managementAudience()}, "state": {"s"},
		"code_challenge": {"E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"}, "code_challenge_method": {"S256"},
	}
	jarClient := newBrowser(t)
	res, err := jarClient.Get(p.issuer + "/auth?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	page, err := res.Request.URL.Parse(res.Header.Get("Location"))
	if err != nil || res.StatusCode != http.StatusSeeOther {
		t.Fatalf("authorization endpoint: %d %v", res.StatusCode, err)
	}
	form := url.Values{"username": {smartUser}, "password": {"not-the-password"}}
	res, err = jarClient.PostForm(page.String()+"/login", form)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized || res.Header.Get("Location") != "" {
		t.Errorf("wrong password: status %d, Location %q", res.StatusCode, res.Header.Get("Location"))
	}
}
