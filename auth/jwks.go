package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
)

// minRSABits is the smallest RSA modulus accepted from a JWKS.
const minRSABits = 2048

// publicKey is one usable signing key from a JWKS.
type publicKey struct {
	kid string
	alg string // the JWK's own alg, "" when it does not say
	key crypto.PublicKey
}

// jwk is the subset of RFC 7517/7518/8037 members this package reads.
type jwk struct {
	Kty    string   `json:"kty"`
	Use    string   `json:"use"`
	KeyOps []string `json:"key_ops"`
	Alg    string   `json:"alg"`
	Kid    string   `json:"kid"`
	Crv    string   `json:"crv"`
	N      string   `json:"n"`
	E      string   `json:"e"`
	X      string   `json:"x"`
	Y      string   `json:"y"`
	D      string   `json:"d"`
}

// parseJWKS decodes a JWK Set and keeps the keys usable for verifying
// signatures. Keys of other uses, unknown types or bad parameters are
// skipped rather than failing the whole set, so one odd key published by an
// issuer does not lock out every token.
func parseJWKS(data []byte) ([]publicKey, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("decoding JWKS: %w", err)
	}
	if set.Keys == nil {
		return nil, errors.New("decoding JWKS: no keys member")
	}
	var keys []publicKey
	for _, raw := range set.Keys {
		var k jwk
		if err := json.Unmarshal(raw, &k); err != nil {
			continue
		}
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		if k.KeyOps != nil && !slices.Contains(k.KeyOps, "verify") {
			continue
		}
		if k.D != "" {
			// A private key published in a JWKS is an issuer mistake; do not use it.
			continue
		}
		pub, err := k.publicKey()
		if err != nil {
			continue
		}
		keys = append(keys, publicKey{kid: k.Kid, alg: k.Alg, key: pub})
	}
	return keys, nil
}

func (k jwk) publicKey() (crypto.PublicKey, error) {
	switch k.Kty {
	case "RSA":
		return k.rsaKey()
	case "EC":
		return k.ecKey()
	case "OKP":
		if k.Crv != "Ed25519" {
			return nil, fmt.Errorf("unsupported OKP curve %q", k.Crv)
		}
		x, err := b64(k.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			return nil, errors.New("bad Ed25519 x")
		}
		return ed25519.PublicKey(x), nil
	default:
		return nil, fmt.Errorf("unsupported kty %q", k.Kty)
	}
}

func (k jwk) rsaKey() (*rsa.PublicKey, error) {
	n, err := b64(k.N)
	if err != nil || len(n) == 0 {
		return nil, errors.New("bad RSA n")
	}
	e, err := b64(k.E)
	if err != nil || len(e) == 0 || len(e) > 4 {
		return nil, errors.New("bad RSA e")
	}
	exp := int(new(big.Int).SetBytes(e).Int64())
	if exp < 3 || exp%2 == 0 {
		return nil, errors.New("bad RSA e")
	}
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: exp}
	if pub.N.BitLen() < minRSABits {
		return nil, fmt.Errorf("RSA key shorter than %d bits", minRSABits)
	}
	return pub, nil
}

func (k jwk) ecKey() (*ecdsa.PublicKey, error) {
	var curve elliptic.Curve
	switch k.Crv {
	case "P-256":
		curve = elliptic.P256()
	case "P-384":
		curve = elliptic.P384()
	case "P-521":
		curve = elliptic.P521()
	default:
		return nil, fmt.Errorf("unsupported EC curve %q", k.Crv)
	}
	size := (curve.Params().BitSize + 7) / 8
	x, errX := b64(k.X)
	y, errY := b64(k.Y)
	if errX != nil || errY != nil || len(x) != size || len(y) != size {
		return nil, errors.New("bad EC coordinates")
	}
	// ParseUncompressedPublicKey checks that the point is on the curve.
	point := append(append([]byte{4}, x...), y...)
	return ecdsa.ParseUncompressedPublicKey(curve, point)
}

func b64(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(s)
}

// fitsAlg reports whether key can verify signatures made with alg, so that a
// token cannot choose an algorithm family its issuer's key was not made for.
func fitsAlg(key crypto.PublicKey, alg string) bool {
	switch pub := key.(type) {
	case *rsa.PublicKey:
		switch alg {
		case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
			return true
		}
	case *ecdsa.PublicKey:
		switch alg {
		case "ES256":
			return pub.Curve == elliptic.P256()
		case "ES384":
			return pub.Curve == elliptic.P384()
		case "ES512":
			return pub.Curve == elliptic.P521()
		}
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}

// JWKSKeys is a KeySource over a fixed JSON Web Key Set, e.g. the keys a
// client registered for private_key_jwt.
type JWKSKeys struct{ keys []publicKey }

// ParseJWKS reads a JSON Web Key Set (RSA and EC keys; others are
// skipped) into a KeySource.
func ParseJWKS(data []byte) (*JWKSKeys, error) {
	keys, err := parseJWKS(data)
	if err != nil {
		return nil, err
	}
	return &JWKSKeys{keys: keys}, nil
}

// Len is the number of usable keys.
func (s *JWKSKeys) Len() int { return len(s.keys) }

// Key implements KeySource. A token without kid is accepted only when the
// set holds exactly one key.
func (s *JWKSKeys) Key(_ context.Context, kid string) (crypto.PublicKey, error) {
	var found []crypto.PublicKey
	for _, k := range s.keys {
		if kid == "" || k.kid == kid {
			found = append(found, k.key)
		}
	}
	if len(found) != 1 {
		return nil, ErrUnknownKey
	}
	return found[0], nil
}
