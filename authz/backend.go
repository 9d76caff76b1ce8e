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
	"github.com/pfrgateway/caddy-pfr/tenancy"
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
// gets a token for one record whose owner granted it, with the requested
// system/ scopes that the grant covers. The record is the one whose token
// endpoint was addressed (at, as the record's SMART configuration names
// it), else the one named by resource (RFC 8707) or aud, else the only
// record whose owner granted the client; a client granted on several
// records must say which.
func (s *Server) clientCredentials(ctx context.Context, client *Client, form url.Values, at *tenancy.Record) (map[string]any, *oauthErr) {
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
	g, oe := s.backendGrant(ctx, client, form, at)
	if oe != nil {
		return nil, oe
	}
	scope := slices.DeleteFunc(requested, func(sc string) bool { return !slices.Contains(g.Scope, sc) })
	if len(scope) == 0 {
		return nil, &oauthErr{status: http.StatusBadRequest, code: "invalid_scope", desc: "none of the requested scopes was granted", logAsAttack: true}
	}
	return s.issue(ctx, client, g, scope, "", nil, "")
}

// backendGrant finds the grant a backend token request uses (see
// clientCredentials): the newest grant of the client on the record.
func (s *Server) backendGrant(ctx context.Context, client *Client, form url.Values, at *tenancy.Record) (*Grant, *oauthErr) {
	unavailable := func(err error) *oauthErr {
		return &oauthErr{status: http.StatusServiceUnavailable, code: "temporarily_unavailable", desc: "try again", cause: err}
	}
	notGranted := &oauthErr{status: http.StatusBadRequest, code: "invalid_grant", desc: "the record's owner has not granted this client", logAsAttack: true}
	target := form.Get("resource")
	if target == "" {
		target = form.Get("aud")
	}
	rec := at
	if target != "" {
		named, err := s.recordForAudience(ctx, target)
		if errors.Is(err, ErrNotFound) {
			return nil, badRequest("invalid_target", "resource is not the FHIR base of a record served here")
		}
		if err != nil {
			return nil, unavailable(err)
		}
		if at != nil && named.ID != at.ID {
			return nil, &oauthErr{status: http.StatusBadRequest, code: "invalid_target",
				desc: "resource names another record than the one whose token endpoint this is", logAsAttack: true}
		}
		rec = named
	}
	var grants []Grant
	var err error
	if rec != nil {
		grants, err = s.cfg.Store.Grants(ctx, rec.ID)
	} else {
		grants, err = s.cfg.Store.ClientGrants(ctx, client.ID)
	}
	if err != nil {
		return nil, unavailable(err)
	}
	var g *Grant
	records := map[string]bool{}
	for i := range grants {
		if grants[i].ClientID != client.ID {
			continue
		}
		if rec == nil {
			// The record is implied: only an active one counts.
			active, err := s.recordActive(ctx, grants[i].RecordID)
			if err != nil {
				return nil, unavailable(err)
			}
			if !active {
				continue
			}
			records[grants[i].RecordID] = true
		}
		if g == nil || grants[i].Created.After(g.Created) {
			g = &grants[i]
		}
	}
	switch {
	case g == nil && rec == nil:
		return nil, &oauthErr{status: http.StatusBadRequest, code: "invalid_grant", desc: "no record's owner has granted this client", logAsAttack: true}
	case g == nil:
		return nil, notGranted
	case len(records) > 1:
		return nil, badRequest("invalid_target", fmt.Sprintf("the client is granted on %d records: use the token endpoint of the record's SMART configuration, or name its FHIR base with resource (RFC 8707)", len(records)))
	}
	return g, nil
}

// recordActive reports whether the record with id exists and is active.
func (s *Server) recordActive(ctx context.Context, id string) (bool, error) {
	var rec *tenancy.Record
	err := s.cfg.Tenancy.View(ctx, func(tx tenancy.Tx) error {
		var err error
		rec, err = tx.Record(id)
		return err
	})
	if errors.Is(err, tenancy.ErrNotFound) {
		return false, nil
	}
	return err == nil && rec.Status == tenancy.StatusActive, err
}
