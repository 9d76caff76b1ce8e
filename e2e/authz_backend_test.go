package e2e

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestBuiltinAuthzBackendService: SMART Backend Services through real
// Caddy, the client shaped like the stock ones: it finds the token
// endpoint in the record's SMART configuration and sends no resource or
// aud. A lab system registers with its public key; it gets no token for a
// record until the record's owner grants it system/ scopes; then it reads
// what was granted and nothing else, on that record only; the owner
// disconnects it and its token stops.
func TestBuiltinAuthzBackendService(t *testing.T) {
	dir := t.TempDir()
	e := loadGateway(t, dir, authzLines()+withStore(dir, ""), "")
	owner := e.token("alice")
	rec := e.createRecord(owner, "john-lab", "Doe", "John")
	pid := rec["patientId"].(string)
	e.createRecord(e.token("bob"), "bob-lab", "Roe", "Bob")
	e.do("POST", recordURL("john-lab", "/Observation"), owner, observation("Patient/"+pid, "8867-4")).Expect(t, http.StatusCreated, "observation")

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	reg := e.do("POST", apex("/oauth/register"), "", map[string]any{
		"client_name": "Lab system", "grant_types": []string{"client_credentials"}, "token_endpoint_auth_method": "private_key_jwt",
		"jwks": map[string]any{"keys": []any{map[string]any{"kty": "RSA", "kid": "lab-1", "alg": "RS384",
			"n": b64(key.N.Bytes()), "e": b64(big.NewInt(int64(key.E)).Bytes())}}},
	}, "Content-Type", "application/json").Expect(t, http.StatusCreated, "register")
	clientID := reg.Body["client_id"].(string)

	// token asks the token endpoint of slug's SMART configuration, as a
	// stock client does.
	token := func(slug, scope string) response {
		conf := e.do("GET", recordURL(slug, "/.well-known/smart-configuration"), "", nil).Expect(t, http.StatusOK, "smart-configuration")
		endpoint, _ := conf.Body["token_endpoint"].(string)
		if u, err := url.Parse(endpoint); err != nil || !strings.HasPrefix(u.Host, slug+".") {
			t.Fatalf("%s's token_endpoint %q is not on its host", slug, endpoint)
		}
		now := time.Now()
		as := jwt.NewWithClaims(jwt.SigningMethodRS384, jwt.MapClaims{"iss": clientID, "sub": clientID,
			"aud": endpoint, "jti": randomString(t), "iat": now.Unix(), "exp": now.Add(time.Minute).Unix()})
		as.Header["kid"] = "lab-1"
		signed, err := as.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		form := url.Values{"grant_type": {"client_credentials"}, "scope": {scope},
			"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {signed}}
		return e.do("POST", endpoint, "", form.Encode(), "Content-Type", "application/x-www-form-urlencoded")
	}
	john := "john-lab"
	token(john, "system/Observation.rs").Expect(t, http.StatusBadRequest, "token before the owner granted it")

	grant := apex("/pfr/v1/records/john-lab/apps/" + clientID)
	e.do("PUT", grant, e.token("bob"), map[string]any{"scope": "system/Observation.rs"}).ExpectOutcome(t, http.StatusNotFound, "a stranger granting")
	e.do("PUT", grant, owner, map[string]any{"scope": "patient/*.cruds"}).ExpectOutcome(t, http.StatusBadRequest, "a patient/ scope for a backend service")
	e.do("PUT", grant, owner, map[string]any{"scope": "system/Observation.rs"}).Expect(t, http.StatusOK, "grant")

	tok := token(john, "system/Observation.rs system/Condition.rs").Expect(t, http.StatusOK, "token")
	if tok.Body["scope"] != "system/Observation.rs" {
		t.Errorf("granted scope %v", tok.Body["scope"])
	}
	access := tok.Body["access_token"].(string)
	e.do("GET", recordURL("john-lab", "/Observation"), access, nil).Expect(t, http.StatusOK, "granted read")
	e.do("GET", recordURL("john-lab", "/Condition"), access, nil).ExpectOutcome(t, http.StatusForbidden, "ungranted type")
	e.do("POST", recordURL("john-lab", "/Observation"), access, observation("Patient/"+pid, "1-1")).ExpectOutcome(t, http.StatusForbidden, "write with a read grant")
	// aud of another record: the token is no good there, and no token is
	// issued for it.
	e.do("GET", recordURL("bob-lab", "/Observation"), access, nil).ExpectOutcome(t, http.StatusUnauthorized, "another record")
	token("bob-lab", "system/Observation.rs").Expect(t, http.StatusBadRequest, "token for another record")

	apps := e.do("GET", apex("/pfr/v1/records/john-lab/apps"), owner, nil).Expect(t, http.StatusOK, "apps")
	if list, _ := apps.Body["apps"].([]any); len(list) != 1 || list[0].(map[string]any)["clientName"] != "Lab system" {
		t.Errorf("apps %s", apps.Raw)
	}
	e.do("DELETE", grant, owner, nil).Expect(t, http.StatusNoContent, "disconnect")
	e.do("GET", recordURL("john-lab", "/Observation"), access, nil).ExpectOutcome(t, http.StatusUnauthorized, "after disconnect")
	token(john, "system/Observation.rs").Expect(t, http.StatusBadRequest, "token after disconnect")
}
