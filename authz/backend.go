package authz

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/pfrgateway/caddy-pfr/auth"
)

// Errors of GrantBackend.
var (
	// ErrNotBackendClient: the client is unknown, or not registered for
	// client_credentials with private_key_jwt.
	ErrNotBackendClient = errors.New("not a backend service client")
	// ErrScope: a scope that cannot be granted that way.
	ErrScope = errors.New("scope not grantable")
)

// GrantBackend lets a backend service (SMART Backend Services:
// client_credentials with private_key_jwt) use a record with the given
// system/ scopes, as the account that grants it: the record's owner. It
// replaces the client's earlier grant from that account; RevokeApp ends
// it.
func (s *Server) GrantBackend(ctx context.Context, recordID, accountID, iss, sub, clientID string, scope []string) (*Grant, error) {
	c, err := s.cfg.Store.Client(ctx, clientID)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%w: no client %q", ErrNotBackendClient, clientID)
	}
	if err != nil {
		return nil, err
	}
	if !slices.Contains(c.GrantTypes, "client_credentials") || c.AuthMethod != "private_key_jwt" {
		return nil, fmt.Errorf("%w: %q is not registered for client_credentials with private_key_jwt", ErrNotBackendClient, clientID)
	}
	if len(scope) == 0 {
		return nil, fmt.Errorf("%w: at least one system/ scope is needed", ErrScope)
	}
	if got := systemScopes(scope, c.Scope); len(got) != len(scope) {
		return nil, fmt.Errorf("%w: only system/ resource scopes the client registered can be granted to a backend service", ErrScope)
	}
	g := &Grant{ID: randomToken(16), RecordID: recordID, ClientID: clientID, AccountID: accountID,
		Issuer: iss, Subject: sub, Scope: slices.Clone(scope), Created: s.cfg.Now()}
	err = s.cfg.Store.SaveGrant(ctx, g)
	s.status.invalidate() // the grant it replaced is gone
	if err != nil {
		return nil, err
	}
	return g, nil
}

// systemScopes keeps the system/ resource scopes of requested (without
// duplicates); allowed, when not empty, bounds them.
func systemScopes(requested []string, allowed string) []string {
	var out []string
	limit := strings.Fields(allowed)
	for _, sc := range requested {
		if slices.Contains(out, sc) || (len(limit) > 0 && !slices.Contains(limit, sc)) {
			continue
		}
		if rs, ok := auth.ParseResourceScope(sc); ok && rs.Context == "system" {
			out = append(out, sc)
		}
	}
	return out
}

// clientCredentials is SMART Backend Services: a private_key_jwt client
// gets a token for one record (named by resource, RFC 8707, or aud) whose
// owner granted it, with the requested system/ scopes that the grant
// covers.
func (s *Server) clientCredentials(ctx context.Context, client *Client, form url.Values) (map[string]any, *oauthErr) {
	if !slices.Contains(client.GrantTypes, "client_credentials") {
		return nil, badRequest("unauthorized_client", "the client may not use client_credentials")
	}
	if client.AuthMethod != "private_key_jwt" {
		return nil, &oauthErr{status: http.StatusUnauthorized, code: "invalid_client", desc: "backend services authenticate with private_key_jwt"}
	}
	requested := systemScopes(strings.Fields(form.Get("scope")), client.Scope)
	if len(requested) == 0 {
		return nil, badRequest("invalid_scope", "ask for system/ scopes")
	}
	target := form.Get("resource")
	if target == "" {
		target = form.Get("aud")
	}
	if target == "" {
		return nil, badRequest("invalid_target", "name the record's FHIR base with resource (RFC 8707)")
	}
	rec, err := s.recordForAudience(ctx, target)
	if err != nil {
		return nil, badRequest("invalid_target", "resource is not the FHIR base of a record served here")
	}
	grants, err := s.cfg.Store.Grants(ctx, rec.ID)
	if err != nil {
		return nil, &oauthErr{status: http.StatusServiceUnavailable, code: "temporarily_unavailable", desc: "try again", cause: err}
	}
	var g *Grant
	for i := range grants {
		if grants[i].ClientID == client.ID && (g == nil || grants[i].Created.After(g.Created)) {
			g = &grants[i]
		}
	}
	if g == nil {
		return nil, &oauthErr{status: http.StatusBadRequest, code: "invalid_grant", desc: "the record's owner has not granted this client", logAsAttack: true}
	}
	scope := slices.DeleteFunc(requested, func(sc string) bool { return !slices.Contains(g.Scope, sc) })
	if len(scope) == 0 {
		return nil, &oauthErr{status: http.StatusBadRequest, code: "invalid_scope", desc: "none of the requested scopes was granted", logAsAttack: true}
	}
	return s.issue(ctx, client, g, scope, "", nil, "")
}
