package auth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// allowedAlgs are the only signature algorithms accepted: asymmetric ones.
// "none" and the HMAC family are excluded, so a token can neither skip the
// signature nor be signed with a public key used as an HMAC secret.
var allowedAlgs = []string{
	"RS256", "RS384", "RS512",
	"PS256", "PS384", "PS512",
	"ES256", "ES384", "ES512",
	"EdDSA",
}

// Identity is what a verified token says about its bearer. Treat it as
// read-only: it may be shared with other requests through the cache.
type Identity struct {
	Issuer    string
	Subject   string
	ClientID  string
	Scopes    []string
	Audience  []string
	ExpiresAt time.Time
	// Claims holds every claim of the token as decoded from JSON.
	Claims map[string]any
}

// Grants parses the identity's scopes into SMART permissions.
func (id *Identity) Grants() Grants { return ParseScopes(id.Scopes) }

// Verifier checks bearer tokens against a fixed set of trusted issuers.
// It is safe for concurrent use.
type Verifier struct {
	opts    Options
	issuers map[string]*trustedIssuer
	parser  *jwt.Parser
	cache   *tokenCache
}

type trustedIssuer struct {
	config IssuerConfig
	keys   keyResolver
	remote *remoteKeySet // nil for a static KeySource
}

// NewVerifier returns a Verifier trusting the given issuers.
func NewVerifier(issuers []IssuerConfig, opts Options) (*Verifier, error) {
	opts = opts.withDefaults()
	v := &Verifier{
		opts:    opts,
		issuers: make(map[string]*trustedIssuer, len(issuers)),
		parser: jwt.NewParser(
			jwt.WithValidMethods(allowedAlgs),
			jwt.WithLeeway(opts.Leeway),
			jwt.WithTimeFunc(opts.Now),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			// One token, one spelling: non-canonical base64url (unused
			// bits set in the last character) is refused, so caches and
			// replay checks keyed by the token string see one token.
			jwt.WithStrictDecoding(),
		),
		cache: newTokenCache(opts.TokenCacheSize),
	}
	for i, c := range issuers {
		if err := c.validate(); err != nil {
			return nil, fmt.Errorf("trusted issuer %d: %w", i, err)
		}
		if _, dup := v.issuers[c.Issuer]; dup {
			return nil, fmt.Errorf("trusted issuer %q configured twice", c.Issuer)
		}
		c.ScopeClaims = orDefault(c.ScopeClaims, defaultScopeClaims)
		c.ClientIDClaims = orDefault(c.ClientIDClaims, defaultClientIDClaims)
		ti := &trustedIssuer{config: c}
		if c.Keys != nil {
			ti.keys = staticKeys{c.Keys}
		} else {
			ti.remote = &remoteKeySet{
				issuer:     c.Issuer,
				jwksURL:    c.JWKSURL,
				client:     opts.HTTPClient,
				now:        opts.Now,
				ttl:        opts.JWKSCacheTTL,
				minRefetch: opts.MinRefetchInterval,
			}
			ti.keys = ti.remote
		}
		v.issuers[c.Issuer] = ti
	}
	return v, nil
}

// Verify checks token and returns the identity it carries. audiences are
// the aud values acceptable for this request (typically the PFR's FHIR base
// URL); the issuer's configured Audiences are accepted too. Every failure
// is a *TokenError.
func (v *Verifier) Verify(ctx context.Context, token string, audiences []string) (*Identity, error) {
	if token == "" {
		return nil, tokenErr(ErrMalformed, "empty token", nil)
	}
	if len(token) > maxTokenBytes {
		return nil, tokenErr(ErrMalformed, "token too large", nil)
	}
	hash := v.cache.hash(token)
	if id := v.cache.get(hash, token, v.opts.Now()); id != nil {
		// The cache answers only the very bytes it verified (which passed
		// compactJWS then). The audience depends on the request, so a
		// cache hit checks it again.
		ti := v.issuers[id.Issuer]
		if err := v.checkAudience(ti, id.Audience, audiences); err != nil {
			return nil, err
		}
		return ti.check(ctx, id)
	}
	if !compactJWS(token) {
		// Go's base64 decoders skip '\r' and '\n' even when strict: a token
		// with line breaks would be another spelling of the same token.
		return nil, tokenErr(ErrMalformed, "token has characters outside base64url", nil)
	}

	header, err := parseHeader(token)
	if err != nil {
		return nil, err
	}
	var issuer *trustedIssuer
	claims := jwt.MapClaims{}
	_, err = v.parser.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		iss, err := t.Claims.GetIssuer()
		if err != nil || iss == "" {
			return nil, tokenErr(ErrMissingClaim, "missing iss", err)
		}
		ti, ok := v.issuers[iss]
		if !ok {
			return nil, tokenErr(ErrUnknownIssuer, "untrusted issuer", nil)
		}
		issuer = ti
		// The key comes only from the issuer the token names: a key of
		// another trusted issuer can never verify it.
		return ti.keys.resolve(ctx, header.Kid, header.Alg)
	})
	if err != nil {
		return nil, mapParseError(err)
	}

	id, err := issuer.identity(claims)
	if err != nil {
		return nil, err
	}
	if err := v.checkAudience(issuer, id.Audience, audiences); err != nil {
		return nil, err
	}
	// A cached token is verified again after the JWKS cache period, so a key
	// the issuer removed stops working for cached tokens too.
	until := id.ExpiresAt
	if limit := v.opts.Now().Add(v.opts.JWKSCacheTTL); limit.Before(until) {
		until = limit
	}
	v.cache.put(hash, strings.Clone(token), id, until)
	return issuer.check(ctx, id)
}

// check runs the issuer's Check hook, if any, on a verified identity.
func (ti *trustedIssuer) check(ctx context.Context, id *Identity) (*Identity, error) {
	if ti.config.Check == nil {
		return id, nil
	}
	out, err := ti.config.Check(ctx, id)
	if err != nil {
		var te *TokenError
		if errors.As(err, &te) {
			return nil, te
		}
		if errors.Is(err, ErrRevoked) {
			return nil, tokenErr(ErrRevoked, "token revoked", err)
		}
		return nil, tokenErr(ErrKeysUnavailable, "token status unavailable", err)
	}
	return out, nil
}

// Discovery returns a copy of the OIDC discovery document of a trusted
// issuer (cached for the JWKS cache period), for instance to build a
// SMART configuration. Issuers with a static KeySource have none.
func (v *Verifier) Discovery(ctx context.Context, issuer string) (map[string]any, error) {
	ti, ok := v.issuers[issuer]
	if !ok {
		return nil, fmt.Errorf("issuer %q is not trusted", issuer)
	}
	if ti.remote == nil {
		return nil, fmt.Errorf("issuer %q has static keys and no discovery document", issuer)
	}
	return ti.remote.discoveryCopy(ctx)
}

// Issuers lists the trusted issuers, sorted.
func (v *Verifier) Issuers() []string {
	out := make([]string, 0, len(v.issuers))
	for iss := range v.issuers {
		out = append(out, iss)
	}
	slices.Sort(out)
	return out
}

func (v *Verifier) checkAudience(ti *trustedIssuer, tokenAud, requested []string) error {
	for _, aud := range tokenAud {
		if aud == "" {
			continue
		}
		if slices.Contains(requested, aud) || (ti != nil && slices.Contains(ti.config.Audiences, aud)) {
			return nil
		}
	}
	return tokenErr(ErrBadAudience, "audience not accepted", nil)
}

// jwsHeader is the part of the JOSE header checked before anything else.
type jwsHeader struct {
	Alg  string          `json:"alg"`
	Kid  string          `json:"kid"`
	Crit json.RawMessage `json:"crit"`
}

// compactJWS reports whether token has only the characters of a JWS compact
// serialization: the base64url alphabet and '.'. It is asked of every
// token the cache does not hold (so that no other spelling of a token is
// verified as that token), so it looks each byte up in a table.
func compactJWS(token string) bool {
	for i := 0; i < len(token); i++ {
		if !jwsChar[token[i]] {
			return false
		}
	}
	return true
}

// jwsChar marks the bytes of a JWS compact serialization.
var jwsChar = func() (t [256]bool) {
	for c := range 256 {
		t[c] = c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
	}
	return t
}()

func parseHeader(token string) (jwsHeader, error) {
	var h jwsHeader
	encoded, _, ok := strings.Cut(token, ".")
	if !ok || strings.Count(token, ".") != 2 {
		return h, tokenErr(ErrMalformed, "token is not a JWS compact serialization", nil)
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(encoded)
	if err != nil {
		return h, tokenErr(ErrMalformed, "token header is not canonical base64url", err)
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		return h, tokenErr(ErrMalformed, "token header is not JSON", err)
	}
	if !slices.Contains(allowedAlgs, h.Alg) {
		return h, tokenErr(ErrAlgorithm, "signing algorithm not allowed", nil)
	}
	if h.Crit != nil {
		// RFC 7515 4.1.11: extensions we do not understand must be refused.
		return h, tokenErr(ErrMalformed, "critical header extensions are not supported", nil)
	}
	return h, nil
}

// mapParseError turns golang-jwt's errors into *TokenError.
func mapParseError(err error) error {
	var te *TokenError
	if errors.As(err, &te) {
		return te
	}
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return tokenErr(ErrMalformed, "malformed token", err)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return tokenErr(ErrBadSignature, "invalid signature", err)
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return tokenErr(ErrMissingClaim, "missing exp", err)
	case errors.Is(err, jwt.ErrTokenExpired):
		return tokenErr(ErrExpired, "token expired", err)
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return tokenErr(ErrNotYetValid, "token not valid yet", err)
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return tokenErr(ErrNotYetValid, "token issued in the future", err)
	case errors.Is(err, jwt.ErrInvalidType):
		return tokenErr(ErrMalformed, "claim has the wrong type", err)
	default:
		return tokenErr(ErrMalformed, "malformed token", err)
	}
}
