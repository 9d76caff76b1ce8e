package authz

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/pfrgateway/caddy-pfr/auth"
)

// Client keys at a jwks_uri are fetched through the gateway's outbound
// policy (Config.Egress: public https addresses only, unless the operator
// allows a network), never from an address a stranger could aim at the
// gateway's own network.
const (
	jwksURITTL        = 5 * time.Minute  // fetched keys are used this long
	jwksURIMinRefetch = time.Minute      // an unknown kid refetches at most this often
	maxJWKSBytes      = 64 << 10         // a client's key set
	jwksFetchTimeout  = 10 * time.Second // one fetch
)

// clientKeys caches the key sets fetched from clients' jwks_uri.
type clientKeys struct {
	mu sync.Mutex
	m  map[string]fetchedKeys // by jwks_uri
}

type fetchedKeys struct {
	keys *auth.JWKSKeys
	at   time.Time
}

// fetchJWKS fetches and parses the key set at uri through the policy.
func (s *Server) fetchJWKS(ctx context.Context, uri string) (*auth.JWKSKeys, error) {
	if s.cfg.Egress == nil {
		return nil, errors.New("jwks_uri is not accepted on this gateway: register the keys with jwks")
	}
	if err := s.cfg.Egress.Check(ctx, uri); err != nil {
		return nil, fmt.Errorf("jwks_uri: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return nil, fmt.Errorf("jwks_uri: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	res, err := s.cfg.Egress.Client(jwksFetchTimeout).Do(req)
	if err != nil {
		return nil, fmt.Errorf("jwks_uri: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("jwks_uri answered %d", res.StatusCode)
	}
	raw, err := io.ReadAll(io.LimitReader(res.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("jwks_uri: %w", err)
	}
	if len(raw) > maxJWKSBytes {
		return nil, fmt.Errorf("jwks_uri: the key set is larger than %d bytes", maxJWKSBytes)
	}
	keys, err := auth.ParseJWKS(raw)
	if err != nil || keys.Len() == 0 {
		return nil, fmt.Errorf("jwks_uri: no usable public key (RSA 2048+ or EC): %v", err)
	}
	return keys, nil
}

// keysFor returns the client's keys: its registered jwks, or the key set
// at its jwks_uri (cached; refetched when stale, or when refetch is set
// and the cached set is older than jwksURIMinRefetch).
func (s *Server) keysFor(ctx context.Context, c *Client, refetch bool) (*auth.JWKSKeys, error) {
	if c.JWKSURI == "" {
		return auth.ParseJWKS(c.JWKS)
	}
	now := s.cfg.Now()
	s.clientKeys.mu.Lock()
	f, ok := s.clientKeys.m[c.JWKSURI]
	s.clientKeys.mu.Unlock()
	if ok && now.Sub(f.at) < jwksURITTL && !(refetch && now.Sub(f.at) >= jwksURIMinRefetch) {
		return f.keys, nil
	}
	keys, err := s.fetchJWKS(ctx, c.JWKSURI)
	if err != nil {
		return nil, err
	}
	s.clientKeys.mu.Lock()
	if s.clientKeys.m == nil {
		s.clientKeys.m = map[string]fetchedKeys{}
	}
	s.clientKeys.m[c.JWKSURI] = fetchedKeys{keys: keys, at: now}
	s.clientKeys.mu.Unlock()
	return keys, nil
}
