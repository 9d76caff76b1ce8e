package authz

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/tenancy"
)

const fullScope = "openid fhirUser launch/patient offline_access patient/Patient.rs patient/Observation.rs patient/Condition.rs"

// The whole flow: register, authorize with PKCE, log in, consent with one
// scope unticked, exchange; the access token passes the pipeline's
// verifier for the record, names the account that logged in, and carries
// only the ticked scopes.
func TestAuthorizationCodeFlow(t *testing.T) {
	e := newEnv(t, nil)
	a := e.registerPublic()
	p := newPKCE()
	b := e.browser()
	page := b.consentPage(a, e.base("john"), fullScope, "alice", p)
	if page.status != http.StatusOK {
		t.Fatalf("consent page: %d %s", page.status, page.body)
	}
	for _, want := range []string{"Test App", "127.0.0.1:9999", e.base("john"), "Read your lab results", "Read your conditions and diagnoses", `value="patient/Condition.rs"`} {
		if !strings.Contains(page.body, want) {
			t.Errorf("consent page lacks %q", want)
		}
	}
	ticked := slices.DeleteFunc(strings.Fields(fullScope), func(s string) bool { return s == "patient/Condition.rs" })
	res := b.approve(page, ticked...)
	code := res.location().Query().Get("code")
	if res.status != http.StatusSeeOther || code == "" || !strings.HasPrefix(res.header.Get("Location"), a.redirect+"?") {
		t.Fatalf("approve: %d %v", res.status, res.header)
	}
	status, tok := e.exchange(a, code, p)
	if status != http.StatusOK {
		t.Fatalf("token: %d %v", status, tok)
	}
	if tok["patient"] != "p-john" || tok["token_type"] != "Bearer" || tok["refresh_token"] == nil || tok["id_token"] == nil {
		t.Errorf("token response %v", tok)
	}
	if strings.Contains(tok["scope"].(string), "Condition") || !strings.Contains(tok["scope"].(string), "patient/Observation.rs") {
		t.Errorf("scope %q: the unticked scope was granted or a ticked one missing", tok["scope"])
	}
	id, err := e.verify(tok["access_token"].(string), e.base("john"))
	if err != nil {
		t.Fatalf("the pipeline's verifier refused the token: %v", err)
	}
	if id.Issuer != devIss || id.Subject != "alice" || id.ClientID != a.id {
		t.Errorf("identity %s %s %s, want the account that logged in and the app", id.Issuer, id.Subject, id.ClientID)
	}
	g := id.Grants()
	if ok, _ := g.Allows(auth.Request{Interaction: auth.InteractionRead, ResourceType: "Observation"}); !ok {
		t.Error("Observation read refused")
	}
	if ok, _ := g.Allows(auth.Request{Interaction: auth.InteractionRead, ResourceType: "Condition"}); ok {
		t.Error("Condition read allowed although unticked")
	}
	// aud of another record: the token is no good there.
	if _, err := e.verify(tok["access_token"].(string), e.base("bob")); !errors.Is(err, auth.ErrBadAudience) {
		t.Errorf("token on another record: %v, want ErrBadAudience", err)
	}
	// The ID token: signed by the server, for the app, naming the Patient.
	claims, err := e.srv.parseOwn(t.Context(), tok["id_token"].(string))
	if err != nil {
		t.Fatal(err)
	}
	if claims["aud"] != a.id || claims["fhirUser"] != e.base("john")+"/Patient/p-john" {
		t.Errorf("id token claims %v", claims)
	}
	// A second authorization in the same browser skips the login.
	res = b.get(e.authorizeURL(a, e.base("john"), fullScope, newPKCE()))
	res = b.get(res.header.Get("Location"))
	if res.status != http.StatusOK || !strings.Contains(res.body, "Allow Test App") {
		t.Errorf("second authorization: %d, want the consent page directly", res.status)
	}
	// The connected app is listed and can be revoked.
	apps, err := e.srv.Apps(t.Context(), e.john.ID)
	if err != nil || len(apps) != 1 || apps[0].ClientID != a.id || apps[0].Subject != "alice" || slices.Contains(apps[0].Scope, "patient/Condition.rs") {
		t.Fatalf("apps %+v %v", apps, err)
	}
}

func TestDiscovery(t *testing.T) {
	e := newEnv(t, nil)
	doc := e.srv.SMARTConfiguration("john")
	if doc["token_endpoint"] != e.srv.recordOrigin("john")+"/oauth/token" {
		t.Errorf("token_endpoint %v is not the record's own", doc["token_endpoint"])
	}
	for _, k := range []string{"issuer", "jwks_uri", "authorization_endpoint", "token_endpoint", "grant_types_supported",
		"code_challenge_methods_supported", "scopes_supported", "response_types_supported", "capabilities",
		"revocation_endpoint", "introspection_endpoint", "registration_endpoint", "token_endpoint_auth_methods_supported"} {
		if doc[k] == nil {
			t.Errorf("smart-configuration lacks %s", k)
		}
	}
	if !slices.Equal(doc["code_challenge_methods_supported"].([]string), []string{"S256"}) {
		t.Error("code_challenge_methods_supported must be exactly S256")
	}
	for _, gt := range doc["grant_types_supported"].([]string) {
		if gt == "implicit" || gt == "password" {
			t.Errorf("grant type %s advertised", gt)
		}
	}
	// Every endpoint it names answers.
	b := e.browser()
	if res := b.get(doc["jwks_uri"].(string)); res.status != http.StatusOK || !strings.Contains(res.body, `"RS256"`) {
		t.Errorf("jwks: %d %s", res.status, res.body)
	}
	if res := b.get("/.well-known/openid-configuration"); res.status != http.StatusOK || !strings.Contains(res.body, e.issuer+"/oauth/token") {
		t.Errorf("openid-configuration: %d %s", res.status, res.body)
	}
	for _, k := range []string{"token_endpoint", "revocation_endpoint", "introspection_endpoint", "registration_endpoint"} {
		if res := b.post(doc[k].(string), url.Values{}); res.status == http.StatusNotFound {
			t.Errorf("%s answers 404", k)
		}
	}
	e2 := newEnv(t, func(c *Config) { c.DisableRegistration = true })
	if e2.srv.SMARTConfiguration("john")["registration_endpoint"] != nil {
		t.Error("registration_endpoint advertised although registration is off")
	}
}

func TestCodeSingleUseAndReplayRevokes(t *testing.T) {
	e := newEnv(t, nil)
	a := e.registerPublic()
	p := newPKCE()
	code := e.codeFor(a, e.base("john"), "alice", p, fullScope)
	status, tok := e.exchange(a, code, p)
	if status != http.StatusOK {
		t.Fatalf("token: %d %v", status, tok)
	}
	status, again := e.exchange(a, code, p)
	if status != http.StatusBadRequest || again["error"] != "invalid_grant" {
		t.Fatalf("code replay: %d %v", status, again)
	}
	// RFC 6749 4.1.2: what the code gave is revoked.
	if status, out := e.refresh(a, tok["refresh_token"].(string), ""); status != http.StatusBadRequest {
		t.Errorf("refresh after code replay: %d %v", status, out)
	}
	if _, err := e.verify(tok["access_token"].(string), e.base("john")); !errors.Is(err, auth.ErrRevoked) {
		t.Errorf("access token after code replay: %v, want ErrRevoked", err)
	}
}

func TestCodeExpiresAfterAMinute(t *testing.T) {
	e := newEnv(t, nil)
	a := e.registerPublic()
	p := newPKCE()
	code := e.codeFor(a, e.base("john"), "alice", p, fullScope)
	e.clock.Add(CodeTTL + time.Second)
	if status, out := e.exchange(a, code, p); status != http.StatusBadRequest || out["error"] != "invalid_grant" {
		t.Errorf("expired code: %d %v", status, out)
	}
}

func TestCodeOfAnotherClient(t *testing.T) {
	e := newEnv(t, nil)
	a, other := e.registerPublic(), e.registerPublic()
	p := newPKCE()
	code := e.codeFor(a, e.base("john"), "alice", p, fullScope)
	other.redirect = a.redirect
	if status, out := e.exchange(other, code, p); status != http.StatusBadRequest || out["error"] != "invalid_grant" {
		t.Errorf("another client's code: %d %v", status, out)
	}
}

func TestPKCE(t *testing.T) {
	e := newEnv(t, nil)
	a := e.registerPublic()
	b := e.browser()
	p := newPKCE()
	for name, mod := range map[string]func(url.Values){
		"missing":     func(v url.Values) { v.Del("code_challenge"); v.Del("code_challenge_method") },
		"plain":       func(v url.Values) { v.Set("code_challenge_method", "plain"); v.Set("code_challenge", p.verifier) },
		"no method":   func(v url.Values) { v.Del("code_challenge_method") },
		"short":       func(v url.Values) { v.Set("code_challenge", "abc") },
		"no aud":      func(v url.Values) { v.Del("aud") },
		"token":       func(v url.Values) { v.Set("response_type", "token") },
		"bad scope":   func(v url.Values) { v.Set("scope", "system/*.rs admin") },
		"unknown aud": func(v url.Values) { v.Set("aud", "https://evil.example/fhir") },
	} {
		u, _ := url.Parse(e.authorizeURL(a, e.base("john"), fullScope, p))
		q := u.Query()
		mod(q)
		res := b.get("/oauth/authorize?" + q.Encode())
		loc := res.location()
		if res.status != http.StatusFound || !strings.HasPrefix(loc.String(), a.redirect) || loc.Query().Get("error") == "" || loc.Query().Get("state") != "st-1" {
			t.Errorf("%s: %d %s, want an error redirect to the app with state", name, res.status, loc)
		}
	}
	// Wrong or missing verifier at the token endpoint.
	for name, verifier := range map[string]string{"wrong": newPKCE().verifier, "missing": ""} {
		code := e.codeFor(a, e.base("john"), "alice", p, fullScope)
		status, out := e.token(a, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {a.redirect}, "code_verifier": {verifier}})
		if status != http.StatusBadRequest || out["error"] != "invalid_grant" {
			t.Errorf("%s verifier: %d %v", name, status, out)
		}
	}
}

func TestRedirectURI(t *testing.T) {
	e := newEnv(t, nil)
	a := e.registerPublic()
	b := e.browser()
	p := newPKCE()
	for _, bad := range []string{"https://evil.example/callback", a.redirect + "/../evil", a.redirect + "?x=1", "http://127.0.0.1:9999/callback#", "", "//evil.example"} {
		u, _ := url.Parse(e.authorizeURL(a, e.base("john"), fullScope, p))
		q := u.Query()
		q.Set("redirect_uri", bad)
		res := b.get("/oauth/authorize?" + q.Encode())
		if res.status != http.StatusBadRequest || res.header.Get("Location") != "" {
			t.Errorf("redirect_uri %q: %d Location %q, want 400 and no redirect", bad, res.status, res.header.Get("Location"))
		}
	}
	// Unknown client: no redirect either.
	res := b.get("/oauth/authorize?client_id=nobody&redirect_uri=" + url.QueryEscape("https://evil.example/"))
	if res.status != http.StatusBadRequest || res.header.Get("Location") != "" {
		t.Errorf("unknown client: %d %q", res.status, res.header.Get("Location"))
	}
	// The code is bound to the redirect URI of its request.
	code := e.codeFor(a, e.base("john"), "alice", p, fullScope)
	status, out := e.token(a, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {a.redirect + "x"}, "code_verifier": {p.verifier}})
	if status != http.StatusBadRequest || out["error"] != "invalid_grant" {
		t.Errorf("token with another redirect_uri: %d %v", status, out)
	}
}

func TestConsentCSRFAndFraming(t *testing.T) {
	e := newEnv(t, nil)
	a := e.registerPublic()
	b := e.browser()
	page := b.consentPage(a, e.base("john"), fullScope, "alice", newPKCE())
	if page.header.Get("X-Frame-Options") != "DENY" || !strings.Contains(page.header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
		t.Errorf("consent page may be framed: %v", page.header)
	}
	req := field(requestRE, page.body)
	// No CSRF token, or a wrong one.
	for _, csrf := range []string{"", "x" + field(csrfRE, page.body)} {
		res := b.post("/oauth/consent", url.Values{"request": {req}, "csrf": {csrf}, "decision": {"approve"}, "scope": {"patient/Observation.rs"}})
		if res.status != http.StatusForbidden || res.header.Get("Location") != "" {
			t.Errorf("csrf %q: %d %q", csrf, res.status, res.header.Get("Location"))
		}
	}
	// The right token from another browser (the attacker's page posting
	// with a request it started itself is the same case).
	other := e.browser()
	other.consentPage(a, e.base("john"), fullScope, "mallory", newPKCE())
	res := other.post("/oauth/consent", url.Values{"request": {req}, "csrf": {field(csrfRE, page.body)}, "decision": {"approve"}, "scope": {"patient/Observation.rs"}})
	if res.status != http.StatusForbidden || res.header.Get("Location") != "" {
		t.Errorf("another browser: %d %q", res.status, res.header.Get("Location"))
	}
	// Cookies are HttpOnly and SameSite.
	for _, c := range page.header.Values("Set-Cookie") {
		if !strings.Contains(c, "HttpOnly") || !strings.Contains(c, "SameSite=Lax") {
			t.Errorf("cookie %s", c)
		}
	}
	// Deny: the app hears access_denied.
	res = b.post("/oauth/consent", url.Values{"request": {req}, "csrf": {field(csrfRE, page.body)}, "decision": {"deny"}})
	if res.status != http.StatusFound || res.location().Query().Get("error") != "access_denied" {
		t.Errorf("deny: %d %s", res.status, res.location())
	}
}

func TestScopeChoices(t *testing.T) {
	e := newEnv(t, nil)
	a := e.registerPublic()
	// Ticking a scope that was not asked for is refused.
	b := e.browser()
	page := b.consentPage(a, e.base("john"), "launch/patient patient/Observation.rs", "alice", newPKCE())
	res := b.approve(page, "patient/Observation.rs", "patient/*.cruds")
	if res.status != http.StatusBadRequest || res.header.Get("Location") != "" {
		t.Errorf("unrequested scope ticked: %d", res.status)
	}
	// Nothing but identity scopes: refused, the page again.
	res = b.approve(page, "launch/patient")
	if res.status != http.StatusBadRequest {
		t.Errorf("no data scope: %d", res.status)
	}
}

// A viewer may approve reading but never writing; a non-member gets no
// consent at all.
func TestViewerCannotGrantWrite(t *testing.T) {
	e := newEnv(t, nil)
	a := e.registerPublic()
	b := e.browser()
	page := b.consentPage(a, e.base("john"), "patient/Observation.rs patient/Observation.cud", "vera", newPKCE())
	if !strings.Contains(page.body, `value="patient/Observation.cud" disabled`) {
		t.Errorf("write scope not disabled for a viewer:\n%s", page.body)
	}
	res := b.approve(page, "patient/Observation.rs", "patient/Observation.cud")
	if res.status != http.StatusBadRequest || res.header.Get("Location") != "" {
		t.Errorf("viewer granting write: %d %q", res.status, res.header.Get("Location"))
	}
	res = b.approve(page, "patient/Observation.rs")
	if res.status != http.StatusSeeOther || res.location().Query().Get("code") == "" {
		t.Errorf("viewer granting read: %d", res.status)
	}
	// bob is not a member of john's record.
	b2 := e.browser()
	page = b2.consentPage(a, e.base("john"), "patient/Observation.rs", "bob", newPKCE())
	if page.status != http.StatusForbidden || strings.Contains(page.body, `name="scope"`) {
		t.Errorf("non-member: %d", page.status)
	}
	res = b2.approve(page, "patient/Observation.rs")
	if res.status != http.StatusFound || res.location().Query().Get("error") != "access_denied" {
		t.Errorf("non-member approving: %d %s", res.status, res.location())
	}
}

func TestRefreshRotationAndReuse(t *testing.T) {
	e := newEnv(t, nil)
	a := e.registerPublic()
	p := newPKCE()
	noCondition := slices.DeleteFunc(strings.Fields(fullScope), func(s string) bool { return s == "patient/Condition.rs" })
	_, tok := e.exchange(a, e.codeFor(a, e.base("john"), "alice", p, fullScope, noCondition...), p)
	rt1 := tok["refresh_token"].(string)
	status, tok2 := e.refresh(a, rt1, "")
	if status != http.StatusOK || tok2["refresh_token"] == rt1 || tok2["patient"] != "p-john" {
		t.Fatalf("refresh: %d %v", status, tok2)
	}
	// Escalation: a wider scope at refresh.
	status, out := e.refresh(a, tok2["refresh_token"].(string), "patient/Condition.rs patient/Observation.rs")
	if status != http.StatusBadRequest || out["error"] != "invalid_scope" {
		t.Errorf("escalation at refresh: %d %v", status, out)
	}
	// Narrowing is allowed, and the escalation attempt did not consume the token.
	status, tok3 := e.refresh(a, tok2["refresh_token"].(string), "patient/Observation.rs offline_access")
	if status != http.StatusOK || tok3["scope"] != "patient/Observation.rs offline_access" {
		t.Fatalf("narrowing refresh: %d %v", status, tok3)
	}
	// Reuse of a rotated token revokes the family: the newest refresh
	// token and the access tokens of the family stop working.
	if status, out := e.refresh(a, rt1, ""); status != http.StatusBadRequest || out["error"] != "invalid_grant" {
		t.Errorf("reuse: %d %v", status, out)
	}
	if status, out := e.refresh(a, tok3["refresh_token"].(string), ""); status != http.StatusBadRequest {
		t.Errorf("newest token after reuse: %d %v", status, out)
	}
	if _, err := e.verify(tok3["access_token"].(string), e.base("john")); !errors.Is(err, auth.ErrRevoked) {
		t.Errorf("access token after reuse: %v", err)
	}
	// Another client cannot use the refresh token.
	_, tok = e.exchange(a, e.codeFor(a, e.base("john"), "alice", p, fullScope), p)
	other := e.registerPublic()
	if status, _ := e.refresh(other, tok["refresh_token"].(string), ""); status != http.StatusBadRequest {
		t.Errorf("another client's refresh token: %d", status)
	}
}

func TestRevocation(t *testing.T) {
	e := newEnv(t, nil)
	a := e.registerPublic()
	p := newPKCE()
	_, tok := e.exchange(a, e.codeFor(a, e.base("john"), "alice", p, fullScope), p)
	if _, err := e.verify(tok["access_token"].(string), e.base("john")); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.RevokeApp(t.Context(), e.john.ID, a.id); err != nil {
		t.Fatal(err)
	}
	if _, err := e.verify(tok["access_token"].(string), e.base("john")); !errors.Is(err, auth.ErrRevoked) {
		t.Errorf("access token after the app was disconnected: %v", err)
	}
	if status, _ := e.refresh(a, tok["refresh_token"].(string), ""); status != http.StatusBadRequest {
		t.Errorf("refresh after the app was disconnected: %d", status)
	}
	if err := e.srv.RevokeApp(t.Context(), e.john.ID, a.id); !errors.Is(err, ErrNotFound) {
		t.Errorf("second revoke: %v", err)
	}
	// RFC 7009: the app revokes its own tokens.
	_, tok = e.exchange(a, e.codeFor(a, e.base("john"), "alice", p, fullScope), p)
	b := e.browser()
	b.post("/oauth/revoke", url.Values{"client_id": {a.id}, "token": {tok["access_token"].(string)}})
	if _, err := e.verify(tok["access_token"].(string), e.base("john")); !errors.Is(err, auth.ErrRevoked) {
		t.Errorf("revoked access token: %v", err)
	}
	b.post("/oauth/revoke", url.Values{"client_id": {a.id}, "token": {tok["refresh_token"].(string)}})
	if status, _ := e.refresh(a, tok["refresh_token"].(string), ""); status != http.StatusBadRequest {
		t.Errorf("revoked refresh token: %d", status)
	}
	// A member removed from the record can no longer get tokens.
	_, tok = e.exchange(a, e.codeFor(a, e.base("john"), "mark", p, fullScope), p)
	if err := e.tenants.Update(t.Context(), func(tx tenancy.Tx) error {
		acct, err := tx.AccountByIdentity(devIss, "mark")
		if err != nil {
			return err
		}
		return tx.DeleteMembership(e.john.ID, acct.ID)
	}); err != nil {
		t.Fatal(err)
	}
	if status, _ := e.refresh(a, tok["refresh_token"].(string), ""); status != http.StatusBadRequest {
		t.Errorf("refresh after the member left: %d", status)
	}
}

func TestIntrospection(t *testing.T) {
	e := newEnv(t, nil)
	a := e.registerPublic()
	p := newPKCE()
	_, tok := e.exchange(a, e.codeFor(a, e.base("john"), "alice", p, fullScope), p)
	b := e.browser()
	res := b.post("/oauth/introspect", url.Values{"client_id": {a.id}, "token": {tok["access_token"].(string)}})
	if res.status != http.StatusOK || !strings.Contains(res.body, `"active":true`) || !strings.Contains(res.body, `"patient":"p-john"`) {
		t.Errorf("introspect: %d %s", res.status, res.body)
	}
	res = b.post("/oauth/introspect", url.Values{"client_id": {a.id}, "token": {"garbage"}})
	if !strings.Contains(res.body, `"active":false`) {
		t.Errorf("introspect garbage: %s", res.body)
	}
	if res := b.post("/oauth/introspect", url.Values{"token": {tok["access_token"].(string)}}); res.status != http.StatusUnauthorized {
		t.Errorf("introspect without client: %d", res.status)
	}
}

func TestKeyRotation(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.KeyRotation = time.Hour })
	a := e.registerPublic()
	p := newPKCE()
	_, tok := e.exchange(a, e.codeFor(a, e.base("john"), "alice", p, fullScope), p)
	kid := func(tok string) string {
		t, _, _ := jwt.NewParser().ParseUnverified(tok, jwt.MapClaims{})
		return t.Header["kid"].(string)
	}
	old := kid(tok["access_token"].(string))
	e.clock.Add(time.Hour + time.Second)
	_, tok2 := e.refresh(a, tok["refresh_token"].(string), "")
	if kid(tok2["access_token"].(string)) == old {
		t.Fatal("the key did not rotate")
	}
	jwks := e.browser().get("/oauth/jwks").body
	if !strings.Contains(jwks, old) || !strings.Contains(jwks, kid(tok2["access_token"].(string))) {
		t.Errorf("the JWKS must hold the old and the new key: %s", jwks)
	}
	// Past every token's lifetime the old key leaves the JWKS.
	e.clock.Add(2*DefaultAccessTokenTTL + 2*time.Minute)
	_, tok3 := e.refresh(a, tok2["refresh_token"].(string), "")
	if tok3["access_token"] == nil {
		t.Fatalf("refresh: %v", tok3)
	}
	if jwks := e.browser().get("/oauth/jwks").body; strings.Contains(jwks, old) {
		t.Errorf("the retired key is still published: %s", jwks)
	}
	if _, err := e.srv.keys.Key(t.Context(), old); err == nil {
		t.Error("the retired key still verifies")
	}
}

// Two nodes share the state: a token from one verifies on the other (the
// keys are shared), and a revocation on one reaches the other within
// StatusTTL.
func TestTwoNodes(t *testing.T) {
	e := newEnv(t, nil)
	other, err := New(t.Context(), e.srv.cfg)
	if err != nil {
		t.Fatal(err)
	}
	v2, err := auth.NewVerifier([]auth.IssuerConfig{other.IssuerConfig()}, auth.Options{Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	a := e.registerPublic()
	p := newPKCE()
	_, tok := e.exchange(a, e.codeFor(a, e.base("john"), "alice", p, fullScope), p)
	access := tok["access_token"].(string)
	if _, err := v2.Verify(t.Context(), access, []string{e.base("john")}); err != nil {
		t.Fatalf("the other node refused the token: %v", err)
	}
	if err := e.srv.RevokeApp(t.Context(), e.john.ID, a.id); err != nil {
		t.Fatal(err)
	}
	if _, err := e.verify(access, e.base("john")); !errors.Is(err, auth.ErrRevoked) {
		t.Errorf("the revoking node: %v, want ErrRevoked at once", err)
	}
	e.clock.Add(StatusTTL)
	if _, err := v2.Verify(t.Context(), access, []string{e.base("john")}); !errors.Is(err, auth.ErrRevoked) {
		t.Errorf("the other node after %v: %v, want ErrRevoked", StatusTTL, err)
	}
}
