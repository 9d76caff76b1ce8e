package authz

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"slices"
	"sync"
	"time"

	"github.com/pfrgateway/caddy-pfr/auth"
)

// keyReload bounds how often an unknown kid makes the keyring read the
// store again (another node may have rotated).
const keyReload = time.Second

// keyring holds the signing keys: the newest signs, retired ones verify
// until every token they signed has expired.
type keyring struct {
	store       Store
	now         func() time.Time
	rotateEvery time.Duration
	keep        time.Duration // a retired key verifies this long

	mu       sync.Mutex
	keys     []loadedKey // oldest first
	loadedAt time.Time
}

type loadedKey struct {
	kid              string
	priv             *rsa.PrivateKey
	created, retired time.Time
}

func sortKeys(keys []StoredKey) {
	slices.SortFunc(keys, func(a, b StoredKey) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		if a.Kid < b.Kid {
			return -1
		}
		return 1
	})
}

func loadKeys(stored []StoredKey) ([]loadedKey, error) {
	out := make([]loadedKey, 0, len(stored))
	for _, s := range stored {
		block, _ := pem.Decode([]byte(s.PrivateKey))
		if block == nil {
			return nil, fmt.Errorf("authz: signing key %s is not PEM", s.Kid)
		}
		parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("authz: signing key %s: %w", s.Kid, err)
		}
		priv, ok := parsed.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("authz: signing key %s is not RSA", s.Kid)
		}
		out = append(out, loadedKey{kid: s.Kid, priv: priv, created: s.Created, retired: s.Retired})
	}
	return out, nil
}

// reloadLocked reads the keys from the store.
func (k *keyring) reloadLocked(ctx context.Context) error {
	stored, err := k.store.Keys(ctx)
	if err != nil {
		return err
	}
	keys, err := loadKeys(stored)
	if err != nil {
		return err
	}
	k.keys, k.loadedAt = keys, k.now()
	return nil
}

// signer returns the key that signs now, rotating when it is due.
func (k *keyring) signer(ctx context.Context) (loadedKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	if k.loadedAt.IsZero() || now.Sub(k.loadedAt) > time.Minute {
		if err := k.reloadLocked(ctx); err != nil {
			return loadedKey{}, err
		}
	}
	if n := len(k.keys); n > 0 && now.Sub(k.keys[n-1].created) < k.rotateEvery {
		return k.keys[n-1], nil
	}
	if err := k.rotateLocked(ctx, now); err != nil {
		return loadedKey{}, err
	}
	return k.keys[len(k.keys)-1], nil
}

// rotateLocked makes a new key the signing one, unless another node did
// since the due time.
func (k *keyring) rotateLocked(ctx context.Context, now time.Time) error {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("authz: generating a signing key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return fmt.Errorf("authz: encoding a signing key: %w", err)
	}
	key := StoredKey{
		Kid:        "pfr-" + randomToken(12),
		PrivateKey: string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		Created:    now,
	}
	stored, err := k.store.RotateKeys(ctx, key, now.Add(-k.rotateEvery), now.Add(-k.keep))
	if err != nil {
		return fmt.Errorf("authz: rotating signing keys: %w", err)
	}
	keys, err := loadKeys(stored)
	if err != nil {
		return err
	}
	k.keys, k.loadedAt = keys, now
	return nil
}

// Key implements auth.KeySource: the public key of kid, while it verifies.
func (k *keyring) Key(ctx context.Context, kid string) (crypto.PublicKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for pass := 0; pass < 2; pass++ {
		now := k.now()
		for _, key := range k.keys {
			if key.kid == kid {
				if !key.retired.IsZero() && now.Sub(key.retired) > k.keep {
					return nil, auth.ErrUnknownKey
				}
				return &key.priv.PublicKey, nil
			}
		}
		if pass == 1 || now.Sub(k.loadedAt) < keyReload {
			break
		}
		if err := k.reloadLocked(ctx); err != nil {
			return nil, fmt.Errorf("%w: %w", auth.ErrUnknownKey, err)
		}
	}
	return nil, auth.ErrUnknownKey
}

// jwks returns the public keys that still verify, as a JWK Set.
func (k *keyring) jwks(ctx context.Context) (map[string]any, error) {
	if _, err := k.signer(ctx); err != nil { // loads, and makes the first key
		return nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	keys := []any{}
	for _, key := range k.keys {
		if !key.retired.IsZero() && now.Sub(key.retired) > k.keep {
			continue
		}
		keys = append(keys, map[string]any{
			"kty": "RSA", "use": "sig", "alg": "RS256", "kid": key.kid,
			"n": b64(key.priv.N.Bytes()), "e": b64(big.NewInt(int64(key.priv.E)).Bytes()),
		})
	}
	return map[string]any{"keys": keys}, nil
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
