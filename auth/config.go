package auth

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// IssuerConfig describes one trusted token issuer.
type IssuerConfig struct {
	// Issuer is the exact iss value of its tokens.
	Issuer string
	// JWKSURL is where the issuer publishes its keys. When empty the URL is
	// taken from OIDC discovery: {Issuer}/.well-known/openid-configuration.
	JWKSURL string
	// Audiences are aud values accepted for this issuer in addition to the
	// ones the caller passes to Verify.
	Audiences []string
	// ScopeClaims name the claims holding scopes (a space-separated string or
	// an array of strings). Default: scope, scp.
	ScopeClaims []string
	// ClientIDClaims name the claims holding the client id; the first
	// non-empty one wins. Default: client_id, azp, cid, appid.
	ClientIDClaims []string
	// Keys, when set, is the only source of keys: no HTTP is done.
	Keys KeySource
	// Check, when set, is called on every token of this issuer that passed
	// every other check (cached ones included, so a revocation takes effect
	// at once). It returns the identity the token stands for: id itself,
	// or a copy naming the account the token acts for (the built-in
	// authorization server's tokens name the account that logged in). An
	// error refuses the token; wrap ErrRevoked when it was revoked.
	Check func(ctx context.Context, id *Identity) (*Identity, error)
}

// KeySource returns the public key with the given kid ("" when the token
// has none). It returns an error wrapping ErrUnknownKey when it has none.
type KeySource interface {
	Key(ctx context.Context, kid string) (crypto.PublicKey, error)
}

// Options tune a Verifier. The zero value is usable.
type Options struct {
	// HTTPClient fetches discovery documents and JWKS. Default: a client
	// with a 10 s timeout.
	HTTPClient *http.Client
	// Now is the clock. Default: time.Now.
	Now func() time.Time
	// Leeway is the clock skew tolerated on exp, nbf and iat. Default 30 s.
	Leeway time.Duration
	// MinRefetchInterval bounds how often an unknown kid may trigger a JWKS
	// refetch per issuer. Default 1 min.
	MinRefetchInterval time.Duration
	// JWKSCacheTTL is how long a fetched JWKS (and discovery document) is
	// used before it is fetched again; a key removed by the issuer stops
	// working at most this long after removal. Default 10 min.
	JWKSCacheTTL time.Duration
	// TokenCacheSize bounds the verified-token cache. Default 10000;
	// negative disables the cache.
	TokenCacheSize int
}

const (
	defaultLeeway       = 30 * time.Second
	defaultMinRefetch   = time.Minute
	defaultJWKSCacheTTL = 10 * time.Minute
	defaultTokenCache   = 10000
	defaultFetchTimeout = 10 * time.Second
	maxDocumentBytes    = 1 << 20
	maxTokenBytes       = 16 << 10
	discoveryPathSuffix = "/.well-known/openid-configuration"
)

var (
	defaultScopeClaims    = []string{"scope", "scp"}
	defaultClientIDClaims = []string{"client_id", "azp", "cid", "appid"}
)

func (o Options) withDefaults() Options {
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: defaultFetchTimeout}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Leeway == 0 {
		o.Leeway = defaultLeeway
	}
	if o.MinRefetchInterval == 0 {
		o.MinRefetchInterval = defaultMinRefetch
	}
	if o.JWKSCacheTTL == 0 {
		o.JWKSCacheTTL = defaultJWKSCacheTTL
	}
	if o.TokenCacheSize == 0 {
		o.TokenCacheSize = defaultTokenCache
	}
	return o
}

func (c IssuerConfig) validate() error {
	if c.Issuer == "" {
		return errors.New("issuer is empty")
	}
	if c.Keys != nil {
		return nil
	}
	if c.JWKSURL != "" {
		if err := checkHTTPURL(c.JWKSURL); err != nil {
			return fmt.Errorf("jwks url: %w", err)
		}
		return nil
	}
	if err := checkHTTPURL(c.Issuer); err != nil {
		return fmt.Errorf("issuer %q needs a jwks url or must be an http(s) URL for discovery: %w", c.Issuer, err)
	}
	return nil
}

// checkHTTPURL accepts https URLs, and http only on loopback hosts (local
// development and tests): keys fetched over plain HTTP from elsewhere could
// be swapped by anyone on the path.
func checkHTTPURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	if u.Host == "" {
		return fmt.Errorf("%q has no host", raw)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopbackHost(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("%q must use https (http is allowed on loopback only)", raw)
	default:
		return fmt.Errorf("%q is not an http(s) URL", raw)
	}
}

func isLoopbackHost(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func orDefault(v, def []string) []string {
	if len(v) == 0 {
		return def
	}
	return v
}
