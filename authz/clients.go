package authz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"

	"github.com/pfrgateway/caddy-pfr/auth"
)

const assertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// maxAssertionLife bounds how far in the future a client assertion's exp
// may be.
const maxAssertionLife = 5 * time.Minute

// authenticateClient identifies the client of a token, revocation or
// introspection request: HTTP Basic (client_secret_basic), a signed
// assertion (private_key_jwt), or a public client's client_id.
func (s *Server) authenticateClient(r *http.Request, form url.Values, audiences []string) (*Client, *oauthErr) {
	ctx := r.Context()
	unauthorized := func(desc string, attack bool) *oauthErr {
		return &oauthErr{status: http.StatusUnauthorized, code: "invalid_client", desc: desc, logAsAttack: attack}
	}
	if id, secret, ok := r.BasicAuth(); ok {
		id, err1 := url.QueryUnescape(id)
		secret, err2 := url.QueryUnescape(secret)
		if err1 != nil || err2 != nil {
			return nil, unauthorized("malformed client credentials", false)
		}
		c, err := s.cfg.Store.Client(ctx, id)
		if err != nil || c.AuthMethod != "client_secret_basic" || !equalSecret(hashSecret(secret), c.SecretHash) {
			return nil, unauthorized("client authentication failed", true)
		}
		return c, nil
	}
	if form.Get("client_assertion_type") != "" || form.Get("client_assertion") != "" {
		if form.Get("client_assertion_type") != assertionType {
			return nil, unauthorized("client_assertion_type must be "+assertionType, false)
		}
		return s.verifyAssertion(ctx, form.Get("client_assertion"), form.Get("client_id"), audiences)
	}
	c, err := s.cfg.Store.Client(ctx, form.Get("client_id"))
	if err != nil {
		return nil, unauthorized("unknown client", false)
	}
	if c.AuthMethod != "none" {
		return nil, unauthorized("the client must authenticate with "+c.AuthMethod, true)
	}
	return c, nil
}

// verifyAssertion checks a private_key_jwt client assertion (RFC 7523):
// signed by one of the client's registered keys, iss = sub = the client,
// aud = the token endpoint addressed (one of audiences), a short exp, and
// a jti never seen before.
func (s *Server) verifyAssertion(ctx context.Context, assertion, formClientID string, audiences []string) (*Client, *oauthErr) {
	fail := func(desc string, cause error) *oauthErr {
		return &oauthErr{status: http.StatusUnauthorized, code: "invalid_client", desc: desc, cause: cause, logAsAttack: true}
	}
	unverified, _, err := jwt.NewParser().ParseUnverified(assertion, jwt.MapClaims{})
	if err != nil {
		return nil, fail("the client assertion is not a JWT", err)
	}
	clientID, _ := unverified.Claims.GetIssuer()
	if formClientID != "" && formClientID != clientID {
		return nil, fail("client_id differs from the assertion's issuer", nil)
	}
	c, err := s.cfg.Store.Client(ctx, clientID)
	if err != nil || c.AuthMethod != "private_key_jwt" {
		return nil, fail("unknown client or not a private_key_jwt client", err)
	}
	verify := func(refetch bool) (*auth.Identity, error) {
		keys, err := s.keysFor(ctx, c, refetch)
		if err != nil {
			return nil, err
		}
		v, err := auth.NewVerifier([]auth.IssuerConfig{{Issuer: c.ID, Keys: keys}}, auth.Options{Now: s.cfg.Now, TokenCacheSize: -1})
		if err != nil {
			return nil, err
		}
		return v.Verify(ctx, assertion, audiences)
	}
	id, err := verify(false)
	if errors.Is(err, auth.ErrUnknownKey) && c.JWKSURI != "" {
		id, err = verify(true) // the client may have rotated its keys
	}
	if err != nil {
		return nil, fail("the client assertion is not valid", err)
	}
	if id.Subject != c.ID {
		return nil, fail("the assertion's sub must be the client id", nil)
	}
	jti, _ := id.Claims["jti"].(string)
	if jti == "" || id.ExpiresAt.After(s.cfg.Now().Add(maxAssertionLife)) {
		return nil, fail("the assertion needs a jti and an exp at most 5 minutes ahead", nil)
	}
	if err := s.cfg.Store.UseAssertion(ctx, c.ID, jti, id.ExpiresAt); err != nil {
		return nil, fail("the client assertion was already used", err)
	}
	return c, nil
}

// putStaticClient stores (or replaces) a client from the configuration.
func (s *Server) putStaticClient(ctx context.Context, sc StaticClient) error {
	c := &Client{ID: sc.ID, Name: sc.Name, RedirectURIs: sc.RedirectURIs, Scope: sc.Scope,
		GrantTypes: sc.GrantTypes, JWKS: sc.JWKS, Static: true, Created: s.cfg.Now(), AuthMethod: "none"}
	switch {
	case sc.Secret != "":
		c.AuthMethod, c.SecretHash = "client_secret_basic", hashSecret(sc.Secret)
	case len(sc.JWKS) > 0:
		c.AuthMethod = "private_key_jwt"
	}
	if len(c.GrantTypes) == 0 {
		c.GrantTypes = []string{"authorization_code", "refresh_token"}
	}
	if err := s.validateClient(c); err != nil {
		return fmt.Errorf("authz: client %q: %w", sc.ID, err)
	}
	if err := s.cfg.Store.PutStaticClient(ctx, c); errors.Is(err, ErrExists) {
		return fmt.Errorf("authz: client id %q is taken by a registered client", c.ID)
	} else if err != nil {
		return err
	}
	return nil
}

// validateClient checks a client's metadata.
func (s *Server) validateClient(c *Client) error {
	if c.ID == "" || len(c.ID) > 200 {
		return errors.New("client_id must be 1 to 200 characters")
	}
	for _, gt := range c.GrantTypes {
		if !slices.Contains(grantTypes, gt) {
			return fmt.Errorf("grant type %q is not supported", gt)
		}
	}
	if slices.Contains(c.GrantTypes, "authorization_code") && len(c.RedirectURIs) == 0 {
		return fmt.Errorf("%w: the authorization code grant needs redirect_uris", errRedirectURI)
	}
	if slices.Contains(c.GrantTypes, "client_credentials") && c.AuthMethod != "private_key_jwt" {
		return errors.New("client_credentials (SMART Backend Services) needs private_key_jwt")
	}
	for _, u := range c.RedirectURIs {
		if err := checkRedirectURI(u); err != nil {
			return fmt.Errorf("%w: %w", errRedirectURI, err)
		}
	}
	switch c.AuthMethod {
	case "none", "client_secret_basic":
	case "private_key_jwt":
		if c.JWKSURI != "" {
			if len(c.JWKS) > 0 {
				return errors.New("give jwks or jwks_uri, not both")
			}
			return nil // checked by fetching it (registration)
		}
		keys, err := auth.ParseJWKS(c.JWKS)
		if err != nil || keys.Len() == 0 {
			return errors.New("private_key_jwt needs jwks (or jwks_uri) with at least one usable public key (RSA 2048+ or EC)")
		}
	default:
		return fmt.Errorf("token_endpoint_auth_method %q is not supported", c.AuthMethod)
	}
	return nil
}

// checkRedirectURI accepts absolute https URIs, http only to loopback
// (RFC 8252 native apps), and private-use schemes with a dot (com.example.app:/cb);
// never a fragment.
func checkRedirectURI(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Fragment != "" || strings.Contains(raw, "#") {
		return fmt.Errorf("redirect_uri %q must be an absolute URI without fragment", raw)
	}
	switch u.Scheme {
	case "https":
		if u.Host == "" {
			return fmt.Errorf("redirect_uri %q has no host", raw)
		}
	case "http":
		h := u.Hostname()
		ip := net.ParseIP(h)
		if !(h == "localhost" || ip != nil && ip.IsLoopback()) {
			return fmt.Errorf("redirect_uri %q: plain http only to a loopback address", raw)
		}
	case "javascript", "data", "file", "vbscript", "about", "blob":
		return fmt.Errorf("redirect_uri %q: scheme not allowed", raw)
	default:
		if !strings.Contains(u.Scheme, ".") {
			return fmt.Errorf("redirect_uri %q: a private-use scheme must be a reversed domain name", raw)
		}
	}
	return nil
}

// maxRegistrationBytes bounds a registration request.
const maxRegistrationBytes = 64 << 10

// errRedirectURI marks a metadata error about redirect URIs
// (invalid_redirect_uri, RFC 7591 section 3.2.2).
var errRedirectURI = errors.New("invalid redirect URI")

// clientMetadata is a registration or update request (RFC 7591 section 2,
// RFC 7592 section 2.2).
type clientMetadata struct {
	ClientID     string          `json:"client_id"`
	ClientSecret string          `json:"client_secret"`
	RedirectURIs []string        `json:"redirect_uris"`
	AuthMethod   string          `json:"token_endpoint_auth_method"`
	GrantTypes   []string        `json:"grant_types"`
	ResponseType []string        `json:"response_types"`
	Name         string          `json:"client_name"`
	Scope        string          `json:"scope"`
	JWKS         json.RawMessage `json:"jwks"`
	JWKSURI      string          `json:"jwks_uri"`
}

// readMetadata reads a JSON body of client metadata; ok is false when the
// error answer was written.
func (s *Server) readMetadata(w http.ResponseWriter, r *http.Request) (*clientMetadata, bool) {
	var meta clientMetadata
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRegistrationBytes))
	if err := dec.Decode(&meta); err != nil {
		s.oauthError(w, http.StatusBadRequest, "invalid_client_metadata", "the body must be a JSON object of client metadata", nil)
		return nil, false
	}
	return &meta, true
}

// applyMetadata sets c's metadata from meta, with RFC 7591's defaults for
// what meta leaves out, and checks it (fetching a jwks_uri through the
// outbound policy). c.AuthMethod must be set. ok is false when the error
// answer was written.
func (s *Server) applyMetadata(w http.ResponseWriter, r *http.Request, c *Client, meta *clientMetadata) bool {
	for _, rt := range meta.ResponseType {
		if rt != "code" {
			s.oauthError(w, http.StatusBadRequest, "invalid_client_metadata", "response_types may only hold code", nil)
			return false
		}
	}
	c.Name, c.RedirectURIs, c.GrantTypes = strings.TrimSpace(meta.Name), meta.RedirectURIs, meta.GrantTypes
	c.Scope, c.JWKS, c.JWKSURI = meta.Scope, meta.JWKS, meta.JWKSURI
	if len(c.Name) > 200 {
		c.Name = c.Name[:200]
	}
	if len(c.GrantTypes) == 0 {
		c.GrantTypes = []string{"authorization_code"}
	}
	if err := s.validateClient(c); err != nil {
		code := "invalid_client_metadata"
		if errors.Is(err, errRedirectURI) {
			code = "invalid_redirect_uri"
		}
		s.oauthError(w, http.StatusBadRequest, code, err.Error(), nil)
		return false
	}
	if c.JWKSURI != "" {
		// Fetched now, through the outbound policy: a jwks_uri aimed at
		// the gateway's own network is refused before anything is stored.
		if c.AuthMethod != "private_key_jwt" {
			s.oauthError(w, http.StatusBadRequest, "invalid_client_metadata", "jwks_uri is for private_key_jwt clients", nil)
			return false
		}
		if _, err := s.keysFor(r.Context(), c, true); err != nil {
			s.oauthError(w, http.StatusBadRequest, "invalid_client_metadata", err.Error(), err)
			return false
		}
	}
	return true
}

// serveRegister is dynamic client registration (RFC 7591). The answer
// carries the client's configuration endpoint and its registration access
// token (RFC 7592).
func (s *Server) serveRegister(w http.ResponseWriter, r *http.Request) {
	if s.cfg.DisableRegistration {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		s.oauthError(w, http.StatusMethodNotAllowed, "invalid_request", "use POST", nil)
		return
	}
	meta, ok := s.readMetadata(w, r)
	if !ok {
		return
	}
	c := &Client{ID: "c-" + randomToken(16), AuthMethod: meta.AuthMethod, Created: s.cfg.Now()}
	if c.AuthMethod == "" {
		c.AuthMethod = "client_secret_basic" // RFC 7591 section 2
	}
	if !s.applyMetadata(w, r, c, meta) {
		return
	}
	secret := ""
	if c.AuthMethod == "client_secret_basic" {
		secret = randomToken(32)
		c.SecretHash = hashSecret(secret)
	}
	rat := randomToken(32)
	c.RegistrationHash = hashSecret(rat)
	if err := s.cfg.Store.CreateClient(r.Context(), c); err != nil {
		s.oauthError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "try again", err)
		return
	}
	s.log.Info("client registered", zap.String("client", c.ID), zap.String("name", c.Name), zap.Strings("redirect_uris", c.RedirectURIs))
	out := s.clientInfo(c, rat)
	if secret != "" {
		out["client_secret"] = secret
	}
	s.serveJSON(w, http.StatusCreated, out, false)
}

// clientInfo is the client information response (RFC 7591 section 3.2.1,
// RFC 7592 section 3) without the secret, which is kept as a hash only.
func (s *Server) clientInfo(c *Client, registrationToken string) map[string]any {
	out := map[string]any{
		"client_id": c.ID, "client_id_issued_at": c.Created.Unix(), "client_name": c.Name,
		"redirect_uris": c.RedirectURIs, "token_endpoint_auth_method": c.AuthMethod,
		"grant_types": c.GrantTypes, "response_types": []string{"code"},
		"registration_client_uri":   s.endpoint("register/" + url.PathEscape(c.ID)),
		"registration_access_token": registrationToken,
	}
	if c.RedirectURIs == nil {
		out["redirect_uris"] = []string{}
	}
	if c.SecretHash != "" {
		out["client_secret_expires_at"] = 0 // required where a secret was issued; it never expires
	}
	if c.Scope != "" {
		out["scope"] = c.Scope
	}
	if len(c.JWKS) > 0 {
		out["jwks"] = c.JWKS
	}
	if c.JWKSURI != "" {
		out["jwks_uri"] = c.JWKSURI
	}
	return out
}
