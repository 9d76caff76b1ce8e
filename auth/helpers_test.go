package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// signingKey is a private key with its kid and algorithm.
type signingKey struct {
	kid    string
	method jwt.SigningMethod
	priv   crypto.Signer
}

func newRSAKey(t testing.TB, kid string, method jwt.SigningMethod) signingKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return signingKey{kid: kid, method: method, priv: k}
}

func newECKey(t testing.TB, kid string, curve elliptic.Curve, method jwt.SigningMethod) signingKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signingKey{kid: kid, method: method, priv: k}
}

func newEdKey(t testing.TB, kid string) signingKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signingKey{kid: kid, method: jwt.SigningMethodEdDSA, priv: k}
}

// jwk renders the public half as a JWK.
func (k signingKey) jwk() map[string]any {
	enc := base64.RawURLEncoding.EncodeToString
	m := map[string]any{"kid": k.kid, "use": "sig"}
	switch pub := k.priv.Public().(type) {
	case *rsa.PublicKey:
		m["kty"] = "RSA"
		m["n"] = enc(pub.N.Bytes())
		m["e"] = enc(big.NewInt(int64(pub.E)).Bytes())
	case *ecdsa.PublicKey:
		m["kty"] = "EC"
		m["crv"] = pub.Curve.Params().Name
		raw, err := pub.Bytes()
		if err != nil {
			panic(err)
		}
		size := (len(raw) - 1) / 2
		m["x"] = enc(raw[1 : 1+size])
		m["y"] = enc(raw[1+size:])
	case ed25519.PublicKey:
		m["kty"] = "OKP"
		m["crv"] = "Ed25519"
		m["x"] = enc(pub)
	}
	return m
}

func (k signingKey) sign(t testing.TB, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(k.method, claims)
	if k.kid != "" {
		tok.Header["kid"] = k.kid
	}
	s, err := tok.SignedString(k.priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testIssuer is an OIDC issuer on 127.0.0.1 serving discovery and a JWKS
// the test can change while it runs.
type testIssuer struct {
	srv *httptest.Server

	mu sync.Mutex
	// published are the keys in the JWKS.
	published []signingKey
	// jwksOverride, when set, is served instead of the JWKS.
	jwksOverride []byte
	// discoveryIssuer, when set, is the issuer the discovery document names.
	discoveryIssuer string
	// jwksURI, when set, is the jwks_uri the discovery document names.
	jwksURI    string
	jwksStatus int

	jwksFetches      atomic.Int64
	discoveryFetches atomic.Int64
}

func newTestIssuer(t testing.TB, keys ...signingKey) *testIssuer {
	t.Helper()
	ti := &testIssuer{published: keys}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		ti.discoveryFetches.Add(1)
		ti.mu.Lock()
		iss, jwksURI := ti.discoveryIssuer, ti.jwksURI
		ti.mu.Unlock()
		if iss == "" {
			iss = ti.issuer()
		}
		if jwksURI == "" {
			jwksURI = ti.srv.URL + "/jwks"
		}
		_ = json.NewEncoder(w).Encode(map[string]any{
			"issuer":                 iss,
			"jwks_uri":               jwksURI,
			"authorization_endpoint": ti.srv.URL + "/auth",
			"token_endpoint":         ti.srv.URL + "/token",
		})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		ti.jwksFetches.Add(1)
		ti.mu.Lock()
		defer ti.mu.Unlock()
		if ti.jwksStatus != 0 {
			w.WriteHeader(ti.jwksStatus)
			return
		}
		if ti.jwksOverride != nil {
			_, _ = w.Write(ti.jwksOverride)
			return
		}
		keys := []any{}
		for _, k := range ti.published {
			keys = append(keys, k.jwk())
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": keys})
	})
	ti.srv = httptest.NewServer(mux)
	t.Cleanup(ti.srv.Close)
	return ti
}

func (ti *testIssuer) issuer() string { return ti.srv.URL }

func (ti *testIssuer) publish(keys ...signingKey) {
	ti.mu.Lock()
	defer ti.mu.Unlock()
	ti.published = keys
}

func (ti *testIssuer) set(f func(ti *testIssuer)) {
	ti.mu.Lock()
	defer ti.mu.Unlock()
	f(ti)
}

// claimsFor returns valid claims for iss at the clock's time.
func claimsFor(iss string, now time.Time, aud any) jwt.MapClaims {
	return jwt.MapClaims{
		"iss":   iss,
		"sub":   "alice",
		"aud":   aud,
		"iat":   now.Unix(),
		"nbf":   now.Unix(),
		"exp":   now.Add(time.Hour).Unix(),
		"scope": "openid patient/*.rs",
	}
}

const testAud = "https://john.pfr.localhost/fhir"
