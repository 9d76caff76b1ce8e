package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

func TestParseJWKSKeepsOnlyUsableSigningKeys(t *testing.T) {
	rsaKey := newRSAKey(t, "rsa", jwt.SigningMethodRS256)
	ecKey := newECKey(t, "ec", elliptic.P256(), jwt.SigningMethodES256)
	edKey := newEdKey(t, "ed")
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	with := func(k signingKey, set map[string]any) map[string]any {
		m := k.jwk()
		for name, v := range set {
			if v == nil {
				delete(m, name)
			} else {
				m[name] = v
			}
		}
		return m
	}
	enc := base64.RawURLEncoding.EncodeToString
	offCurve := with(ecKey, map[string]any{"kid": "off-curve", "y": ecKey.jwk()["x"]})
	keys := []any{
		rsaKey.jwk(),
		ecKey.jwk(),
		edKey.jwk(),
		with(rsaKey, map[string]any{"kid": "no-use", "use": nil}),
		with(edKey, map[string]any{"kid": "verify-op", "key_ops": []string{"verify"}}),
		with(rsaKey, map[string]any{"kid": "enc", "use": "enc"}),
		with(rsaKey, map[string]any{"kid": "sign-op", "key_ops": []string{"sign"}}),
		with(rsaKey, map[string]any{"kid": "private", "d": "AQAB"}),
		with(signingKey{kid: "small", priv: small}, nil),
		with(rsaKey, map[string]any{"kid": "even-e", "e": enc([]byte{2})}),
		offCurve,
		with(ecKey, map[string]any{"kid": "short-x", "x": enc([]byte{1, 2, 3})}),
		with(ecKey, map[string]any{"kid": "secp256k1", "crv": "secp256k1"}),
		with(edKey, map[string]any{"kid": "ed448", "crv": "Ed448"}),
		with(edKey, map[string]any{"kid": "bad-x", "x": "!!"}),
		map[string]any{"kid": "hmac", "kty": "oct", "k": enc([]byte("secret"))},
		"not an object",
	}
	body, _ := json.Marshal(map[string]any{"keys": keys})
	got, err := parseJWKS(body)
	if err != nil {
		t.Fatal(err)
	}
	var kids []string
	for _, k := range got {
		kids = append(kids, k.kid)
	}
	want := []string{"rsa", "ec", "ed", "no-use", "verify-op"}
	if len(kids) != len(want) {
		t.Fatalf("kept %q, want %q", kids, want)
	}
	for i := range want {
		if kids[i] != want[i] {
			t.Fatalf("kept %q, want %q", kids, want)
		}
	}
	if _, ok := got[1].key.(*ecdsa.PublicKey); !ok {
		t.Errorf("EC key parsed as %T", got[1].key)
	}
	if _, ok := got[2].key.(ed25519.PublicKey); !ok {
		t.Errorf("OKP key parsed as %T", got[2].key)
	}
	for _, bad := range []string{`{`, `[]`, `{"keys":null}`, `{"other":[]}`} {
		if _, err := parseJWKS([]byte(bad)); err == nil {
			t.Errorf("parseJWKS(%s) accepted", bad)
		}
	}
}

func TestSelectKeyHonoursAlg(t *testing.T) {
	rs := newRSAKey(t, "r", jwt.SigningMethodRS256)
	p256 := newECKey(t, "p256", elliptic.P256(), jwt.SigningMethodES256)
	keys := []publicKey{
		{kid: "r", alg: "RS512", key: rs.priv.Public()},
		{kid: "p256", key: p256.priv.Public()},
	}
	tests := []struct {
		kid, alg string
		want     error
	}{
		{"r", "RS512", nil},
		{"r", "RS256", ErrAlgorithm}, // the JWK pins RS512
		{"r", "ES256", ErrAlgorithm},
		{"p256", "ES256", nil},
		{"p256", "ES384", ErrAlgorithm}, // curve and hash must agree
		{"p256", "EdDSA", ErrAlgorithm},
		{"nope", "ES256", ErrUnknownKey},
		{"", "ES256", nil},
		{"", "PS256", ErrUnknownKey}, // the only RSA key is pinned to RS512
	}
	for _, tt := range tests {
		_, err := selectKey(keys, tt.kid, tt.alg)
		if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
			t.Errorf("selectKey(%q, %q) = %v, want %v", tt.kid, tt.alg, err, tt.want)
		}
	}
}
