package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/authz"
	"github.com/pfrgateway/caddy-pfr/egress"
	"github.com/pfrgateway/caddy-pfr/internal/kv"
	"github.com/pfrgateway/caddy-pfr/tenancy"
)

// AuthzConfig turns on the built-in SMART authorization server: every
// record's `/.well-known/smart-configuration` names it, apps register,
// people log in and approve each app on a consent page, and its tokens are
// trusted like any configured issuer's. Its endpoints live on the apex
// under `/oauth/`.
type AuthzConfig struct {
	// The server's issuer: the apex origin as clients reach it, e.g.
	// `https://pfr.example.com` or `https://pfr.localhost:8443`.
	// Default: `https://{base_domain}`.
	Issuer string `json:"issuer,omitempty"`

	// Who the user is. Default: the development accounts, which only a
	// gateway on localhost may use.
	Login *LoginConfig `json:"login,omitempty"`

	// Clients known from the configuration (besides registered ones).
	Clients []ClientConfig `json:"clients,omitempty"`

	// Turn off dynamic client registration (RFC 7591) and client
	// management (RFC 7592).
	DisableRegistration bool `json:"disable_registration,omitempty"`

	// Lifetime of access and ID tokens; a disconnected app's access token
	// is refused at its next use anyway. Default: 5m.
	AccessTokenTTL caddy.Duration `json:"access_token_ttl,omitempty"`

	// Longest life of an offline_access refresh token family. Default: 90 days.
	RefreshTokenTTL caddy.Duration `json:"refresh_token_ttl,omitempty"`

	// How long a browser stays logged in. Default: 12h.
	SessionTTL caddy.Duration `json:"session_ttl,omitempty"`

	// How often a new signing key takes over. Default: 7 days.
	KeyRotation caddy.Duration `json:"key_rotation,omitempty"`
}

// LoginConfig says how people log in to the authorization server.
type LoginConfig struct {
	// `dev` (the development accounts: the user name is the account, as
	// with `pfr token --sub`; localhost only) or `oidc` (an OpenID
	// provider, as a relying party with code + PKCE).
	Provider string `json:"provider"`

	// The OpenID provider's issuer URL (`oidc`).
	Issuer string `json:"issuer,omitempty"`

	// The gateway's client id at the provider (`oidc`); its redirect URI
	// is `{issuer}/oauth/callback`.
	ClientID string `json:"client_id,omitempty"`

	// The gateway's client secret at the provider; empty for a public
	// client. Placeholders such as `{env.PFR_OIDC_SECRET}` are replaced.
	ClientSecret string `json:"client_secret,omitempty"`

	// Scopes asked for besides `openid`.
	Scopes []string `json:"scopes,omitempty"`
}

// ClientConfig is a static OAuth client.
type ClientConfig struct {
	// The client_id. Required.
	ID string `json:"id"`

	// The name shown on the consent page.
	Name string `json:"name,omitempty"`

	// A client_secret (client_secret_basic). Placeholders are replaced.
	// Empty, without a JWKS: a public client (PKCE).
	Secret string `json:"secret,omitempty"`

	// A file holding the client's public keys as a JWKS (private_key_jwt).
	JWKSFile string `json:"jwks_file,omitempty"`

	// Redirect URIs, compared exactly.
	RedirectURIs []string `json:"redirect_uris,omitempty"`

	// The scopes it may ask for. Default: any.
	Scope string `json:"scope,omitempty"`

	// authorization_code and/or refresh_token. Default: both.
	GrantTypes []string `json:"grant_types,omitempty"`
}

// newAuthzServer builds the authorization server of a gateway.
func (g *Gateway) newAuthzServer(db kv.DB, tenants tenancy.Store) (*authz.Server, error) {
	c := g.AuthorizationServer
	store, err := authz.NewStore(db)
	if err != nil {
		return nil, err
	}
	issuer := c.Issuer
	if issuer == "" {
		issuer = "https://" + g.BaseDomain
	}
	var login authz.Login
	switch l := c.Login; {
	case l == nil || l.Provider == "dev":
		if !auth.DevIssuerAllowed(g.BaseDomain) {
			return nil, fmt.Errorf("the development accounts (login dev) are only allowed when base_domain is localhost or under .localhost; configure login oidc")
		}
		dev, err := auth.LoadOrCreateDevIssuer(g.DataDir)
		if err != nil {
			return nil, err
		}
		login = authz.DevLogin{Issuer: dev.Issuer()}
	case l.Provider == "oidc":
		if l.Issuer == "" || l.ClientID == "" {
			return nil, fmt.Errorf("login oidc needs the provider's issuer and a client_id")
		}
		login = &authz.OIDCLogin{Issuer: l.Issuer, ClientID: l.ClientID, Scopes: l.Scopes,
			ClientSecret: caddy.NewReplacer().ReplaceKnown(l.ClientSecret, ""),
			HTTPClient:   &http.Client{Timeout: 10 * time.Second}}
	default:
		return nil, fmt.Errorf("login %q: want dev or oidc", l.Provider)
	}
	var clients []authz.StaticClient
	for _, cc := range c.Clients {
		sc := authz.StaticClient{ID: cc.ID, Name: cc.Name, RedirectURIs: cc.RedirectURIs, Scope: cc.Scope,
			GrantTypes: cc.GrantTypes, Secret: caddy.NewReplacer().ReplaceKnown(cc.Secret, "")}
		if cc.JWKSFile != "" {
			raw, err := os.ReadFile(cc.JWKSFile)
			if err != nil {
				return nil, fmt.Errorf("client %q: %w", cc.ID, err)
			}
			if !json.Valid(raw) {
				return nil, fmt.Errorf("client %q: %s is not JSON", cc.ID, cc.JWKSFile)
			}
			sc.JWKS = raw
		}
		clients = append(clients, sc)
	}
	// Clients' jwks_uri are fetched under the same outbound policy as
	// drop-off webhooks (public https; webhook_allow networks).
	allow, err := egress.ParseAllow(g.WebhookAllow)
	if err != nil {
		return nil, fmt.Errorf("webhook_allow: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return authz.New(ctx, authz.Config{
		Egress: &egress.Policy{Allow: allow},
		Store:  store, Tenancy: tenants, Issuer: issuer, BaseDomain: g.BaseDomain, FHIRPath: g.FHIRPath,
		Login: login, Clients: clients, DisableRegistration: c.DisableRegistration,
		AccessTokenTTL: time.Duration(c.AccessTokenTTL), RefreshTokenTTL: time.Duration(c.RefreshTokenTTL),
		SessionTTL: time.Duration(c.SessionTTL), KeyRotation: time.Duration(c.KeyRotation),
		Logger: g.logger.Named("authz"),
	})
}

// parseAuthz parses the authorization_server block:
//
//	authorization_server {
//	    issuer <apex origin>
//	    login dev
//	    login oidc <provider issuer> {
//	        client_id     <id>
//	        client_secret <secret>
//	        scope         <scope>...
//	    }
//	    client <id> {
//	        name         <name>
//	        secret       <secret>
//	        jwks_file    <path>
//	        redirect_uri <uri>...
//	        scope        <scope>...
//	        grant_type   <type>...
//	    }
//	    registration off
//	    access_token_ttl  <duration>
//	    refresh_token_ttl <duration>
//	    session_ttl       <duration>
//	    key_rotation      <duration>
//	}
func parseAuthz(d *caddyfile.Dispenser) (*AuthzConfig, error) {
	c := new(AuthzConfig)
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch key := d.Val(); key {
		case "issuer":
			if err := oneArg(d, &c.Issuer); err != nil {
				return nil, err
			}
		case "login":
			l, err := parseLogin(d)
			if err != nil {
				return nil, err
			}
			c.Login = l
		case "client":
			cc, err := parseClient(d)
			if err != nil {
				return nil, err
			}
			c.Clients = append(c.Clients, cc)
		case "registration":
			var v string
			if err := oneArg(d, &v); err != nil {
				return nil, err
			}
			if v != "off" && v != "on" {
				return nil, d.Errf("registration takes on or off, not %q", v)
			}
			c.DisableRegistration = v == "off"
		case "access_token_ttl", "refresh_token_ttl", "session_ttl", "key_rotation":
			var v string
			if err := oneArg(d, &v); err != nil {
				return nil, err
			}
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur <= 0 {
				return nil, d.Errf("%s must be a positive duration: %q", key, v)
			}
			*map[string]*caddy.Duration{"access_token_ttl": &c.AccessTokenTTL, "refresh_token_ttl": &c.RefreshTokenTTL,
				"session_ttl": &c.SessionTTL, "key_rotation": &c.KeyRotation}[key] = caddy.Duration(dur)
		default:
			return nil, d.Errf("unrecognized authorization_server option '%s'", key)
		}
	}
	return c, nil
}

func parseLogin(d *caddyfile.Dispenser) (*LoginConfig, error) {
	if !d.NextArg() {
		return nil, d.ArgErr()
	}
	l := &LoginConfig{Provider: d.Val()}
	switch l.Provider {
	case "dev":
		if d.NextArg() {
			return nil, d.ArgErr()
		}
		return l, nil
	case "oidc":
		if !d.NextArg() {
			return nil, d.Err("login oidc needs the provider's issuer URL")
		}
		l.Issuer = d.Val()
		if d.NextArg() {
			return nil, d.ArgErr()
		}
	default:
		return nil, d.Errf("login takes dev or oidc, not %q", l.Provider)
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch key := d.Val(); key {
		case "client_id":
			if err := oneArg(d, &l.ClientID); err != nil {
				return nil, err
			}
		case "client_secret":
			if err := oneArg(d, &l.ClientSecret); err != nil {
				return nil, err
			}
		case "scope":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return nil, d.ArgErr()
			}
			l.Scopes = append(l.Scopes, args...)
		default:
			return nil, d.Errf("unrecognized login oidc option '%s'", key)
		}
	}
	return l, nil
}

func parseClient(d *caddyfile.Dispenser) (ClientConfig, error) {
	var c ClientConfig
	if !d.NextArg() {
		return c, d.Err("client needs its id")
	}
	c.ID = d.Val()
	if d.NextArg() {
		return c, d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		key := d.Val()
		var one *string
		switch key {
		case "name":
			one = &c.Name
		case "secret":
			one = &c.Secret
		case "jwks_file":
			one = &c.JWKSFile
		case "redirect_uri", "scope", "grant_type":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return c, d.ArgErr()
			}
			switch key {
			case "redirect_uri":
				c.RedirectURIs = append(c.RedirectURIs, args...)
			case "scope":
				c.Scope = joinScope(c.Scope, args)
			default:
				c.GrantTypes = append(c.GrantTypes, args...)
			}
			continue
		default:
			return c, d.Errf("unrecognized client option '%s'", key)
		}
		if err := oneArg(d, one); err != nil {
			return c, err
		}
	}
	return c, nil
}

func joinScope(have string, more []string) string {
	for _, s := range more {
		if have != "" {
			have += " "
		}
		have += s
	}
	return have
}

// logAuthz says where the authorization server runs.
func logAuthz(log *zap.Logger, s *authz.Server) {
	log.Info("built-in SMART authorization server enabled", zap.String("issuer", s.Issuer()))
}
