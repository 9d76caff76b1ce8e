package authz

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pfrgateway/caddy-pfr/internal/kv"
	"github.com/pfrgateway/caddy-pfr/tenancy"
)

// backendClient is a SMART Backend Services client shaped like the stock
// ones: it reads token_endpoint from the record's SMART configuration,
// signs its assertion for that URL and posts grant_type, scope and the
// assertion, nothing else (no resource, no aud).
type backendClient struct {
	e   *env
	id  string
	key *rsa.PrivateKey
}

func (e *env) registerBackend() *backendClient {
	e.t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		e.t.Fatal(err)
	}
	res := e.browser().postJSON("/oauth/register", map[string]any{
		"client_name": "Lab system", "grant_types": []string{"client_credentials"},
		"token_endpoint_auth_method": "private_key_jwt", "jwks": rsaJWKS(e.t, key, "k1"),
	})
	var reg map[string]any
	_ = json.Unmarshal([]byte(res.body), &reg)
	if res.status != http.StatusCreated {
		e.t.Fatalf("register: %d %s", res.status, res.body)
	}
	return &backendClient{e: e, id: reg["client_id"].(string), key: key}
}

// tokenAt posts a stock request to tokenURL, the assertion audienced to
// aud ("" = tokenURL), with extra parameters if any.
func (c *backendClient) tokenAt(tokenURL, aud string, extra url.Values) (int, map[string]any) {
	e := c.e
	e.t.Helper()
	if aud == "" {
		aud = tokenURL
	}
	now := e.clock.Now()
	as := jwt.NewWithClaims(jwt.SigningMethodRS384, jwt.MapClaims{"iss": c.id, "sub": c.id, "aud": aud,
		"jti": randomToken(8), "iat": now.Unix(), "exp": now.Add(time.Minute).Unix()})
	as.Header["kid"] = "k1"
	signed, err := as.SignedString(c.key)
	if err != nil {
		e.t.Fatal(err)
	}
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {"system/Observation.rs"},
		"client_assertion_type": {assertionType}, "client_assertion": {signed}}
	for k, v := range extra {
		form[k] = v
	}
	res := e.browser().post(tokenURL, form)
	var out map[string]any
	if err := json.Unmarshal([]byte(res.body), &out); err != nil {
		e.t.Fatalf("token answer %d is not JSON: %s", res.status, res.body)
	}
	return res.status, out
}

// discoveredToken is the token endpoint a stock client finds for slug.
func (e *env) discoveredToken(slug string) string {
	return e.srv.SMARTConfiguration(slug)["token_endpoint"].(string)
}

func (e *env) accountID(sub string) string {
	e.t.Helper()
	var id string
	err := e.tenants.View(e.t.Context(), func(tx tenancy.Tx) error {
		acct, err := tx.AccountByIdentity(devIss, sub)
		if err == nil {
			id = acct.ID
		}
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

// SMART Backend Services as stock clients send them: the record is the one
// whose token endpoint the client discovered, or at the issuer's token
// endpoint the only record whose owner granted the client; a client no
// owner granted, a record another owner granted and an ambiguous request
// are clear OAuth errors.
func TestBackendServicesStandardClient(t *testing.T) {
	e := newEnv(t, nil)
	lab := e.registerBackend()
	johnToken, bobToken, apexToken := e.discoveredToken("john"), e.discoveredToken("bob"), e.issuer+"/oauth/token"
	if johnToken == apexToken || !strings.HasPrefix(johnToken, e.srv.recordOrigin("john")+"/") {
		t.Fatalf("john's token endpoint %s is not on john's host", johnToken)
	}
	wantErr := func(name string, status int, out map[string]any, code string) {
		t.Helper()
		if status != http.StatusBadRequest || out["error"] != code || out["error_description"] == "" || out["access_token"] != nil {
			t.Errorf("%s: %d %v, want 400 %s", name, status, out, code)
		}
	}

	// No owner granted the client yet.
	status, out := lab.tokenAt(johnToken, "", nil)
	wantErr("no grant, record endpoint", status, out, "invalid_grant")
	status, out = lab.tokenAt(apexToken, "", nil)
	wantErr("no grant, issuer endpoint", status, out, "invalid_grant")

	// Alice, john's owner, grants it.
	if _, err := e.srv.GrantBackend(t.Context(), e.john.ID, e.accountID("alice"), devIss, "alice", lab.id, []string{"system/Observation.rs"}); err != nil {
		t.Fatal(err)
	}
	tokenFor := func(name, endpoint, slug string) {
		t.Helper()
		status, out := lab.tokenAt(endpoint, "", nil)
		if status != http.StatusOK || out["scope"] != "system/Observation.rs" {
			t.Fatalf("%s: %d %v", name, status, out)
		}
		id, err := e.verify(out["access_token"].(string), e.base(slug))
		if err != nil || id.ClientID != lab.id {
			t.Fatalf("%s: the token does not open %s: %v", name, slug, err)
		}
	}
	tokenFor("discovered endpoint", johnToken, "john")
	tokenFor("issuer endpoint, one granted record", apexToken, "john")

	// Bob's record: its owner granted nothing, whatever the client names.
	status, out = lab.tokenAt(bobToken, "", nil)
	wantErr("bob's endpoint", status, out, "invalid_grant")
	status, out = lab.tokenAt(bobToken, "", url.Values{"resource": {e.base("john")}})
	wantErr("bob's endpoint naming john", status, out, "invalid_target")
	status, out = lab.tokenAt(johnToken, "", url.Values{"resource": {e.base("bob")}})
	wantErr("john's endpoint naming bob", status, out, "invalid_target")
	// An assertion for bob's endpoint is not accepted at john's.
	if status, out := lab.tokenAt(johnToken, bobToken, nil); status != http.StatusUnauthorized || out["error"] != "invalid_client" {
		t.Errorf("assertion audienced to another record's endpoint: %d %v", status, out)
	}
	// No record at that host; other paths on a record host are not the server's.
	if res := e.browser().post(e.srv.recordOrigin("nobody")+"/oauth/token", url.Values{}); res.status != http.StatusNotFound || !strings.Contains(res.body, "invalid_request") {
		t.Errorf("token endpoint of no record: %d %s", res.status, res.body)
	}
	if res := e.browser().get(e.srv.recordOrigin("john") + "/oauth/authorize"); res.status != http.StatusNotFound {
		t.Errorf("authorize on a record host: %d", res.status)
	}

	// Bob grants it too: each record's endpoint gives that record; the
	// issuer's endpoint cannot tell which, unless resource says.
	if _, err := e.srv.GrantBackend(t.Context(), e.bob.ID, e.accountID("bob"), devIss, "bob", lab.id, []string{"system/Observation.rs"}); err != nil {
		t.Fatal(err)
	}
	tokenFor("john's endpoint, two grants", johnToken, "john")
	tokenFor("bob's endpoint, two grants", bobToken, "bob")
	status, out = lab.tokenAt(apexToken, "", nil)
	wantErr("issuer endpoint, two granted records", status, out, "invalid_target")
	if status, out := lab.tokenAt(apexToken, "", url.Values{"resource": {e.base("bob")}}); status != http.StatusOK {
		t.Errorf("issuer endpoint naming bob: %d %v", status, out)
	}

	// Revoked on john: the issuer's endpoint is unambiguous again (bob).
	if err := e.srv.RevokeApp(t.Context(), e.john.ID, lab.id); err != nil {
		t.Fatal(err)
	}
	status, out = lab.tokenAt(johnToken, "", nil)
	wantErr("john's endpoint after revocation", status, out, "invalid_grant")
	tokenFor("issuer endpoint after john revoked", apexToken, "bob")

	// Another client no owner granted gets nothing anywhere.
	other := e.registerBackend()
	for _, ep := range []string{johnToken, bobToken, apexToken} {
		status, out := other.tokenAt(ep, "", nil)
		wantErr("ungranted client at "+ep, status, out, "invalid_grant")
	}
}

// State written before the grants-by-client index existed gets it at the
// next start, so a backend client's only grant is found.
func TestClientIndexBuiltAtStart(t *testing.T) {
	e := newEnv(t, nil)
	lab := e.registerBackend()
	if _, err := e.srv.GrantBackend(t.Context(), e.john.ID, e.accountID("alice"), devIss, "alice", lab.id, []string{"system/Observation.rs"}); err != nil {
		t.Fatal(err)
	}
	db := e.srv.cfg.Store.(*KVStore).db
	// As an older version left it: no client index.
	err := db.Update(t.Context(), owner, func(tx kv.Tx) error {
		b := tx.Bucket(bucketClientIx)
		var keys [][]byte
		_ = b.ForEach(func(k, _ []byte) error { keys = append(keys, bytes.Clone(k)); return nil })
		for _, k := range keys {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if gs, _ := e.srv.cfg.Store.ClientGrants(t.Context(), lab.id); len(gs) != 0 {
		t.Fatal("the index was not emptied")
	}
	store, err := NewStore(db)
	if err != nil {
		t.Fatal(err)
	}
	gs, err := store.ClientGrants(t.Context(), lab.id)
	if err != nil || len(gs) != 1 || gs[0].RecordID != e.john.ID {
		t.Fatalf("after the start: %+v %v", gs, err)
	}
}
