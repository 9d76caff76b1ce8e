package auth

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// DevIssuerFile is the file, inside the data directory, holding the dev
// issuer's identity and private key.
const DevIssuerFile = "dev-issuer.json"

// DefaultDevTokenTTL is the lifetime of a minted token when none is given.
const DefaultDevTokenTTL = time.Hour

// DevIssuer is a local token issuer for development: an Ed25519 key kept in
// the gateway's data directory. Only gateways whose base domain passes
// DevIssuerAllowed may trust it.
type DevIssuer struct {
	issuer   string
	audience string
	kid      string
	key      ed25519.PrivateKey
}

// devIssuerFile is the on-disk form of a DevIssuer.
type devIssuerFile struct {
	Issuer     string `json:"issuer"`
	Audience   string `json:"audience"`
	Kid        string `json:"kid"`
	Alg        string `json:"alg"`
	PrivateKey string `json:"private_key"` // PEM, PKCS #8
}

// LoadOrCreateDevIssuer reads dir/dev-issuer.json, or creates it with a
// fresh Ed25519 key, a random kid, issuer "urn:pfr:dev-issuer:<random>" and
// audience "urn:pfr:dev:<random>". Creation is atomic and race-safe: the
// file is written to a temporary name (mode 0600), synced, and published
// with a hard link, which unlike rename fails when another process won the
// race; the loser then loads the winner's file, so every process sharing
// the directory signs with the same key.
func LoadOrCreateDevIssuer(dir string) (*DevIssuer, error) {
	path := filepath.Join(dir, DevIssuerFile)
	if d, err := loadDevIssuer(path); err == nil || !errors.Is(err, os.ErrNotExist) {
		return d, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("dev issuer: creating %s: %w", dir, err)
	}
	data, err := newDevIssuerFile()
	if err != nil {
		return nil, err
	}
	if err := publishExclusive(dir, path, data); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, err
	}
	return loadDevIssuer(path)
}

func newDevIssuerFile() ([]byte, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("dev issuer: generating key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("dev issuer: encoding key: %w", err)
	}
	file := devIssuerFile{
		Issuer:     "urn:pfr:dev-issuer:" + randomHex(16),
		Audience:   "urn:pfr:dev:" + randomHex(16),
		Kid:        randomHex(8),
		Alg:        "EdDSA",
		PrivateKey: string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
	}
	data, err := json.MarshalIndent(file, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("dev issuer: encoding file: %w", err)
	}
	return data, nil
}

// publishExclusive writes data to path only if path does not exist yet,
// never exposing a partly written file. It returns an error wrapping
// os.ErrExist when another writer got there first.
func publishExclusive(dir, path string, data []byte) error {
	tmp, err := os.CreateTemp(dir, ".dev-issuer-*.tmp")
	if err != nil {
		return fmt.Errorf("dev issuer: creating temp file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("dev issuer: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("dev issuer: writing temp file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("dev issuer: syncing temp file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("dev issuer: closing temp file: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		return fmt.Errorf("dev issuer: publishing %s: %w", path, err)
	}
	return nil
}

func loadDevIssuer(path string) (*DevIssuer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("dev issuer: %w", err)
	}
	var file devIssuerFile
	if err := json.Unmarshal(data, &file); err != nil {
		return nil, fmt.Errorf("dev issuer: decoding %s: %w", path, err)
	}
	if file.Issuer == "" || file.Audience == "" || file.Kid == "" {
		return nil, fmt.Errorf("dev issuer: %s lacks issuer, audience or kid", path)
	}
	if file.Alg != "EdDSA" {
		return nil, fmt.Errorf("dev issuer: %s: unsupported alg %q", path, file.Alg)
	}
	block, _ := pem.Decode([]byte(file.PrivateKey))
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("dev issuer: %s: private_key is not a PEM PKCS #8 key", path)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("dev issuer: %s: %w", path, err)
	}
	key, ok := parsed.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("dev issuer: %s: private_key is not Ed25519", path)
	}
	return &DevIssuer{issuer: file.Issuer, audience: file.Audience, kid: file.Kid, key: key}, nil
}

// Issuer returns the iss of the tokens it mints.
func (d *DevIssuer) Issuer() string { return d.issuer }

// Audience returns the audience it mints by default, which the gateway
// accepts on the apex and on every PFR.
func (d *DevIssuer) Audience() string { return d.audience }

// Config returns the IssuerConfig that trusts this issuer through its
// static key, accepting its default audience.
func (d *DevIssuer) Config() IssuerConfig {
	return IssuerConfig{
		Issuer:    d.issuer,
		Audiences: []string{d.audience},
		Keys:      devKeySource{kid: d.kid, key: d.key.Public()},
	}
}

// Mint returns a signed access token for sub with the given space-separated
// scope. aud defaults to the issuer's audience and ttl to DefaultDevTokenTTL.
func (d *DevIssuer) Mint(sub, scope string, aud []string, ttl time.Duration) (string, error) {
	if sub == "" {
		return "", errors.New("dev issuer: subject is empty")
	}
	if ttl <= 0 {
		ttl = DefaultDevTokenTTL
	}
	if len(aud) == 0 {
		aud = []string{d.audience}
	}
	now := time.Now()
	claims := jwt.MapClaims{
		"iss":       d.issuer,
		"sub":       sub,
		"aud":       aud,
		"iat":       now.Unix(),
		"nbf":       now.Unix(),
		"exp":       now.Add(ttl).Unix(),
		"jti":       randomHex(16),
		"client_id": "pfr-dev",
	}
	if scope != "" {
		claims["scope"] = scope
	}
	token := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
	token.Header["kid"] = d.kid
	signed, err := token.SignedString(d.key)
	if err != nil {
		return "", fmt.Errorf("dev issuer: signing: %w", err)
	}
	return signed, nil
}

// devKeySource is the dev issuer's public key as a KeySource.
type devKeySource struct {
	kid string
	key crypto.PublicKey
}

func (s devKeySource) Key(_ context.Context, kid string) (crypto.PublicKey, error) {
	if kid != "" && kid != s.kid {
		return nil, ErrUnknownKey
	}
	return s.key, nil
}

// DevIssuerAllowed reports whether a gateway with this base domain may use
// the dev issuer: only "localhost" and names under ".localhost", which
// never resolve off the machine (RFC 6761), so a dev key cannot open a
// production deployment.
func DevIssuerAllowed(baseDomain string) bool {
	d := strings.ToLower(strings.TrimSuffix(baseDomain, "."))
	for _, r := range d {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return false
		}
	}
	if d == "localhost" {
		return true
	}
	prefix, ok := strings.CutSuffix(d, ".localhost")
	return ok && prefix != "" && !strings.HasPrefix(prefix, ".") && !strings.HasSuffix(prefix, ".") && !strings.Contains(prefix, "..")
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}
