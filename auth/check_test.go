package auth

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

// The Check hook runs on every verification, cached tokens included, maps
// the identity, and refuses a revoked token at once.
func TestIssuerCheck(t *testing.T) {
	d, err := LoadOrCreateDevIssuer(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	revoked := false
	calls := 0
	cfg := d.Config()
	cfg.Check = func(_ context.Context, id *Identity) (*Identity, error) {
		calls++
		if revoked {
			return nil, fmt.Errorf("%w: grant gone", ErrRevoked)
		}
		out := *id
		out.Issuer, out.Subject = "https://login.example", "account-of-"+id.Subject
		return &out, nil
	}
	v, err := NewVerifier([]IssuerConfig{cfg}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	token, err := d.Mint("alice", "patient/*.rs", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 { // the second is a cache hit
		id, err := v.Verify(context.Background(), token, nil)
		if err != nil {
			t.Fatal(err)
		}
		if id.Issuer != "https://login.example" || id.Subject != "account-of-alice" {
			t.Errorf("verification %d: identity %s %s, want the mapped one", i, id.Issuer, id.Subject)
		}
	}
	if calls != 2 {
		t.Errorf("Check ran %d times, want 2 (once per verification)", calls)
	}
	revoked = true
	_, err = v.Verify(context.Background(), token, nil)
	var te *TokenError
	if !errors.Is(err, ErrRevoked) || !errors.As(err, &te) {
		t.Errorf("revoked: %v, want a TokenError wrapping ErrRevoked", err)
	}
	// A failure of the check itself is not a revocation.
	cfg.Check = func(context.Context, *Identity) (*Identity, error) { return nil, errors.New("database down") }
	v, _ = NewVerifier([]IssuerConfig{cfg}, Options{})
	if _, err := v.Verify(context.Background(), token, nil); !errors.Is(err, ErrKeysUnavailable) {
		t.Errorf("check failure: %v, want ErrKeysUnavailable", err)
	}
}
