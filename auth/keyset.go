package auth

import (
	"context"
	"crypto"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"sync"
	"time"
)

// keyResolver finds the key that must verify a token of one issuer.
type keyResolver interface {
	resolve(ctx context.Context, kid, alg string) (crypto.PublicKey, error)
}

// staticKeys adapts a caller's KeySource.
type staticKeys struct{ src KeySource }

func (s staticKeys) resolve(ctx context.Context, kid, alg string) (crypto.PublicKey, error) {
	key, err := s.src.Key(ctx, kid)
	if err != nil {
		return nil, tokenErr(ErrUnknownKey, "signing key not found", err)
	}
	if !fitsAlg(key, alg) {
		return nil, tokenErr(ErrAlgorithm, "signing key does not fit alg "+alg, nil)
	}
	return key, nil
}

// remoteKeySet is one issuer's JWKS, fetched over HTTP (directly or through
// OIDC discovery) and cached. An unknown kid triggers a refetch at most once
// per minRefetch; concurrent callers share one fetch.
type remoteKeySet struct {
	issuer     string
	jwksURL    string // configured; "" means OIDC discovery
	client     *http.Client
	now        func() time.Time
	ttl        time.Duration
	minRefetch time.Duration

	mu          sync.Mutex
	keys        []publicKey
	fetchedAt   time.Time // last successful JWKS fetch; zero when none
	lastAttempt time.Time // last fetch started; bounds the refetch rate
	lastErr     error     // outcome of the last finished fetch
	inflight    *flight

	discovery    map[string]any // last good discovery document
	discoveredAt time.Time
}

// flight is one fetch shared by every caller waiting for it.
type flight struct {
	done chan struct{}
	err  error
}

// resolve returns the key for kid and alg. It answers from the cached set
// while it is fresh; it fetches when the set is stale, or when the kid is
// unknown and the last fetch is older than minRefetch. After one fetch its
// answer is final, so each call makes at most one pass through the network.
func (s *remoteKeySet) resolve(ctx context.Context, kid, alg string) (crypto.PublicKey, error) {
	for refetched := false; ; refetched = true {
		s.mu.Lock()
		now := s.now()
		fresh := !s.fetchedAt.IsZero() && now.Sub(s.fetchedAt) < s.ttl
		recentAttempt := !s.lastAttempt.IsZero() && now.Sub(s.lastAttempt) < s.minRefetch
		if fresh {
			key, err := selectKey(s.keys, kid, alg)
			if err == nil || refetched || recentAttempt {
				s.mu.Unlock()
				return key, err
			}
		} else if refetched || (recentAttempt && s.lastErr != nil && s.inflight == nil) {
			err := s.lastErr
			s.mu.Unlock()
			return nil, tokenErr(ErrKeysUnavailable, "issuer keys unavailable", err)
		}
		f := s.startFetchLocked(ctx)
		s.mu.Unlock()

		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, tokenErr(ErrKeysUnavailable, "issuer keys unavailable", ctx.Err())
		}
		if f.err != nil {
			return nil, tokenErr(ErrKeysUnavailable, "issuer keys unavailable", f.err)
		}
	}
}

// startFetchLocked joins the fetch in flight or starts one. The fetch runs
// on a context detached from the caller's cancellation (with its own
// timeout), since other callers may be waiting on it.
func (s *remoteKeySet) startFetchLocked(ctx context.Context) *flight {
	if s.inflight != nil {
		return s.inflight
	}
	f := &flight{done: make(chan struct{})}
	s.inflight = f
	s.lastAttempt = s.now()
	go func() {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), defaultFetchTimeout)
		keys, err := s.fetchKeys(fctx)
		cancel()
		s.mu.Lock()
		if err == nil {
			s.keys = keys
			s.fetchedAt = s.now()
		}
		s.lastErr = err
		s.inflight = nil
		f.err = err
		s.mu.Unlock()
		close(f.done)
	}()
	return f
}

func (s *remoteKeySet) fetchKeys(ctx context.Context) ([]publicKey, error) {
	url := s.jwksURL
	if url == "" {
		doc, err := s.discover(ctx)
		if err != nil {
			return nil, err
		}
		url, _ = doc["jwks_uri"].(string)
	}
	body, err := fetchDocument(ctx, s.client, url)
	if err != nil {
		return nil, fmt.Errorf("issuer %s: %w", s.issuer, err)
	}
	keys, err := parseJWKS(body)
	if err != nil {
		return nil, fmt.Errorf("issuer %s: %w", s.issuer, err)
	}
	return keys, nil
}

// discover returns the issuer's OIDC discovery document, from the cache
// while it is younger than the TTL. The document must name this exact
// issuer and an http(s) jwks_uri, so a misconfigured or hostile endpoint
// cannot substitute another issuer's keys.
func (s *remoteKeySet) discover(ctx context.Context) (map[string]any, error) {
	s.mu.Lock()
	if s.discovery != nil && s.now().Sub(s.discoveredAt) < s.ttl {
		doc := s.discovery
		s.mu.Unlock()
		return doc, nil
	}
	s.mu.Unlock()

	url := trimSlash(s.issuer) + discoveryPathSuffix
	body, err := fetchDocument(ctx, s.client, url)
	if err != nil {
		return nil, fmt.Errorf("issuer %s discovery: %w", s.issuer, err)
	}
	var doc map[string]any
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("issuer %s discovery: decoding: %w", s.issuer, err)
	}
	if got, _ := doc["issuer"].(string); got != s.issuer {
		return nil, fmt.Errorf("issuer %s discovery: document names issuer %q", s.issuer, got)
	}
	jwksURI, _ := doc["jwks_uri"].(string)
	if err := checkHTTPURL(jwksURI); err != nil {
		return nil, fmt.Errorf("issuer %s discovery: jwks_uri: %w", s.issuer, err)
	}
	s.mu.Lock()
	s.discovery = doc
	s.discoveredAt = s.now()
	s.mu.Unlock()
	return doc, nil
}

// discoveryCopy returns a copy of the discovery document, safe to modify.
func (s *remoteKeySet) discoveryCopy(ctx context.Context) (map[string]any, error) {
	doc, err := s.discover(ctx)
	if err != nil {
		return nil, err
	}
	return maps.Clone(doc), nil
}

// selectKey picks the key for kid and alg. A token without kid is accepted
// only when exactly one key fits its alg, so the choice is never ambiguous.
func selectKey(keys []publicKey, kid, alg string) (crypto.PublicKey, error) {
	var fitting []publicKey
	kidFound := false
	for _, k := range keys {
		if kid != "" && k.kid != kid {
			continue
		}
		kidFound = true
		if fitsAlg(k.key, alg) && (k.alg == "" || k.alg == alg) {
			fitting = append(fitting, k)
		}
	}
	switch {
	case kid != "" && !kidFound:
		return nil, tokenErr(ErrUnknownKey, "signing key not found", nil)
	case kid != "" && len(fitting) == 0:
		return nil, tokenErr(ErrAlgorithm, "signing key does not allow alg "+alg, nil)
	case kid != "":
		return fitting[0].key, nil
	case len(fitting) == 1:
		return fitting[0].key, nil
	case len(fitting) == 0:
		return nil, tokenErr(ErrUnknownKey, "no signing key fits alg "+alg, nil)
	default:
		return nil, tokenErr(ErrUnknownKey, "token has no kid and the issuer has several keys", nil)
	}
}

func trimSlash(s string) string {
	for len(s) > 0 && s[len(s)-1] == '/' {
		s = s[:len(s)-1]
	}
	return s
}
