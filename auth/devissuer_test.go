package auth

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestDevIssuerCreateLoadMint(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	d, err := LoadOrCreateDevIssuer(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(d.Issuer(), "urn:pfr:dev-issuer:") || !strings.HasPrefix(d.Audience(), "urn:pfr:dev:") {
		t.Errorf("issuer %q audience %q", d.Issuer(), d.Audience())
	}
	info, err := os.Stat(filepath.Join(dir, DevIssuerFile))
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", info.Mode().Perm())
	}
	again, err := LoadOrCreateDevIssuer(dir)
	if err != nil {
		t.Fatal(err)
	}
	if again.Issuer() != d.Issuer() || again.kid != d.kid || !again.key.Equal(d.key) {
		t.Fatal("reloading gave another issuer or key")
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, ".dev-issuer-*")); len(leftovers) != 0 {
		t.Errorf("temporary files left behind: %q", leftovers)
	}

	v, err := NewVerifier([]IssuerConfig{d.Config()}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	token, err := again.Mint("alice", "openid patient/*.cruds", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	id, err := v.Verify(ctx, token, nil) // the default audience is accepted by the config itself
	if err != nil {
		t.Fatalf("minted token refused: %v", err)
	}
	if id.Subject != "alice" || id.Issuer != d.Issuer() || !slices.Equal(id.Scopes, []string{"openid", "patient/*.cruds"}) {
		t.Errorf("identity %+v", id)
	}
	if d := time.Until(id.ExpiresAt); d < 50*time.Minute || d > 61*time.Minute {
		t.Errorf("default ttl gives expiry in %v, want about 1h", d)
	}

	custom, err := d.Mint("bob", "", []string{testAud}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(ctx, custom, nil); !errors.Is(err, ErrBadAudience) {
		t.Errorf("custom audience without request audience: %v, want ErrBadAudience", err)
	}
	if _, err := v.Verify(ctx, custom, []string{testAud}); err != nil {
		t.Errorf("custom audience: %v", err)
	}
	if _, err := d.Mint("", "x", nil, 0); err == nil {
		t.Error("Mint accepted an empty subject")
	}

	// Another data directory is another issuer: its tokens are not trusted.
	other, err := LoadOrCreateDevIssuer(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	foreign, _ := other.Mint("alice", "patient/*.cruds", []string{d.Audience()}, 0)
	if _, err := v.Verify(ctx, foreign, nil); !errors.Is(err, ErrUnknownIssuer) {
		t.Errorf("token of another dev issuer: %v, want ErrUnknownIssuer", err)
	}
	// The other key under this issuer's name and kid fails the signature.
	forged := &DevIssuer{issuer: d.issuer, audience: d.audience, kid: d.kid, key: other.key}
	forgedToken, _ := forged.Mint("alice", "patient/*.cruds", nil, 0)
	if _, err := v.Verify(ctx, forgedToken, nil); !errors.Is(err, ErrBadSignature) {
		t.Errorf("forged dev token: %v, want ErrBadSignature", err)
	}
	wrongKid := &DevIssuer{issuer: d.issuer, audience: d.audience, kid: "other", key: d.key}
	wrongKidToken, _ := wrongKid.Mint("alice", "", nil, 0)
	if _, err := v.Verify(ctx, wrongKidToken, nil); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("dev token with unknown kid: %v, want ErrUnknownKey", err)
	}
}

func TestDevIssuerConcurrentCreateAgrees(t *testing.T) {
	dir := t.TempDir()
	const n = 8
	issuers := make([]*DevIssuer, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			issuers[i], errs[i] = LoadOrCreateDevIssuer(dir)
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("creator %d: %v", i, errs[i])
		}
		if issuers[i].Issuer() != issuers[0].Issuer() || !issuers[i].key.Equal(issuers[0].key) {
			t.Fatalf("creator %d got a different key: racing creators must agree", i)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only %s", len(entries), DevIssuerFile)
	}
}

func TestDevIssuerRefusesDamagedFile(t *testing.T) {
	tests := map[string]string{
		"not JSON":       "{",
		"no key":         `{"issuer":"urn:x","audience":"urn:y","kid":"k","alg":"EdDSA"}`,
		"other alg":      `{"issuer":"urn:x","audience":"urn:y","kid":"k","alg":"HS256","private_key":""}`,
		"missing issuer": `{"audience":"urn:y","kid":"k","alg":"EdDSA"}`,
	}
	for name, content := range tests {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, DevIssuerFile)
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := LoadOrCreateDevIssuer(dir); err == nil {
				t.Fatal("damaged file accepted")
			}
			if got, _ := os.ReadFile(path); string(got) != content {
				t.Fatal("damaged file was overwritten; it must be left for the operator")
			}
		})
	}
}

func TestDevIssuerAllowed(t *testing.T) {
	tests := map[string]bool{
		"localhost":             true,
		"LOCALHOST":             true,
		"localhost.":            true,
		"pfr.localhost":         true,
		"a.b.pfr.localhost":     true,
		"pfr.example.com":       false,
		"localhost.com":         false,
		"notlocalhost":          false,
		"evil-localhost":        false,
		".localhost":            false,
		"a..localhost":          false,
		"pfr.localhost:8443":    false,
		"127.0.0.1":             false,
		"":                      false,
		"pfr.localhost.evil.io": false,
		"x.localhost/evil":      false,
	}
	for domain, want := range tests {
		if got := DevIssuerAllowed(domain); got != want {
			t.Errorf("DevIssuerAllowed(%q) = %v, want %v", domain, got, want)
		}
	}
}
