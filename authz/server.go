package authz

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"crypto/rand"

	"go.uber.org/zap"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/egress"
	"github.com/pfrgateway/caddy-pfr/tenancy"
)

// Defaults of Config.
const (
	DefaultAccessTokenTTL   = 5 * time.Minute
	DefaultRefreshTokenTTL  = 90 * 24 * time.Hour
	DefaultOnlineRefreshTTL = 12 * time.Hour
	DefaultSessionTTL       = 12 * time.Hour
	DefaultKeyRotation      = 7 * 24 * time.Hour
	// CodeTTL is how long an authorization code is valid.
	CodeTTL = time.Minute
	// PendingTTL is how long a user has for login and consent.
	PendingTTL = 15 * time.Minute
)

// PathPrefix is where the server's endpoints live under its issuer URL.
const PathPrefix = "/oauth/"

// Config configures a Server.
type Config struct {
	// Store keeps the server's state. Required.
	Store Store
	// Tenancy holds records, accounts and memberships. Required.
	Tenancy tenancy.Store
	// Issuer is the server's issuer: the apex origin, e.g.
	// https://pfr.example.com (endpoints under /oauth/). Required.
	Issuer string
	// BaseDomain is the apex host; records live at {slug}.{BaseDomain}.
	BaseDomain string
	// FHIRPath is each record's FHIR base path. Default /fhir.
	FHIRPath string
	// Login says who the user is. Required.
	Login Login
	// Clients are static clients from the configuration.
	Clients []StaticClient
	// DisableRegistration turns off dynamic client registration (RFC 7591)
	// and client management (RFC 7592).
	DisableRegistration bool
	// AccessTokenTTL is the lifetime of access and ID tokens. Default 5m.
	AccessTokenTTL time.Duration
	// RefreshTokenTTL bounds an offline_access refresh token family.
	// Default 90 days.
	RefreshTokenTTL time.Duration
	// OnlineRefreshTTL bounds an online_access refresh token family.
	// Default 12h.
	OnlineRefreshTTL time.Duration
	// SessionTTL is how long a browser stays logged in. Default 12h.
	SessionTTL time.Duration
	// KeyRotation is how often a new signing key takes over. Default 7 days.
	KeyRotation time.Duration
	// PatientName returns the person's name shown on the consent page for
	// a record ("" when unknown). Optional.
	PatientName func(ctx context.Context, rec *tenancy.Record) string
	// Egress is the outbound policy for fetching clients' jwks_uri. Nil:
	// jwks_uri is refused (keys are registered by value only).
	Egress *egress.Policy
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger gets security events. Default: none.
	Logger *zap.Logger
}

// StaticClient is a client given in the configuration.
type StaticClient struct {
	ID           string
	Name         string
	Secret       string // client_secret_basic when set
	JWKS         json.RawMessage
	RedirectURIs []string
	Scope        string
	GrantTypes   []string
}

// Server is the authorization server. It is safe for concurrent use.
type Server struct {
	cfg        Config
	issuer     *url.URL
	keys       *keyring
	status     statusCache
	clientKeys clientKeys
	log        *zap.Logger
}

// New checks cfg, stores the static clients and returns a Server.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Store == nil || cfg.Tenancy == nil || cfg.Login == nil {
		return nil, errors.New("authz: store, tenancy and login are required")
	}
	iss, err := url.Parse(cfg.Issuer)
	if err != nil || (iss.Scheme != "https" && iss.Scheme != "http") || iss.Host == "" || iss.Path != "" || iss.RawQuery != "" {
		return nil, fmt.Errorf("authz: issuer %q must be an origin such as https://pfr.example.com", cfg.Issuer)
	}
	if iss.Scheme == "http" && !auth.DevIssuerAllowed(iss.Hostname()) && iss.Hostname() != "127.0.0.1" {
		return nil, fmt.Errorf("authz: issuer %q must be https (http only on localhost)", cfg.Issuer)
	}
	if cfg.BaseDomain == "" {
		cfg.BaseDomain = iss.Hostname()
	}
	cfg.BaseDomain = strings.ToLower(strings.TrimSuffix(cfg.BaseDomain, "."))
	if cfg.FHIRPath == "" {
		cfg.FHIRPath = "/fhir"
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.AccessTokenTTL, DefaultAccessTokenTTL)
	def(&cfg.RefreshTokenTTL, DefaultRefreshTokenTTL)
	def(&cfg.OnlineRefreshTTL, DefaultOnlineRefreshTTL)
	def(&cfg.SessionTTL, DefaultSessionTTL)
	def(&cfg.KeyRotation, DefaultKeyRotation)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	s := &Server{cfg: cfg, issuer: iss, log: cfg.Logger}
	s.keys = &keyring{store: cfg.Store, now: cfg.Now, rotateEvery: cfg.KeyRotation,
		keep: 2*cfg.AccessTokenTTL + time.Minute}
	keep := make([]string, 0, len(cfg.Clients))
	for _, sc := range cfg.Clients {
		if err := s.putStaticClient(ctx, sc); err != nil {
			return nil, err
		}
		keep = append(keep, sc.ID)
	}
	if err := cfg.Store.DropStaticClients(ctx, keep); err != nil {
		return nil, fmt.Errorf("authz: %w", err)
	}
	return s, nil
}

// Issuer returns the iss of the server's tokens.
func (s *Server) Issuer() string { return s.cfg.Issuer }

func (s *Server) endpoint(name string) string { return s.cfg.Issuer + PathPrefix + name }

// IssuerConfig returns the configuration that makes the gateway's pipeline
// trust this server's tokens: its keys, its audiences (each record's FHIR
// base, checked by the pipeline) and a check, on every request, that the
// token's grant and refresh family are still alive. The identity it hands
// on is the account that logged in, so memberships apply as for any token.
func (s *Server) IssuerConfig() auth.IssuerConfig {
	return auth.IssuerConfig{Issuer: s.cfg.Issuer, Keys: s.keys, Check: s.checkToken}
}

func (s *Server) checkToken(ctx context.Context, id *auth.Identity) (*auth.Identity, error) {
	grantID, _ := id.Claims["grant"].(string)
	fam, _ := id.Claims["fam"].(string)
	jti, _ := id.Claims["jti"].(string)
	if grantID == "" {
		return nil, fmt.Errorf("%w: the token names no grant", auth.ErrRevoked)
	}
	key, now := statusKey(grantID, fam, jti), s.cfg.Now()
	g := s.status.get(key, now)
	if g == nil {
		var err error
		g, err = s.cfg.Store.TokenStatus(ctx, grantID, fam, jti)
		if errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("%w: the grant was revoked", auth.ErrRevoked)
		}
		if err != nil {
			return nil, err
		}
		s.status.put(key, g, now)
	}
	out := *id
	out.Issuer, out.Subject = g.Issuer, g.Subject
	return &out, nil
}

// ServeHTTP serves the endpoints under /oauth/ and the issuer's OpenID
// discovery document on the apex host, and each record's own token
// endpoint on the record's host (see IsRecordEndpoint).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if slug, ok := s.recordSlug(r.Host); ok {
		if !IsRecordEndpoint(r.URL.Path) {
			http.NotFound(w, r)
			return
		}
		s.cors(w, r, func() { s.serveRecordToken(w, r, slug) })
		return
	}
	if r.URL.Path == "/.well-known/openid-configuration" || r.URL.Path == "/.well-known/oauth-authorization-server" {
		s.cors(w, r, func() { s.serveJSON(w, http.StatusOK, s.openIDConfiguration(), true) })
		return
	}
	name, ok := strings.CutPrefix(r.URL.Path, PathPrefix)
	if !ok {
		http.NotFound(w, r)
		return
	}
	switch name {
	case "authorize":
		s.serveAuthorize(w, r)
	case "login":
		s.serveLogin(w, r)
	case "callback":
		s.serveCallback(w, r)
	case "consent":
		s.serveConsent(w, r)
	case "token":
		s.cors(w, r, func() { s.serveToken(w, r, nil) })
	case "revoke":
		s.cors(w, r, func() { s.serveRevoke(w, r) })
	case "introspect":
		s.cors(w, r, func() { s.serveIntrospect(w, r) })
	case "register":
		s.cors(w, r, func() { s.serveRegister(w, r) })
	case "jwks":
		s.cors(w, r, func() {
			doc, err := s.keys.jwks(r.Context())
			if err != nil {
				s.oauthError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "signing keys unavailable", err)
				return
			}
			w.Header().Set("Cache-Control", "public, max-age=60")
			s.serveJSON(w, http.StatusOK, doc, false)
		})
	default:
		// RFC 7592: a registered client's configuration endpoint.
		if id, ok := strings.CutPrefix(name, "register/"); ok && id != "" && !strings.Contains(id, "/") {
			s.cors(w, r, func() { s.serveClientConfig(w, r, id) })
			return
		}
		http.NotFound(w, r)
	}
}

// IsRecordEndpoint reports whether the path on a record's host belongs to
// the server: the record's token endpoint, which its SMART configuration
// names, so that a client (a SMART Backend Service above all) that
// discovered it gets tokens for that record without naming it.
func IsRecordEndpoint(path string) bool { return path == PathPrefix+"token" }

// recordSlug returns the slug of a record's host ({slug}.{BaseDomain}).
func (s *Server) recordSlug(hostport string) (string, bool) {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == strings.ToLower(s.issuer.Hostname()) {
		return "", false // the issuer may live under the base domain too
	}
	slug, ok := strings.CutSuffix(host, "."+s.cfg.BaseDomain)
	if !ok || tenancy.ValidateSlug(slug) != nil {
		return "", false
	}
	return slug, true
}

// IsEndpoint reports whether the apex path belongs to the server.
func IsEndpoint(path string) bool {
	return strings.HasPrefix(path, PathPrefix) || path == "/.well-known/openid-configuration" ||
		path == "/.well-known/oauth-authorization-server"
}

// cors answers a CORS preflight, or runs fn with CORS headers for any
// origin: these endpoints take no cookies, so any web app may call them.
func (s *Server) cors(w http.ResponseWriter, r *http.Request, fn func()) {
	h := w.Header()
	if r.Header.Get("Origin") != "" {
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Expose-Headers", "WWW-Authenticate")
	}
	if r.Method == http.MethodOptions {
		h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE")
		h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Accept")
		h.Set("Access-Control-Max-Age", "600")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	fn()
}

func (s *Server) serveJSON(w http.ResponseWriter, status int, v any, cacheable bool) {
	if !cacheable && w.Header().Get("Cache-Control") == "" {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Pragma", "no-cache")
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// oauthError writes an RFC 6749 error answer.
func (s *Server) oauthError(w http.ResponseWriter, status int, code, description string, cause error) {
	if cause != nil {
		s.log.Info("oauth request refused", zap.String("error", code), zap.String("description", description), zap.Error(cause))
	}
	if status == http.StatusUnauthorized && w.Header().Get("WWW-Authenticate") == "" {
		w.Header().Set("WWW-Authenticate", `Basic realm="`+s.cfg.Issuer+`"`)
	}
	s.serveJSON(w, status, map[string]string{"error": code, "error_description": description}, false)
}

// scopesSupported are the scopes the server understands.
var scopesSupported = []string{
	"openid", "fhirUser", "launch/patient", "offline_access", "online_access",
	"patient/*.rs", "patient/*.cruds", "patient/*.read", "patient/*.write", "patient/*.*",
	"user/*.rs", "user/*.cruds", "system/*.rs", "system/*.cruds",
}

// grantTypes the server implements.
var grantTypes = []string{"authorization_code", "refresh_token", "client_credentials"}

// authMethods are the token endpoint's client authentication methods.
var authMethods = []string{"client_secret_basic", "private_key_jwt", "none"}

// capabilities are what the server does (SMART App Launch 2.2, 8.1.2).
var capabilities = []string{
	"launch-standalone", "client-public", "client-confidential-symmetric", "client-confidential-asymmetric",
	"sso-openid-connect", "context-standalone-patient", "permission-patient", "permission-user",
	"permission-v1", "permission-v2", "permission-offline", "permission-online", "authorize-post",
}

// SMARTConfiguration returns the /.well-known/smart-configuration of the
// record at slug: every member true to what the server does. Its
// token_endpoint is the record's own (on the record's host), which issues
// tokens for that record only; with slug "" it is the issuer's.
func (s *Server) SMARTConfiguration(slug string) map[string]any {
	token := s.endpoint("token")
	if slug != "" {
		token = s.recordTokenEndpoint(slug)
	}
	return map[string]any{
		"issuer":                                           s.cfg.Issuer,
		"jwks_uri":                                         s.endpoint("jwks"),
		"authorization_endpoint":                           s.endpoint("authorize"),
		"token_endpoint":                                   token,
		"revocation_endpoint":                              s.endpoint("revoke"),
		"introspection_endpoint":                           s.endpoint("introspect"),
		"registration_endpoint":                            s.registrationEndpoint(),
		"grant_types_supported":                            grantTypes,
		"response_types_supported":                         []string{"code"},
		"code_challenge_methods_supported":                 []string{"S256"},
		"scopes_supported":                                 scopesSupported,
		"token_endpoint_auth_methods_supported":            authMethods,
		"token_endpoint_auth_signing_alg_values_supported": []string{"RS256", "RS384", "ES256", "ES384"},
		"capabilities":                                     capabilities,
	}
}

func (s *Server) registrationEndpoint() any {
	if s.cfg.DisableRegistration {
		return nil
	}
	return s.endpoint("register")
}

// openIDConfiguration is the issuer's OpenID Connect discovery document.
func (s *Server) openIDConfiguration() map[string]any {
	doc := s.SMARTConfiguration("")
	if s.cfg.DisableRegistration {
		delete(doc, "registration_endpoint")
	}
	doc["subject_types_supported"] = []string{"public"}
	doc["id_token_signing_alg_values_supported"] = []string{"RS256"}
	doc["claims_supported"] = []string{"iss", "sub", "aud", "exp", "iat", "fhirUser", "nonce"}
	return doc
}

// recordOrigin is the origin of the record at slug.
func (s *Server) recordOrigin(slug string) string {
	host := slug + "." + s.cfg.BaseDomain
	if p := s.issuer.Port(); p != "" {
		host += ":" + p
	}
	return s.issuer.Scheme + "://" + host
}

// recordBase is the FHIR base of the record at slug.
func (s *Server) recordBase(slug string) string { return s.recordOrigin(slug) + s.cfg.FHIRPath }

// recordTokenEndpoint is the token endpoint of the record at slug.
func (s *Server) recordTokenEndpoint(slug string) string {
	return s.recordOrigin(slug) + PathPrefix + "token"
}

// activeRecord returns the active record at slug, or ErrNotFound.
func (s *Server) activeRecord(ctx context.Context, slug string) (*tenancy.Record, error) {
	var rec *tenancy.Record
	err := s.cfg.Tenancy.View(ctx, func(tx tenancy.Tx) error {
		var err error
		rec, err = tx.RecordBySlug(slug)
		return err
	})
	if errors.Is(err, tenancy.ErrNotFound) || (err == nil && rec.Status != tenancy.StatusActive) {
		return nil, ErrNotFound
	}
	return rec, err
}

// recordForAudience returns the active record whose FHIR base is aud.
func (s *Server) recordForAudience(ctx context.Context, aud string) (*tenancy.Record, error) {
	u, err := url.Parse(aud)
	if err != nil || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, ErrNotFound
	}
	host := strings.ToLower(u.Hostname())
	slug, ok := strings.CutSuffix(host, "."+s.cfg.BaseDomain)
	if !ok || tenancy.ValidateSlug(slug) != nil {
		return nil, ErrNotFound
	}
	if strings.TrimSuffix(aud, "/") != s.recordBase(slug) {
		return nil, ErrNotFound
	}
	return s.activeRecord(ctx, slug)
}

// randomToken returns n random bytes, base64url.
func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

// hashSecret is how secrets are kept: SHA-256, hex.
func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

func equalSecret(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// SetPatientName sets Config.PatientName; call it before serving.
func (s *Server) SetPatientName(fn func(ctx context.Context, rec *tenancy.Record) string) {
	s.cfg.PatientName = fn
}
