package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestSMARTKeyRotation rotates the provider's signing key while the gateway
// runs. With the default 10-minute JWKS cache, a token of a new key is
// accepted at once (its unknown kid makes the gateway fetch the keys again)
// and a retired key keeps working while the cached keys are fresh. Reloaded
// with a 1-second cache, a retired key stops working once the cache period
// has passed, while the current key goes on working.
func TestSMARTKeyRotation(t *testing.T) {
	p := startProvider(t)
	dir := t.TempDir()
	// jwks_min_refetch is lowered so that the unknown kid right after the
	// first fetch may trigger a refetch (default: at most once a minute).
	e := startSmartGatewayIn(t, dir, p.issuer, "\t\tjwks_min_refetch 10ms")
	alice := e.token("alice")
	rec := e.createRecord(alice, "alice-rotate", "Smith", "Alice")
	base := rec["fhirBase"].(string)
	patient := recordURL("alice-rotate", "/Patient/"+rec["patientId"].(string))
	mgmt := p.clientCredentials(t, backendClientID, backendClientSecret, managementAudience(), "")
	e.joinRecord(alice, "alice-rotate", "viewer", mgmt.AccessToken)

	tokenA := p.clientCredentials(t, backendClientID, backendClientSecret, base, "system/*.rs")
	kidA := tokenA.header(t)["kid"]
	e.do("GET", patient, tokenA.AccessToken, nil).Expect(t, http.StatusOK, "token of the first key")

	// A new signing key: its tokens work at once, through a refetch of the
	// JWKS on the unknown kid (the cached keys are fresh for 10 minutes).
	rotated := p.adminPost(t, "/admin/keys/rotate", nil)
	tokenB := p.clientCredentials(t, backendClientID, backendClientSecret, base, "system/*.rs")
	if kidB := tokenB.header(t)["kid"]; kidB != rotated["kid"] || kidB == kidA {
		t.Fatalf("after rotation the provider signs with %v, want the new key %v (old %v)", kidB, rotated["kid"], kidA)
	}
	e.do("GET", patient, tokenB.AccessToken, nil).Expect(t, http.StatusOK, "token of the new key")
	e.do("GET", patient, tokenA.AccessToken, nil).Expect(t, http.StatusOK, "token of the old key, still published")

	// The old key retired: within the cache period its tokens still work
	// (nothing made the gateway look again: the kid is known).
	p.adminPost(t, "/admin/keys/retire?kid="+kidA.(string), nil)
	e.do("GET", patient, tokenA.AccessToken, nil).Expect(t, http.StatusOK, "retired key within the 10-minute cache period")

	// A token naming a kid the provider never published is refused, even
	// though it makes the gateway fetch the keys again.
	parts := strings.Split(tokenB.AccessToken, ".")
	unknownKid := encodeClaims(t, map[string]any{"alg": "RS256", "typ": "at+jwt", "kid": "never-published"}) + "." + parts[1] + "." + parts[2]
	e.do("GET", patient, unknownKid, nil).ExpectOutcome(t, http.StatusUnauthorized, "unknown kid")

	// Same records, a 1-second JWKS cache: rotate again, retire the key of
	// tokenB, and its tokens stop working once the cache period has passed.
	e = startSmartGatewayIn(t, dir, p.issuer, "\t\tjwks_cache_ttl 1s\n\t\tjwks_min_refetch 10ms")
	e.do("GET", patient, tokenB.AccessToken, nil).Expect(t, http.StatusOK, "token of the current key after reload")
	e.do("GET", patient, tokenA.AccessToken, nil).ExpectOutcome(t, http.StatusUnauthorized, "retired key, fresh gateway")
	rotated = p.adminPost(t, "/admin/keys/rotate", nil)
	tokenC := p.clientCredentials(t, backendClientID, backendClientSecret, base, "system/*.rs")
	if tokenC.header(t)["kid"] != rotated["kid"] {
		t.Fatalf("second rotation: provider signs with %v, want %v", tokenC.header(t)["kid"], rotated["kid"])
	}
	p.adminPost(t, "/admin/keys/retire?kid="+tokenB.header(t)["kid"].(string), nil)

	// Bounded wait for the cache period (1 s) to pass: at most 30 tries.
	refused := false
	for try := 0; try < 30 && !refused; try++ {
		r := e.do("GET", patient, tokenB.AccessToken, nil)
		switch r.Status {
		case http.StatusOK:
			time.Sleep(500 * time.Millisecond)
		case http.StatusUnauthorized:
			refused = true
			if !strings.Contains(r.Header.Get("WWW-Authenticate"), "invalid_token") {
				t.Errorf("retired key: WWW-Authenticate = %q", r.Header.Get("WWW-Authenticate"))
			}
		default:
			t.Fatalf("retired key: status %d: %.300s", r.Status, r.Raw)
		}
	}
	if !refused {
		t.Fatal("a token of a retired key still works 15 s after retirement with a 1 s JWKS cache")
	}
	e.do("GET", patient, tokenC.AccessToken, nil).Expect(t, http.StatusOK, "token of the current key")
}
