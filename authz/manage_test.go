package authz

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/pfrgateway/caddy-pfr/auth"
)

// registration is a client's registration answer.
type registration struct {
	id, uri, token, secret string
	body                   map[string]any
}

func (e *env) register(meta map[string]any) registration {
	e.t.Helper()
	res := e.browser().postJSON("/oauth/register", meta)
	if res.status != http.StatusCreated {
		e.t.Fatalf("register: %d %s", res.status, res.body)
	}
	var out map[string]any
	_ = json.Unmarshal([]byte(res.body), &out)
	reg := registration{body: out}
	reg.id, _ = out["client_id"].(string)
	reg.uri, _ = out["registration_client_uri"].(string)
	reg.token, _ = out["registration_access_token"].(string)
	reg.secret, _ = out["client_secret"].(string)
	return reg
}

// manage calls a client configuration endpoint (RFC 7592) with token.
func (e *env) manage(method, uri, token string, body any) (answer, map[string]any) {
	e.t.Helper()
	var req *http.Request
	if body != nil {
		req, _ = http.NewRequest(method, uri, strings.NewReader(jsonString(body)))
		req.Header.Set("Content-Type", "application/json")
	} else {
		req, _ = http.NewRequest(method, uri, nil)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res := e.browser().do(req)
	var out map[string]any
	_ = json.Unmarshal([]byte(res.body), &out)
	return res, out
}

const (
	redirectA = "https://app.example/a"
	redirectB = "https://app.example/b"
)

// RFC 7592 for a public app: read, update (the token rotates), delete (its
// grants and tokens end), and the attacks: no token, a wrong one, another
// client's, the old one after rotation, a static client's endpoint.
func TestClientManagement(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.Clients = []StaticClient{{ID: "kiosk", Name: "Kiosk", RedirectURIs: []string{"http://localhost:3000/cb"}}}
	})
	reg := e.register(map[string]any{"client_name": "Diary", "redirect_uris": []string{redirectA},
		"token_endpoint_auth_method": "none", "grant_types": []string{"authorization_code", "refresh_token"}})
	if reg.uri != e.issuer+"/oauth/register/"+reg.id || len(reg.token) < 40 {
		t.Fatalf("registration lacks the configuration endpoint or token: %v", reg.body)
	}
	other := e.register(map[string]any{"client_name": "Other", "redirect_uris": []string{redirectB}, "token_endpoint_auth_method": "none"})

	// Read.
	res, out := e.manage("GET", reg.uri, reg.token, nil)
	if res.status != http.StatusOK || out["client_id"] != reg.id || out["client_name"] != "Diary" || out["registration_client_uri"] != reg.uri ||
		out["registration_access_token"] != reg.token || out["client_secret"] != nil || res.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("read: %d %s", res.status, res.body)
	}
	// Refused alike: no token, a wrong one, another client's, at a static
	// client's or an unknown client's endpoint; nothing tells them apart.
	for name, c := range map[string]struct{ uri, token string }{
		"wrong token":       {reg.uri, "x" + reg.token},
		"another's token":   {reg.uri, other.token},
		"static client":     {e.issuer + "/oauth/register/kiosk", reg.token},
		"unknown client":    {e.issuer + "/oauth/register/c-nobody", reg.token},
		"basic, not bearer": {reg.uri, ""},
	} {
		for _, method := range []string{"GET", "PUT", "DELETE"} {
			var body any
			if method == "PUT" {
				body = map[string]any{"client_id": reg.id, "redirect_uris": []string{"https://evil.example/cb"}, "token_endpoint_auth_method": "none"}
			}
			res, out := e.manage(method, c.uri, c.token, body)
			if res.status != http.StatusUnauthorized || !strings.HasPrefix(res.header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%s %s: %d %s %v", name, method, res.status, res.header.Get("WWW-Authenticate"), out)
			}
		}
	}
	if res, _ := e.manage("POST", reg.uri, reg.token, map[string]any{}); res.status != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", res.status)
	}
	// The client still is as registered.
	if res, out := e.manage("GET", reg.uri, reg.token, nil); res.status != http.StatusOK || out["redirect_uris"].([]any)[0] != redirectA {
		t.Fatalf("after the attacks: %d %s", res.status, res.body)
	}

	// An approval and its tokens.
	a := app{id: reg.id, redirect: redirectA}
	p := newPKCE()
	_, tok := e.exchange(a, e.codeFor(a, e.base("john"), "alice", p, fullScope), p)
	access, _ := tok["access_token"].(string)
	if _, err := e.verify(access, e.base("john")); err != nil {
		t.Fatal(err)
	}
	// A request started for redirectA, approved after the update drops it.
	pending := e.browser()
	page := pending.consentPage(a, e.base("john"), fullScope, "alice", newPKCE())

	// Update refusals leave the client and its token as they were.
	for name, c := range map[string]struct {
		body map[string]any
		code string
	}{
		"no client_id":      {map[string]any{"redirect_uris": []string{redirectB}, "token_endpoint_auth_method": "none"}, "invalid_request"},
		"another client_id": {map[string]any{"client_id": other.id, "redirect_uris": []string{redirectB}}, "invalid_request"},
		"a chosen secret":   {map[string]any{"client_id": reg.id, "client_secret": "mine", "redirect_uris": []string{redirectB}}, "invalid_client_metadata"},
		"another method":    {map[string]any{"client_id": reg.id, "redirect_uris": []string{redirectB}, "token_endpoint_auth_method": "client_secret_basic"}, "invalid_client_metadata"},
		"javascript":        {map[string]any{"client_id": reg.id, "redirect_uris": []string{"javascript:alert(1)"}}, "invalid_redirect_uri"},
		"no redirect":       {map[string]any{"client_id": reg.id}, "invalid_redirect_uri"},
		"implicit":          {map[string]any{"client_id": reg.id, "redirect_uris": []string{redirectB}, "grant_types": []string{"implicit"}}, "invalid_client_metadata"},
	} {
		if res, out := e.manage("PUT", reg.uri, reg.token, c.body); res.status != http.StatusBadRequest || out["error"] != c.code {
			t.Errorf("update with %s: %d %s", name, res.status, res.body)
		}
	}

	// Update: a new name and return address; the token rotates.
	res, out = e.manage("PUT", reg.uri, reg.token, map[string]any{"client_id": reg.id, "client_name": "Diary 2",
		"redirect_uris": []string{redirectB}, "grant_types": []string{"authorization_code", "refresh_token"},
		"registration_client_uri": reg.uri, "client_id_issued_at": 1}) // echoed fields are ignored
	if res.status != http.StatusOK || out["client_name"] != "Diary 2" || out["registration_access_token"] == reg.token || out["token_endpoint_auth_method"] != "none" {
		t.Fatalf("update: %d %s", res.status, res.body)
	}
	rotated := out["registration_access_token"].(string)
	// The old token is dead for every method (a stolen copy is worthless).
	for _, method := range []string{"GET", "PUT", "DELETE"} {
		var body any
		if method == "PUT" {
			body = map[string]any{"client_id": reg.id, "redirect_uris": []string{"https://evil.example/cb"}}
		}
		if res, _ := e.manage(method, reg.uri, reg.token, body); res.status != http.StatusUnauthorized {
			t.Errorf("old token after rotation, %s: %d", method, res.status)
		}
	}
	if res, out := e.manage("GET", reg.uri, rotated, nil); res.status != http.StatusOK || out["redirect_uris"].([]any)[0] != redirectB {
		t.Fatalf("read with the new token: %d %s", res.status, res.body)
	}
	// The dropped return address is refused at authorize (a page, never
	// a redirect) and at the pending approval; the new one works.
	if res := e.browser().get(e.authorizeURL(a, e.base("john"), fullScope, newPKCE())); res.status != http.StatusBadRequest || res.header.Get("Location") != "" {
		t.Errorf("authorize with the dropped redirect_uri: %d %s", res.status, res.header.Get("Location"))
	}
	if res := pending.approve(page, strings.Fields(fullScope)...); res.status != http.StatusBadRequest || res.header.Get("Location") != "" {
		t.Errorf("approval for the dropped redirect_uri: %d %s", res.status, res.header.Get("Location"))
	}
	b := app{id: reg.id, redirect: redirectB}
	pb := newPKCE()
	status, tokB := e.exchange(b, e.codeFor(b, e.base("john"), "alice", pb, fullScope), pb)
	if status != http.StatusOK {
		t.Fatalf("the new redirect_uri: %d %v", status, tokB)
	}
	// (This approval replaced the first: that one's tokens are gone.)
	access = tokB["access_token"].(string)
	tok = tokB
	apps, _ := e.srv.Apps(t.Context(), e.john.ID)
	if len(apps) != 1 || apps[0].ClientName != "Diary 2" {
		t.Errorf("apps after the update: %+v", apps)
	}
	// A narrower registered scope bounds the refreshes from then on.
	res, out = e.manage("PUT", reg.uri, rotated, map[string]any{"client_id": reg.id, "client_name": "Diary 2",
		"redirect_uris": []string{redirectB}, "grant_types": []string{"authorization_code", "refresh_token"},
		"scope": "patient/Observation.rs offline_access"})
	if res.status != http.StatusOK {
		t.Fatalf("narrowing the scope: %d %s", res.status, res.body)
	}
	rotated = out["registration_access_token"].(string)
	status, narrowed := e.refresh(b, tok["refresh_token"].(string), "")
	if got := strings.Fields(fmt.Sprint(narrowed["scope"])); status != http.StatusOK || len(got) != 2 || !slices.Contains(got, "patient/Observation.rs") || !slices.Contains(got, "offline_access") {
		t.Fatalf("refresh after narrowing: %d %v", status, narrowed)
	}
	tok["refresh_token"] = narrowed["refresh_token"]

	// Delete, with another client's token first.
	if res, _ := e.manage("DELETE", reg.uri, other.token, nil); res.status != http.StatusUnauthorized {
		t.Errorf("delete with another client's token: %d", res.status)
	}
	if res, _ := e.manage("DELETE", reg.uri, rotated, nil); res.status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", res.status, res.body)
	}
	if _, err := e.verify(access, e.base("john")); !errors.Is(err, auth.ErrRevoked) {
		t.Errorf("access token of a deleted client: %v", err)
	}
	if status, out := e.refresh(a, tok["refresh_token"].(string), ""); status != http.StatusUnauthorized || out["error"] != "invalid_client" {
		t.Errorf("refresh of a deleted client: %d %v", status, out)
	}
	if apps, _ := e.srv.Apps(t.Context(), e.john.ID); len(apps) != 0 {
		t.Errorf("apps after delete: %+v", apps)
	}
	if gs, _ := e.srv.cfg.Store.ClientGrants(t.Context(), reg.id); len(gs) != 0 {
		t.Errorf("grants after delete: %+v", gs)
	}
	for _, method := range []string{"GET", "DELETE"} {
		if res, _ := e.manage(method, reg.uri, rotated, nil); res.status != http.StatusUnauthorized {
			t.Errorf("%s after delete: %d", method, res.status)
		}
	}
	if res := e.browser().get(e.authorizeURL(b, e.base("john"), fullScope, newPKCE())); res.status != http.StatusBadRequest || res.header.Get("Location") != "" {
		t.Errorf("authorize for a deleted client: %d", res.status)
	}
	// The other client was not touched.
	if res, _ := e.manage("GET", other.uri, other.token, nil); res.status != http.StatusOK {
		t.Errorf("the other client: %d", res.status)
	}

	// Registration off: no configuration endpoint either.
	off := newEnv(t, func(c *Config) { c.DisableRegistration = true })
	if res, _ := off.manage("GET", off.issuer+"/oauth/register/"+reg.id, rotated, nil); res.status != http.StatusNotFound {
		t.Errorf("registration off: %d", res.status)
	}
}

// A confidential client keeps its secret across an update (it can neither
// read nor choose it); a backend client's new keys replace the old at once,
// and its deletion ends its backend grants.
func TestClientManagementSecretsAndKeys(t *testing.T) {
	e := newEnv(t, nil)
	conf := e.register(map[string]any{"client_name": "Clinic", "redirect_uris": []string{redirectA}})
	if conf.secret == "" {
		t.Fatal("no secret")
	}
	if res, out := e.manage("GET", conf.uri, conf.token, nil); res.status != http.StatusOK || out["client_secret"] != nil || out["client_secret_expires_at"] != float64(0) {
		t.Errorf("read shows the secret: %s", res.body)
	}
	if res, out := e.manage("PUT", conf.uri, conf.token, map[string]any{"client_id": conf.id, "client_secret": "x" + conf.secret, "redirect_uris": []string{redirectB}}); res.status != http.StatusBadRequest || out["error"] != "invalid_client_metadata" {
		t.Errorf("update with a wrong secret: %d %s", res.status, res.body)
	}
	res, out := e.manage("PUT", conf.uri, conf.token, map[string]any{"client_id": conf.id, "client_secret": conf.secret, "redirect_uris": []string{redirectB}})
	if res.status != http.StatusOK || out["token_endpoint_auth_method"] != "client_secret_basic" || out["client_secret"] != nil {
		t.Fatalf("update with the secret: %d %s", res.status, res.body)
	}
	a := app{id: conf.id, secret: conf.secret, redirect: redirectB}
	p := newPKCE()
	if status, out := e.exchange(a, e.codeFor(a, e.base("john"), "alice", p, fullScope), p); status != http.StatusOK {
		t.Errorf("the secret after the update: %d %v", status, out)
	}

	// A backend client rotates its key.
	key1, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	key2, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	breg := e.register(map[string]any{"client_name": "Lab", "grant_types": []string{"client_credentials"},
		"token_endpoint_auth_method": "private_key_jwt", "jwks": rsaJWKS(t, key1, "k1")})
	bc := &backendClient{e: e, id: breg.id, key: key1}
	if _, err := e.srv.GrantBackend(t.Context(), e.john.ID, e.accountID("alice"), devIss, "alice", bc.id, []string{"system/Observation.rs"}); err != nil {
		t.Fatal(err)
	}
	johnToken := e.discoveredToken("john")
	if status, out := bc.tokenAt(johnToken, "", nil); status != http.StatusOK {
		t.Fatalf("backend token: %d %v", status, out)
	}
	res, out = e.manage("PUT", breg.uri, breg.token, map[string]any{"client_id": bc.id, "client_name": "Lab",
		"grant_types": []string{"client_credentials"}, "jwks": rsaJWKS(t, key2, "k1")})
	if res.status != http.StatusOK {
		t.Fatalf("new keys: %d %s", res.status, res.body)
	}
	if status, out := bc.tokenAt(johnToken, "", nil); status != http.StatusUnauthorized || out["error"] != "invalid_client" {
		t.Errorf("the old key after rotation: %d %v", status, out)
	}
	bc.key = key2
	status, tok := bc.tokenAt(johnToken, "", nil)
	if status != http.StatusOK {
		t.Fatalf("the new key: %d %v", status, tok)
	}
	if res, _ := e.manage("DELETE", breg.uri, out["registration_access_token"].(string), nil); res.status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", res.status, res.body)
	}
	if _, err := e.verify(tok["access_token"].(string), e.base("john")); !errors.Is(err, auth.ErrRevoked) {
		t.Errorf("backend token of a deleted client: %v", err)
	}
	if status, out := bc.tokenAt(johnToken, "", url.Values{}); status != http.StatusUnauthorized {
		t.Errorf("token request of a deleted client: %d %v", status, out)
	}
	if apps, _ := e.srv.Apps(t.Context(), e.john.ID); len(apps) != 1 || apps[0].ClientID != conf.id {
		t.Errorf("apps after deleting the backend client: %+v", apps)
	}
}
