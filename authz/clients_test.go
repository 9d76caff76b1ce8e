package authz

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/egress"
	"github.com/pfrgateway/caddy-pfr/tenancy"
)

func TestRegistrationRefusals(t *testing.T) {
	e := newEnv(t, nil)
	b := e.browser()
	// RFC 7591 section 3.2.2: invalid_redirect_uri for the redirect URIs,
	// invalid_client_metadata for the rest.
	for name, meta := range map[string]map[string]any{
		"http to a public host": {"redirect_uris": []string{"http://app.example/cb"}, "token_endpoint_auth_method": "none"},
		"javascript":            {"redirect_uris": []string{"javascript:alert(1)"}, "token_endpoint_auth_method": "none"},
		"fragment":              {"redirect_uris": []string{"https://app.example/cb#x"}, "token_endpoint_auth_method": "none"},
		"no redirect":           {"token_endpoint_auth_method": "none"},
	} {
		if res := b.postJSON("/oauth/register", meta); res.status != http.StatusBadRequest || !strings.Contains(res.body, `"invalid_redirect_uri"`) {
			t.Errorf("%s: %d %s", name, res.status, res.body)
		}
	}
	for name, meta := range map[string]map[string]any{
		"jwks_uri":              {"redirect_uris": []string{"https://app.example/cb"}, "token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "http://169.254.169.254/keys"},
		"private_key_jwt alone": {"redirect_uris": []string{"https://app.example/cb"}, "token_endpoint_auth_method": "private_key_jwt"},
		"implicit":              {"redirect_uris": []string{"https://app.example/cb"}, "grant_types": []string{"implicit"}},
		"password":              {"redirect_uris": []string{"https://app.example/cb"}, "grant_types": []string{"password"}},
		"client_secret_post":    {"redirect_uris": []string{"https://app.example/cb"}, "token_endpoint_auth_method": "client_secret_post"},
		"token response type":   {"redirect_uris": []string{"https://app.example/cb"}, "response_types": []string{"token"}},
	} {
		if res := b.postJSON("/oauth/register", meta); res.status != http.StatusBadRequest || !strings.Contains(res.body, `"invalid_client_metadata"`) {
			t.Errorf("%s: %d %s", name, res.status, res.body)
		}
	}
	if res := b.postJSON("/oauth/register", "not an object"); res.status != http.StatusBadRequest {
		t.Errorf("garbage: %d", res.status)
	}
}

func TestConfidentialClientSecret(t *testing.T) {
	e := newEnv(t, nil)
	res := e.browser().postJSON("/oauth/register", map[string]any{
		"client_name": "Clinic", "redirect_uris": []string{"https://clinic.example/cb"},
		"grant_types": []string{"authorization_code", "refresh_token"},
	})
	var reg map[string]any
	_ = json.Unmarshal([]byte(res.body), &reg)
	if res.status != http.StatusCreated || reg["client_secret"] == nil || reg["token_endpoint_auth_method"] != "client_secret_basic" {
		t.Fatalf("register: %d %s", res.status, res.body)
	}
	a := app{id: reg["client_id"].(string), secret: reg["client_secret"].(string), redirect: "https://clinic.example/cb"}
	p := newPKCE()
	code := e.codeFor(a, e.base("john"), "alice", p, fullScope)
	// Without its secret (as if public) the client is refused.
	if status, out := e.token(app{id: a.id, redirect: a.redirect}, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {a.redirect}, "code_verifier": {p.verifier}}); status != http.StatusUnauthorized || out["error"] != "invalid_client" {
		t.Errorf("no secret: %d %v", status, out)
	}
	wrong := a
	wrong.secret = "x" + a.secret
	if status, _ := e.exchange(wrong, code, p); status != http.StatusUnauthorized {
		t.Errorf("wrong secret: %d", status)
	}
	if status, out := e.exchange(a, code, p); status != http.StatusOK {
		t.Errorf("right secret: %d %v", status, out)
	}
}

func rsaJWKS(t *testing.T, key *rsa.PrivateKey, kid string) json.RawMessage {
	t.Helper()
	raw, _ := json.Marshal(map[string]any{"keys": []any{map[string]any{
		"kty": "RSA", "kid": kid, "alg": "RS384", "use": "sig",
		"n": b64(key.N.Bytes()), "e": b64(big.NewInt(int64(key.E)).Bytes()),
	}}})
	return raw
}

func TestPrivateKeyJWT(t *testing.T) {
	e := newEnv(t, nil)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	res := e.browser().postJSON("/oauth/register", map[string]any{
		"client_name": "Signed app", "redirect_uris": []string{"https://signed.example/cb"},
		"token_endpoint_auth_method": "private_key_jwt", "jwks": rsaJWKS(t, key, "k1"),
		"grant_types": []string{"authorization_code"},
	})
	var reg map[string]any
	_ = json.Unmarshal([]byte(res.body), &reg)
	if res.status != http.StatusCreated || reg["client_secret"] != nil {
		t.Fatalf("register: %d %s", res.status, res.body)
	}
	a := app{id: reg["client_id"].(string), redirect: "https://signed.example/cb"}
	assertion := func(signer *rsa.PrivateKey, mod func(jwt.MapClaims)) string {
		now := e.clock.Now()
		c := jwt.MapClaims{"iss": a.id, "sub": a.id, "aud": e.issuer + "/oauth/token", "jti": randomToken(8),
			"iat": now.Unix(), "exp": now.Add(time.Minute).Unix()}
		if mod != nil {
			mod(c)
		}
		tok := jwt.NewWithClaims(jwt.SigningMethodRS384, c)
		tok.Header["kid"] = "k1"
		s, err := tok.SignedString(signer)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	p := newPKCE()
	exchange := func(code, as string) (int, map[string]any) {
		return e.token(a, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {a.redirect},
			"code_verifier": {p.verifier}, "client_assertion_type": {assertionType}, "client_assertion": {as}})
	}
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	for name, as := range map[string]string{
		"another key":    assertion(other, nil),
		"wrong audience": assertion(key, func(c jwt.MapClaims) { c["aud"] = "https://elsewhere.example/token" }),
		"long-lived":     assertion(key, func(c jwt.MapClaims) { c["exp"] = e.clock.Now().Add(time.Hour).Unix() }),
		"no jti":         assertion(key, func(c jwt.MapClaims) { delete(c, "jti") }),
		"sub differs":    assertion(key, func(c jwt.MapClaims) { c["sub"] = "someone" }),
	} {
		code := e.codeFor(a, e.base("john"), "alice", p, fullScope)
		if status, out := exchange(code, as); status != http.StatusUnauthorized || out["error"] != "invalid_client" {
			t.Errorf("%s: %d %v", name, status, out)
		}
	}
	code := e.codeFor(a, e.base("john"), "alice", p, fullScope)
	good := assertion(key, nil)
	if status, out := exchange(code, good); status != http.StatusOK || out["access_token"] == nil {
		t.Fatalf("good assertion: %d %v", status, out)
	}
	// The same assertion again: replay.
	code = e.codeFor(a, e.base("john"), "alice", p, fullScope)
	if status, out := exchange(code, good); status != http.StatusUnauthorized {
		t.Errorf("replayed assertion: %d %v", status, out)
	}
}

func TestStaticClients(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.Clients = []StaticClient{{ID: "my-app", Name: "My App", RedirectURIs: []string{"http://localhost:3000/cb"}}}
	})
	c, err := e.srv.cfg.Store.Client(t.Context(), "my-app")
	if err != nil || c.AuthMethod != "none" || !c.Static {
		t.Fatalf("static client %+v %v", c, err)
	}
	// A second start with other settings replaces it.
	if err := e.srv.putStaticClient(t.Context(), StaticClient{ID: "my-app", Secret: "s3cret-s3cret", RedirectURIs: []string{"https://x.example/cb"}}); err != nil {
		t.Fatal(err)
	}
	if c, _ := e.srv.cfg.Store.Client(t.Context(), "my-app"); c.AuthMethod != "client_secret_basic" {
		t.Errorf("replaced static client %+v", c)
	}
	// A registered client's id cannot be taken over by configuration.
	a := e.registerPublic()
	// Removed from the configuration, a static client is gone at the next
	// start; registered clients stay.
	cfg := e.srv.cfg
	cfg.Clients = nil
	if _, err := New(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := e.srv.cfg.Store.Client(t.Context(), "my-app"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a static client removed from the configuration: %v", err)
	}
	if _, err := e.srv.cfg.Store.Client(t.Context(), a.id); err != nil {
		t.Errorf("a registered client after a restart: %v", err)
	}
	if err := e.srv.putStaticClient(t.Context(), StaticClient{ID: a.id, RedirectURIs: []string{"https://x.example/cb"}}); err == nil {
		t.Error("a static client replaced a registered one")
	}
}

func TestBackendServices(t *testing.T) {
	e := newEnv(t, nil)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	b := e.browser()
	if res := b.postJSON("/oauth/register", map[string]any{"grant_types": []string{"client_credentials"}, "token_endpoint_auth_method": "client_secret_basic"}); res.status != http.StatusBadRequest {
		t.Errorf("client_credentials with a shared secret: %d %s", res.status, res.body)
	}
	res := b.postJSON("/oauth/register", map[string]any{
		"client_name": "Lab system", "grant_types": []string{"client_credentials"},
		"token_endpoint_auth_method": "private_key_jwt", "jwks": rsaJWKS(t, key, "k1"),
	})
	var reg map[string]any
	_ = json.Unmarshal([]byte(res.body), &reg)
	if res.status != http.StatusCreated {
		t.Fatalf("register: %d %s", res.status, res.body)
	}
	a := app{id: reg["client_id"].(string)}
	token := func(form url.Values) (int, map[string]any) {
		now := e.clock.Now()
		as := jwt.NewWithClaims(jwt.SigningMethodRS384, jwt.MapClaims{"iss": a.id, "sub": a.id, "aud": e.issuer + "/oauth/token",
			"jti": randomToken(8), "iat": now.Unix(), "exp": now.Add(time.Minute).Unix()})
		as.Header["kid"] = "k1"
		signed, _ := as.SignedString(key)
		form.Set("grant_type", "client_credentials")
		form.Set("client_assertion_type", assertionType)
		form.Set("client_assertion", signed)
		return e.token(a, form)
	}
	john := url.Values{"scope": {"system/Observation.rs system/Condition.rs"}, "resource": {e.base("john")}}
	if status, out := token(john); status != http.StatusBadRequest || out["error"] != "invalid_grant" {
		t.Errorf("before the owner granted it: %d %v", status, out)
	}
	var aliceID string
	_ = e.tenants.View(t.Context(), func(tx tenancy.Tx) error {
		acct, err := tx.AccountByIdentity(devIss, "alice")
		aliceID = acct.ID
		return err
	})
	if _, err := e.srv.GrantBackend(t.Context(), e.john.ID, aliceID, devIss, "alice", a.id, []string{"patient/Observation.rs"}); !errors.Is(err, ErrScope) {
		t.Errorf("granting a patient/ scope to a backend service: %v", err)
	}
	public := e.registerPublic()
	if _, err := e.srv.GrantBackend(t.Context(), e.john.ID, aliceID, devIss, "alice", public.id, []string{"system/Observation.rs"}); !errors.Is(err, ErrNotBackendClient) {
		t.Errorf("granting a public app backend access: %v", err)
	}
	if _, err := e.srv.GrantBackend(t.Context(), e.john.ID, aliceID, devIss, "alice", a.id, []string{"system/Observation.rs"}); err != nil {
		t.Fatal(err)
	}
	status, out := token(john)
	if status != http.StatusOK || out["scope"] != "system/Observation.rs" || out["refresh_token"] != nil || out["id_token"] != nil {
		t.Fatalf("backend token: %d %v", status, out)
	}
	id, err := e.verify(out["access_token"].(string), e.base("john"))
	if err != nil || id.Subject != "alice" || id.ClientID != a.id {
		t.Fatalf("backend token in the pipeline: %v %+v", err, id)
	}
	// Another record, an unknown host, a patient scope.
	for name, form := range map[string]url.Values{
		"bob":     {"scope": {"system/Observation.rs"}, "resource": {e.base("bob")}},
		"foreign": {"scope": {"system/Observation.rs"}, "resource": {"https://evil.example/fhir"}},
		"patient": {"scope": {"patient/Observation.rs"}, "resource": {e.base("john")}},
	} {
		if status, out := token(form); status != http.StatusBadRequest {
			t.Errorf("%s: %d %v", name, status, out)
		}
	}
	// Listed with the record's apps, revoked like them.
	if err := e.srv.RevokeApp(t.Context(), e.john.ID, a.id); err != nil {
		t.Fatal(err)
	}
	if _, err := e.verify(out["access_token"].(string), e.base("john")); !errors.Is(err, auth.ErrRevoked) {
		t.Errorf("backend token after revocation: %v", err)
	}
	if status, _ := token(john); status != http.StatusBadRequest {
		t.Errorf("backend token request after revocation: %d", status)
	}
}

// A private_key_jwt client may publish its keys at a jwks_uri, fetched
// through the outbound policy: never the gateway's own network unless the
// operator allows it.
func TestJWKSURI(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(rsaJWKS(t, key, "k1"))
	}))
	defer jwks.Close()
	meta := map[string]any{"client_name": "Lab", "grant_types": []string{"client_credentials"},
		"token_endpoint_auth_method": "private_key_jwt", "jwks_uri": jwks.URL + "/jwks"}

	// The default policy: loopback is refused, nothing is stored.
	strict := newEnv(t, func(c *Config) { c.Egress = &egress.Policy{} })
	if res := strict.browser().postJSON("/oauth/register", meta); res.status != http.StatusBadRequest || !strings.Contains(res.body, "invalid_client_metadata") {
		t.Errorf("jwks_uri on loopback under the default policy: %d %s", res.status, res.body)
	}
	// No policy at all: jwks_uri is not accepted.
	if res := newEnv(t, nil).browser().postJSON("/oauth/register", meta); res.status != http.StatusBadRequest {
		t.Errorf("jwks_uri without a policy: %d %s", res.status, res.body)
	}

	e := newEnv(t, func(c *Config) {
		c.Egress = &egress.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}
	})
	res := e.browser().postJSON("/oauth/register", meta)
	var reg map[string]any
	_ = json.Unmarshal([]byte(res.body), &reg)
	if res.status != http.StatusCreated || reg["jwks_uri"] != jwks.URL+"/jwks" {
		t.Fatalf("register with jwks_uri: %d %s", res.status, res.body)
	}
	a := app{id: reg["client_id"].(string)}
	var aliceID string
	_ = e.tenants.View(t.Context(), func(tx tenancy.Tx) error {
		acct, err := tx.AccountByIdentity(devIss, "alice")
		aliceID = acct.ID
		return err
	})
	if _, err := e.srv.GrantBackend(t.Context(), e.john.ID, aliceID, devIss, "alice", a.id, []string{"system/Observation.rs"}); err != nil {
		t.Fatal(err)
	}
	now := e.clock.Now()
	as := jwt.NewWithClaims(jwt.SigningMethodRS384, jwt.MapClaims{"iss": a.id, "sub": a.id, "aud": e.issuer + "/oauth/token",
		"jti": randomToken(8), "iat": now.Unix(), "exp": now.Add(time.Minute).Unix()})
	as.Header["kid"] = "k1"
	signed, _ := as.SignedString(key)
	status, out := e.token(a, url.Values{"grant_type": {"client_credentials"}, "scope": {"system/Observation.rs"},
		"resource": {e.base("john")}, "client_assertion_type": {assertionType}, "client_assertion": {signed}})
	if status != http.StatusOK || out["access_token"] == nil {
		t.Errorf("token with keys from jwks_uri: %d %v", status, out)
	}
}

// The access tokens of a static client removed from the configuration stop
// working (on another node within StatusTTL).
func TestRemovedStaticClient(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.Clients = []StaticClient{{ID: "kiosk", Name: "Kiosk", RedirectURIs: []string{"http://localhost:3000/cb"}}}
	})
	a := app{id: "kiosk", redirect: "http://localhost:3000/cb"}
	p := newPKCE()
	_, tok := e.exchange(a, e.codeFor(a, e.base("john"), "alice", p, fullScope), p)
	if _, err := e.verify(tok["access_token"].(string), e.base("john")); err != nil {
		t.Fatal(err)
	}
	cfg := e.srv.cfg
	cfg.Clients = nil
	if _, err := New(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(StatusTTL)
	if _, err := e.verify(tok["access_token"].(string), e.base("john")); !errors.Is(err, auth.ErrRevoked) {
		t.Errorf("a removed client's token: %v, want ErrRevoked", err)
	}
	if status, _ := e.refresh(a, tok["refresh_token"].(string), ""); status != http.StatusUnauthorized {
		t.Errorf("a removed client's refresh: %d", status)
	}
}
