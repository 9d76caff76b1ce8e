package auth

import (
	"context"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

func newTestVerifier(t *testing.T, clock *testkit.Clock, issuers ...IssuerConfig) *Verifier {
	t.Helper()
	v, err := NewVerifier(issuers, Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestVerifyAcceptsEveryKeyType(t *testing.T) {
	keys := []signingKey{
		newRSAKey(t, "rs256", jwt.SigningMethodRS256),
		newRSAKey(t, "rs512", jwt.SigningMethodRS512),
		newRSAKey(t, "ps256", jwt.SigningMethodPS256),
		newECKey(t, "es256", elliptic.P256(), jwt.SigningMethodES256),
		newECKey(t, "es384", elliptic.P384(), jwt.SigningMethodES384),
		newECKey(t, "es512", elliptic.P521(), jwt.SigningMethodES512),
		newEdKey(t, "eddsa"),
	}
	iss := newTestIssuer(t, keys...)
	clock := testkit.NewClock()
	v := newTestVerifier(t, clock, IssuerConfig{Issuer: iss.issuer()})
	for _, k := range keys {
		t.Run(k.kid, func(t *testing.T) {
			claims := claimsFor(iss.issuer(), clock.Now(), testAud)
			claims["client_id"] = "app-" + k.kid
			id, err := v.Verify(context.Background(), k.sign(t, claims), []string{testAud})
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if id.Issuer != iss.issuer() || id.Subject != "alice" || id.ClientID != "app-"+k.kid {
				t.Errorf("identity = %+v", id)
			}
			if !slices.Equal(id.Scopes, []string{"openid", "patient/*.rs"}) {
				t.Errorf("scopes = %q", id.Scopes)
			}
			if !slices.Equal(id.Audience, []string{testAud}) {
				t.Errorf("audience = %q", id.Audience)
			}
			if !id.ExpiresAt.Equal(clock.Now().Add(time.Hour)) {
				t.Errorf("expires = %v", id.ExpiresAt)
			}
		})
	}
	if got := iss.jwksFetches.Load(); got != 1 {
		t.Errorf("JWKS fetched %d times, want 1", got)
	}
	if got := iss.discoveryFetches.Load(); got != 1 {
		t.Errorf("discovery fetched %d times, want 1", got)
	}
}

func TestVerifyRejectsAttacks(t *testing.T) {
	clock := testkit.NewClock()
	now := clock.Now()
	rsaKey := newRSAKey(t, "a-rsa", jwt.SigningMethodRS256)
	edKey := newEdKey(t, "a-ed")
	issA := newTestIssuer(t, rsaKey, edKey)
	otherKey := newECKey(t, "b-ec", elliptic.P256(), jwt.SigningMethodES256)
	issB := newTestIssuer(t, otherKey)
	v := newTestVerifier(t, clock, IssuerConfig{Issuer: issA.issuer()}, IssuerConfig{Issuer: issB.issuer()})
	a := issA.issuer()

	with := func(change func(jwt.MapClaims)) jwt.MapClaims {
		c := claimsFor(a, now, testAud)
		change(c)
		return c
	}
	valid := rsaKey.sign(t, claimsFor(a, now, testAud))
	parts := strings.Split(valid, ".")
	encode := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}

	// alg none.
	noneTok := jwt.NewWithClaims(jwt.SigningMethodNone, claimsFor(a, now, testAud))
	noneTok.Header["kid"] = rsaKey.kid
	none, err := noneTok.SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	// HS256 with the issuer's RSA public key (PEM) as the HMAC secret.
	der, _ := x509.MarshalPKIXPublicKey(rsaKey.priv.Public().(*rsa.PublicKey))
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	hsTok := jwt.NewWithClaims(jwt.SigningMethodHS256, claimsFor(a, now, testAud))
	hsTok.Header["kid"] = rsaKey.kid
	hs256, err := hsTok.SignedString(pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	// The same with the JWK's modulus bytes as the secret.
	hsTok2 := jwt.NewWithClaims(jwt.SigningMethodHS256, claimsFor(a, now, testAud))
	hs256n, _ := hsTok2.SignedString(rsaKey.priv.Public().(*rsa.PublicKey).N.Bytes())
	// An RSA signature presented as EdDSA: the alg does not fit the key.
	edHeader := encode(map[string]any{"alg": "EdDSA", "kid": rsaKey.kid, "typ": "JWT"})
	algMismatch := edHeader + "." + parts[1] + "." + parts[2]
	// Issuer B's key under issuer A's kid, and under its own kid.
	bKeyAKid := signingKey{kid: edKey.kid, method: jwt.SigningMethodEdDSA, priv: newEdKey(t, "x").priv}
	// Payload changed after signing.
	tampered := parts[0] + "." + encode(with(func(c jwt.MapClaims) { c["sub"] = "mallory" })) + "." + parts[2]
	crit := encode(map[string]any{"alg": "RS256", "kid": rsaKey.kid, "crit": []string{"exp"}}) + "." + parts[1] + "." + parts[2]

	tests := []struct {
		name  string
		token string
		want  error
	}{
		{"alg none", none, ErrAlgorithm},
		{"HS256 with RSA public key PEM as secret", hs256, ErrAlgorithm},
		{"HS256 with RSA modulus as secret", hs256n, ErrAlgorithm},
		{"alg does not fit key", algMismatch, ErrAlgorithm},
		{"unknown issuer", rsaKey.sign(t, with(func(c jwt.MapClaims) { c["iss"] = "https://evil.example" })), ErrUnknownIssuer},
		{"issuer with trailing slash is another issuer", rsaKey.sign(t, with(func(c jwt.MapClaims) { c["iss"] = a + "/" })), ErrUnknownIssuer},
		{"missing iss", rsaKey.sign(t, with(func(c jwt.MapClaims) { delete(c, "iss") })), ErrMissingClaim},
		{"iss not a string", rsaKey.sign(t, with(func(c jwt.MapClaims) { c["iss"] = 42 })), ErrMissingClaim},
		{"issuer A claims, issuer B key and kid", otherKey.sign(t, claimsFor(a, now, testAud)), ErrUnknownKey},
		{"issuer A claims and kid, another key", bKeyAKid.sign(t, claimsFor(a, now, testAud)), ErrBadSignature},
		{"issuer B claims, issuer A key", rsaKey.sign(t, claimsFor(issB.issuer(), now, testAud)), ErrUnknownKey},
		{"tampered payload", tampered, ErrBadSignature},
		{"wrong aud", rsaKey.sign(t, with(func(c jwt.MapClaims) { c["aud"] = "https://mary.pfr.localhost/fhir" })), ErrBadAudience},
		{"wrong aud array", rsaKey.sign(t, with(func(c jwt.MapClaims) { c["aud"] = []string{"x", "y"} })), ErrBadAudience},
		{"no aud", rsaKey.sign(t, with(func(c jwt.MapClaims) { delete(c, "aud") })), ErrBadAudience},
		{"expired", rsaKey.sign(t, with(func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Minute).Unix() })), ErrExpired},
		{"nbf in the future", rsaKey.sign(t, with(func(c jwt.MapClaims) { c["nbf"] = now.Add(time.Minute).Unix() })), ErrNotYetValid},
		{"iat in the future", rsaKey.sign(t, with(func(c jwt.MapClaims) { c["iat"] = now.Add(time.Minute).Unix() })), ErrNotYetValid},
		{"missing exp", rsaKey.sign(t, with(func(c jwt.MapClaims) { delete(c, "exp") })), ErrMissingClaim},
		{"exp not a number", rsaKey.sign(t, with(func(c jwt.MapClaims) { c["exp"] = "tomorrow" })), ErrMalformed},
		{"missing sub", rsaKey.sign(t, with(func(c jwt.MapClaims) { delete(c, "sub") })), ErrMissingClaim},
		{"unknown kid", signingKey{kid: "nope", method: rsaKey.method, priv: rsaKey.priv}.sign(t, claimsFor(a, now, testAud)), ErrUnknownKey},
		{"critical header", crit, ErrMalformed},
		{"empty", "", ErrMalformed},
		{"one segment", "abc", ErrMalformed},
		{"two segments", "abc.def", ErrMalformed},
		{"four segments", valid + ".x", ErrMalformed},
		{"header not base64", "%%%." + parts[1] + "." + parts[2], ErrMalformed},
		{"header not JSON", base64.RawURLEncoding.EncodeToString([]byte("nope")) + "." + parts[1] + "." + parts[2], ErrMalformed},
		{"payload not JSON", parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte("[")) + "." + parts[2], ErrMalformed},
		{"signature not base64", parts[0] + "." + parts[1] + ".%%%", ErrMalformed},
		{"oversized", parts[0] + "." + strings.Repeat("A", maxTokenBytes) + "." + parts[2], ErrMalformed},
		// Malleability: the same bytes spelled differently are not the token.
		{"signature with unused bits set", parts[0] + "." + parts[1] + "." + flipUnusedBits(t, parts[2]), ErrMalformed},
		{"header with unused bits set", flipUnusedBits(t, parts[0]) + "." + parts[1] + "." + parts[2], ErrMalformed},
		{"payload with unused bits set", parts[0] + "." + flipUnusedBits(t, parts[1]) + "." + parts[2], ErrMalformed},
		{"padded signature", parts[0] + "." + parts[1] + "." + parts[2] + "==", ErrMalformed},
		{"standard base64 alphabet", parts[0] + "." + parts[1] + "." + strings.NewReplacer("-", "+", "_", "/").Replace(parts[2]), ErrMalformed},
		{"whitespace in signature", parts[0] + "." + parts[1] + "." + parts[2][:10] + "\n" + parts[2][10:], ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := v.Verify(context.Background(), tt.token, []string{testAud})
			if err == nil {
				t.Fatalf("Verify accepted the token: %+v", id)
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("error = %v, want %v", err, tt.want)
			}
			var te *TokenError
			if !errors.As(err, &te) {
				t.Fatalf("error %T is not a *TokenError", err)
			}
			msg := err.Error() + " " + WWWAuthenticate("pfr", err)
			if tt.token != "" && strings.Contains(msg, tt.token) || strings.Contains(msg, "BEGIN") ||
				strings.Contains(msg, rsaKey.jwk()["n"].(string)[:20]) {
				t.Errorf("error message leaks token or key material: %s", msg)
			}
		})
	}
	// The valid token itself passes, so the failures above are the attacks'.
	if _, err := v.Verify(context.Background(), valid, []string{testAud}); err != nil {
		t.Fatalf("valid token refused: %v", err)
	}
}

func TestVerifyLeeway(t *testing.T) {
	clock := testkit.NewClock()
	key := newEdKey(t, "k")
	iss := newTestIssuer(t, key)
	v := newTestVerifier(t, clock, IssuerConfig{Issuer: iss.issuer()})
	c := claimsFor(iss.issuer(), clock.Now(), testAud)
	c["exp"] = clock.Now().Add(-20 * time.Second).Unix()
	c["nbf"] = clock.Now().Add(20 * time.Second).Unix()
	c["iat"] = clock.Now().Add(20 * time.Second).Unix()
	if _, err := v.Verify(context.Background(), key.sign(t, c), []string{testAud}); err != nil {
		t.Fatalf("token within the 30s leeway refused: %v", err)
	}
}

func TestVerifyAudienceShapes(t *testing.T) {
	clock := testkit.NewClock()
	key := newRSAKey(t, "k", jwt.SigningMethodPS384)
	iss := newTestIssuer(t, key)
	v := newTestVerifier(t, clock, IssuerConfig{Issuer: iss.issuer(), Audiences: []string{"urn:gateway"}})
	now := clock.Now()
	tests := []struct {
		name      string
		aud       any
		requested []string
		ok        bool
	}{
		{"string", testAud, []string{testAud}, true},
		{"array containing it", []string{"https://other", testAud}, []string{testAud}, true},
		{"configured audience", "urn:gateway", []string{testAud}, true},
		{"configured audience in array", []string{"x", "urn:gateway"}, nil, true},
		{"requested is one of several", testAud, []string{"https://a", testAud}, true},
		{"empty string", "", []string{testAud}, false},
		{"prefix only", testAud + "/Patient", []string{testAud}, false},
		{"nothing requested", testAud, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := v.Verify(context.Background(), key.sign(t, claimsFor(iss.issuer(), now, tt.aud)), tt.requested)
			if tt.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tt.ok && !errors.Is(err, ErrBadAudience) {
				t.Fatalf("error = %v, want ErrBadAudience", err)
			}
		})
	}
}

func TestVerifyScopeAndClientIDClaims(t *testing.T) {
	clock := testkit.NewClock()
	key := newECKey(t, "k", elliptic.P256(), jwt.SigningMethodES256)
	iss := newTestIssuer(t, key)
	custom := newTestIssuer(t, key)
	v := newTestVerifier(t, clock,
		IssuerConfig{Issuer: iss.issuer()},
		IssuerConfig{Issuer: custom.issuer(), ScopeClaims: []string{"permissions"}, ClientIDClaims: []string{"client"}},
	)
	now := clock.Now()
	tests := []struct {
		name       string
		iss        string
		set        map[string]any
		wantScopes []string
		wantClient string
	}{
		{"scope string", iss.issuer(), map[string]any{"scope": "openid  patient/Observation.rs\tlaunch"}, []string{"openid", "patient/Observation.rs", "launch"}, ""},
		{"scp array", iss.issuer(), map[string]any{"scope": nil, "scp": []string{"patient/Observation.rs", "user/*.cruds"}}, []string{"patient/Observation.rs", "user/*.cruds"}, ""},
		{"scp string", iss.issuer(), map[string]any{"scope": nil, "scp": "user/*.read"}, []string{"user/*.read"}, ""},
		{"both, deduplicated", iss.issuer(), map[string]any{"scope": "a b", "scp": []any{"b", "c", 7}}, []string{"a", "b", "c"}, ""},
		{"azp", iss.issuer(), map[string]any{"azp": "app1"}, []string{"openid", "patient/*.rs"}, "app1"},
		{"client_id wins over azp", iss.issuer(), map[string]any{"azp": "app1", "client_id": "app2"}, []string{"openid", "patient/*.rs"}, "app2"},
		{"appid (Azure)", iss.issuer(), map[string]any{"appid": "az"}, []string{"openid", "patient/*.rs"}, "az"},
		{"custom claim names", custom.issuer(), map[string]any{"scope": "ignored", "permissions": []string{"system/*.rs"}, "client": "svc", "client_id": "not-this"}, []string{"system/*.rs"}, "svc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := claimsFor(tt.iss, now, testAud)
			for k, val := range tt.set {
				if val == nil {
					delete(c, k)
				} else {
					c[k] = val
				}
			}
			id, err := v.Verify(context.Background(), key.sign(t, c), []string{testAud})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(id.Scopes, tt.wantScopes) || id.ClientID != tt.wantClient {
				t.Errorf("scopes %q client %q, want %q %q", id.Scopes, id.ClientID, tt.wantScopes, tt.wantClient)
			}
		})
	}
}

func TestVerifyKeyRotation(t *testing.T) {
	clock := testkit.NewClock()
	old := newRSAKey(t, "old", jwt.SigningMethodRS256)
	next := newECKey(t, "next", elliptic.P384(), jwt.SigningMethodES384)
	iss := newTestIssuer(t, old)
	v, err := NewVerifier([]IssuerConfig{{Issuer: iss.issuer()}}, Options{
		Now: clock.Now, MinRefetchInterval: time.Minute, JWKSCacheTTL: 10 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	verify := func(k signingKey) error {
		_, err := v.Verify(ctx, k.sign(t, claimsFor(iss.issuer(), clock.Now(), testAud)), []string{testAud})
		return err
	}
	oldToken := old.sign(t, claimsFor(iss.issuer(), clock.Now(), testAud))
	if _, err := v.Verify(ctx, oldToken, []string{testAud}); err != nil {
		t.Fatal(err)
	}

	// The issuer publishes a new key; within the refetch interval an
	// unknown kid is refused without a fetch, after it the key is picked up.
	iss.publish(old, next)
	if err := verify(next); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("new kid within refetch interval: %v, want ErrUnknownKey", err)
	}
	clock.Advance(time.Minute)
	if err := verify(next); err != nil {
		t.Fatalf("new kid after refetch interval: %v", err)
	}
	if got := iss.jwksFetches.Load(); got != 2 {
		t.Fatalf("JWKS fetched %d times, want 2", got)
	}

	// The issuer removes the old key: it keeps working until the JWKS cache
	// period ends (counted from the last fetch), then stops, also for a
	// token verified and cached before.
	iss.publish(next)
	clock.Advance(5 * time.Minute)
	if err := verify(old); err != nil {
		t.Fatalf("old key within cache TTL: %v", err)
	}
	if _, err := v.Verify(ctx, oldToken, []string{testAud}); err != nil {
		t.Fatalf("cached old token within cache TTL: %v", err)
	}
	clock.Advance(5 * time.Minute)
	if err := verify(old); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("old key after cache TTL: %v, want ErrUnknownKey", err)
	}
	if _, err := v.Verify(ctx, oldToken, []string{testAud}); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("cached old token after cache TTL: %v, want ErrUnknownKey", err)
	}
	if err := verify(next); err != nil {
		t.Fatalf("current key after rotation: %v", err)
	}
}

func TestVerifyRefetchRateBound(t *testing.T) {
	clock := testkit.NewClock()
	key := newEdKey(t, "k")
	iss := newTestIssuer(t, key)
	v := newTestVerifier(t, clock, IssuerConfig{Issuer: iss.issuer()})
	ctx := context.Background()
	if _, err := v.Verify(ctx, key.sign(t, claimsFor(iss.issuer(), clock.Now(), testAud)), []string{testAud}); err != nil {
		t.Fatal(err)
	}
	unknown := func(i int) error {
		k := signingKey{kid: fmt.Sprintf("forged-%d", i), method: key.method, priv: key.priv}
		_, err := v.Verify(ctx, k.sign(t, claimsFor(iss.issuer(), clock.Now(), testAud)), []string{testAud})
		return err
	}
	for i := range 50 {
		if err := unknown(i); !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("unknown kid %d: %v", i, err)
		}
	}
	if got := iss.jwksFetches.Load(); got != 1 {
		t.Fatalf("50 unknown kids within the interval caused %d fetches, want 1 in total", got)
	}
	clock.Advance(defaultMinRefetch)
	for i := range 50 {
		if err := unknown(100 + i); !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("unknown kid: %v", err)
		}
	}
	if got := iss.jwksFetches.Load(); got != 2 {
		t.Fatalf("after one interval: %d fetches, want 2", got)
	}
}

func TestVerifyConcurrentColdFetchIsShared(t *testing.T) {
	clock := testkit.NewClock()
	key := newRSAKey(t, "k", jwt.SigningMethodRS256)
	iss := newTestIssuer(t, key)
	v := newTestVerifier(t, clock, IssuerConfig{Issuer: iss.issuer()})
	var wg sync.WaitGroup
	errs := make([]error, 16)
	for i := range errs {
		token := key.sign(t, jwt.MapClaims{"iss": iss.issuer(), "sub": fmt.Sprint("user", i), "aud": testAud, "exp": clock.Now().Add(time.Hour).Unix()})
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = v.Verify(context.Background(), token, []string{testAud})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("goroutine %d: %v", i, err)
		}
	}
	if got := iss.jwksFetches.Load(); got != 1 {
		t.Errorf("16 concurrent cold verifications made %d JWKS fetches, want 1", got)
	}
}

func TestVerifyTokenCache(t *testing.T) {
	clock := testkit.NewClock()
	key := newEdKey(t, "k")
	iss := newTestIssuer(t, key)
	v, err := NewVerifier([]IssuerConfig{{Issuer: iss.issuer(), Audiences: []string{"urn:apex"}}}, Options{Now: clock.Now, TokenCacheSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	token := key.sign(t, claimsFor(iss.issuer(), clock.Now(), testAud))
	if _, err := v.Verify(ctx, token, []string{testAud}); err != nil {
		t.Fatal(err)
	}
	if v.cache.len() != 1 {
		t.Fatalf("cache holds %d entries, want 1", v.cache.len())
	}
	// Other spellings of the cached token are not the token: a line
	// break, a signature with its unused bits set.
	parts := strings.Split(token, ".")
	for _, other := range []string{
		parts[0] + "." + parts[1] + "." + parts[2][:10] + "\n" + parts[2][10:],
		parts[0] + "." + parts[1] + "." + flipUnusedBits(t, parts[2]),
	} {
		if _, err := v.Verify(ctx, other, []string{testAud}); !errors.Is(err, ErrMalformed) {
			t.Fatalf("another spelling of the cached token: %v, want ErrMalformed", err)
		}
	}
	// A cache hit still checks the audience requested now.
	if _, err := v.Verify(ctx, token, []string{"https://mary.pfr.localhost/fhir"}); !errors.Is(err, ErrBadAudience) {
		t.Fatalf("cached token for another audience: %v, want ErrBadAudience", err)
	}
	if _, err := v.Verify(ctx, token, []string{testAud}); err != nil {
		t.Fatalf("cached token: %v", err)
	}
	// A cache hit does not outlive the token.
	clock.Advance(time.Hour + defaultLeeway + time.Second)
	if _, err := v.Verify(ctx, token, []string{testAud}); !errors.Is(err, ErrExpired) {
		t.Fatalf("cached token after exp: %v, want ErrExpired", err)
	}
	// The cache is bounded.
	for i := range 5 {
		c := claimsFor(iss.issuer(), clock.Now(), testAud)
		c["sub"] = fmt.Sprint("user", i)
		if _, err := v.Verify(ctx, key.sign(t, c), []string{testAud}); err != nil {
			t.Fatal(err)
		}
	}
	if v.cache.len() != 2 {
		t.Fatalf("cache holds %d entries, want its bound 2", v.cache.len())
	}
}

func TestVerifyIssuerFailures(t *testing.T) {
	key := newEdKey(t, "k")
	tests := []struct {
		name  string
		setup func(ti *testIssuer)
	}{
		{"discovery names another issuer", func(ti *testIssuer) { ti.discoveryIssuer = "https://evil.example" }},
		{"oversized JWKS", func(ti *testIssuer) {
			ti.jwksOverride = []byte(`{"keys":[],"pad":"` + strings.Repeat("x", maxDocumentBytes) + `"}`)
		}},
		{"discovery names plain-http JWKS off loopback", func(ti *testIssuer) { ti.jwksURI = "http://idp.example/jwks" }},
		{"discovery names no JWKS", func(ti *testIssuer) { ti.jwksURI = "urn:none" }},
		{"JWKS not JSON", func(ti *testIssuer) { ti.jwksOverride = []byte("<html>") }},
		{"JWKS without keys", func(ti *testIssuer) { ti.jwksOverride = []byte(`{}`) }},
		{"JWKS server error", func(ti *testIssuer) { ti.jwksStatus = http.StatusInternalServerError }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := testkit.NewClock()
			iss := newTestIssuer(t, key)
			iss.set(tt.setup)
			v := newTestVerifier(t, clock, IssuerConfig{Issuer: iss.issuer()})
			token := key.sign(t, claimsFor(iss.issuer(), clock.Now(), testAud))
			for range 3 {
				if _, err := v.Verify(context.Background(), token, []string{testAud}); !errors.Is(err, ErrKeysUnavailable) {
					t.Fatalf("error = %v, want ErrKeysUnavailable", err)
				}
			}
			if n := iss.discoveryFetches.Load() + iss.jwksFetches.Load(); n > 2 {
				t.Errorf("3 failing verifications made %d fetches: failures must be rate-bound too", n)
			}
		})
	}
}

func TestVerifyExplicitJWKSURLSkipsDiscovery(t *testing.T) {
	clock := testkit.NewClock()
	key := newECKey(t, "k", elliptic.P521(), jwt.SigningMethodES512)
	iss := newTestIssuer(t, key)
	const issuer = "https://idp.example/realms/pfr"
	v := newTestVerifier(t, clock, IssuerConfig{Issuer: issuer, JWKSURL: iss.srv.URL + "/jwks"})
	if _, err := v.Verify(context.Background(), key.sign(t, claimsFor(issuer, clock.Now(), testAud)), []string{testAud}); err != nil {
		t.Fatal(err)
	}
	if iss.discoveryFetches.Load() != 0 {
		t.Error("discovery fetched although a JWKS URL is configured")
	}
}

func TestVerifyKidlessTokens(t *testing.T) {
	clock := testkit.NewClock()
	only := newEdKey(t, "only")
	kidless := signingKey{method: only.method, priv: only.priv}
	single := newTestIssuer(t, only)
	rsa1 := newRSAKey(t, "r1", jwt.SigningMethodRS256)
	rsa2 := newRSAKey(t, "r2", jwt.SigningMethodRS256)
	several := newTestIssuer(t, rsa1, rsa2, newEdKey(t, "e"))
	v := newTestVerifier(t, clock, IssuerConfig{Issuer: single.issuer()}, IssuerConfig{Issuer: several.issuer()})
	ctx := context.Background()
	if _, err := v.Verify(ctx, kidless.sign(t, claimsFor(single.issuer(), clock.Now(), testAud)), []string{testAud}); err != nil {
		t.Fatalf("kid-less token with one key: %v", err)
	}
	// Two RSA keys: ambiguous for RS256 even though an Ed25519 key exists.
	noKid := signingKey{method: rsa1.method, priv: rsa1.priv}
	if _, err := v.Verify(ctx, noKid.sign(t, claimsFor(several.issuer(), clock.Now(), testAud)), []string{testAud}); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("kid-less token with several keys: %v, want ErrUnknownKey", err)
	}
}

func TestVerifierDiscovery(t *testing.T) {
	clock := testkit.NewClock()
	iss := newTestIssuer(t, newEdKey(t, "k"))
	dev, err := LoadOrCreateDevIssuer(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	v := newTestVerifier(t, clock, IssuerConfig{Issuer: iss.issuer()}, dev.Config())
	doc, err := v.Discovery(context.Background(), iss.issuer())
	if err != nil {
		t.Fatal(err)
	}
	if doc["token_endpoint"] != iss.srv.URL+"/token" {
		t.Errorf("token_endpoint = %v", doc["token_endpoint"])
	}
	doc["issuer"] = "changed"
	if again, _ := v.Discovery(context.Background(), iss.issuer()); again["issuer"] != iss.issuer() {
		t.Error("Discovery returned the cached map itself")
	}
	if _, err := v.Discovery(context.Background(), dev.Issuer()); err == nil {
		t.Error("a static-key issuer has no discovery document")
	}
	if _, err := v.Discovery(context.Background(), "https://unknown"); err == nil {
		t.Error("an untrusted issuer has no discovery document")
	}
	if got := v.Issuers(); len(got) != 2 {
		t.Errorf("Issuers() = %q", got)
	}
}

func TestNewVerifierRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name    string
		issuers []IssuerConfig
	}{
		{"empty issuer", []IssuerConfig{{JWKSURL: "https://x/jwks"}}},
		{"URN issuer without keys", []IssuerConfig{{Issuer: "urn:x"}}},
		{"bad JWKS URL", []IssuerConfig{{Issuer: "urn:x", JWKSURL: "file:///etc/passwd"}}},
		{"duplicate", []IssuerConfig{{Issuer: "https://a"}, {Issuer: "https://a"}}},
		{"plain-http issuer off loopback", []IssuerConfig{{Issuer: "http://idp.example"}}},
		{"plain-http JWKS off loopback", []IssuerConfig{{Issuer: "https://idp.example", JWKSURL: "http://idp.example/jwks"}}},
		{"http issuer on a look-alike host", []IssuerConfig{{Issuer: "http://localhost.evil.example"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewVerifier(tt.issuers, Options{}); err == nil {
				t.Fatal("NewVerifier accepted a bad configuration")
			}
		})
	}
}

func TestNewVerifierAcceptsGoodConfig(t *testing.T) {
	good := []IssuerConfig{
		{Issuer: "https://idp.example/realms/pfr"},
		{Issuer: "urn:pfr:partner", JWKSURL: "https://keys.partner.example/jwks"},
		{Issuer: "http://127.0.0.1:3000"},
		{Issuer: "http://[::1]:3000"},
		{Issuer: "http://localhost:3000"},
		{Issuer: "http://auth.pfr.localhost"},
	}
	if _, err := NewVerifier(good, Options{}); err != nil {
		t.Fatal(err)
	}
}

func TestWWWAuthenticate(t *testing.T) {
	tests := []struct {
		realm string
		err   error
		want  string
	}{
		{"pfr", nil, `Bearer realm="pfr"`},
		{"", nil, `Bearer`},
		{"pfr", tokenErr(ErrExpired, "token expired", nil), `Bearer realm="pfr", error="invalid_token", error_description="token expired"`},
		{"pfr", errors.New("other"), `Bearer realm="pfr", error="invalid_token", error_description="the access token is invalid"`},
		{`a"b\c`, tokenErr(ErrMalformed, "bad \"quote\"\n", nil), `Bearer realm="a_b_c", error="invalid_token", error_description="bad _quote__"`},
	}
	for _, tt := range tests {
		if got := WWWAuthenticate(tt.realm, tt.err); got != tt.want {
			t.Errorf("WWWAuthenticate(%q, %v) = %s, want %s", tt.realm, tt.err, got, tt.want)
		}
	}
	if got := WWWAuthenticateInsufficientScope("pfr", "patient/Observation.r"); got != `Bearer realm="pfr", error="insufficient_scope", scope="patient/Observation.r"` {
		t.Errorf("insufficient scope header = %s", got)
	}
}

func TestVerifyGivesUpWhenContextEnds(t *testing.T) {
	clock := testkit.NewClock()
	key := newEdKey(t, "k")
	release := make(chan struct{})
	blocking := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		http.Error(w, "late", http.StatusServiceUnavailable)
	}))
	defer blocking.Close()
	defer close(release) // runs before Close, so the handler can return
	const issuer = "https://slow.example"
	v := newTestVerifier(t, clock, IssuerConfig{Issuer: issuer, JWKSURL: blocking.URL})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := v.Verify(ctx, key.sign(t, claimsFor(issuer, clock.Now(), testAud)), []string{testAud})
	if !errors.Is(err, ErrKeysUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("error = %v, want ErrKeysUnavailable caused by context.Canceled", err)
	}
}

// flipUnusedBits returns seg, a base64url segment, with the last character
// changed only in bits the decoder ignores: a non-canonical spelling of the
// same bytes. It fails the test when seg has no unused bits.
func flipUnusedBits(t *testing.T, seg string) string {
	t.Helper()
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	if len(seg)%4 == 0 {
		t.Fatalf("segment %q has no unused bits", seg)
	}
	last := strings.IndexByte(alphabet, seg[len(seg)-1])
	flipped := seg[:len(seg)-1] + string(alphabet[last^1])
	a, err1 := base64.RawURLEncoding.DecodeString(seg)
	b, err2 := base64.RawURLEncoding.DecodeString(flipped)
	if err1 != nil || err2 != nil || string(a) != string(b) {
		t.Fatalf("flipping did not keep the bytes: %v %v", err1, err2)
	}
	return flipped
}

// TestCompactJWS: exactly the base64url alphabet and '.' pass, whatever
// the byte (a line break would make another spelling of a cached token).
func TestCompactJWS(t *testing.T) {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
	for c := range 256 {
		want := strings.IndexByte(alphabet, byte(c)) >= 0
		if got := compactJWS(string([]byte{'a', byte(c), 'b'})); got != want {
			t.Errorf("byte %#x: compactJWS %v, want %v", c, got, want)
		}
	}
	if !compactJWS("") {
		t.Error("the empty string has no byte outside the alphabet")
	}
}
