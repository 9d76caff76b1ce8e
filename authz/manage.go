package authz

import (
	"errors"
	"net/http"
	"strings"

	"go.uber.org/zap"
)

// serveClientConfig is a registered client's configuration endpoint
// (RFC 7592), /oauth/register/{client_id}, for the holder of the client's
// registration access token (a bearer token, RFC 6750): GET reads the
// client, PUT replaces its metadata (and rotates the token: the one used
// stops working), DELETE deletes it with its grants, so its tokens stop.
// Static clients have no token; an unknown client, a wrong token and
// another client's token all get the same 401.
func (s *Server) serveClientConfig(w http.ResponseWriter, r *http.Request, id string) {
	if s.cfg.DisableRegistration {
		http.NotFound(w, r)
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodPut, http.MethodDelete:
	default:
		w.Header().Set("Allow", "GET, PUT, DELETE")
		s.oauthError(w, http.StatusMethodNotAllowed, "invalid_request", "use GET, PUT or DELETE", nil)
		return
	}
	token, ok := bearer(r)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="`+s.cfg.Issuer+`"`)
		s.oauthError(w, http.StatusUnauthorized, "invalid_request", "the registration access token is required (Authorization: Bearer)", nil)
		return
	}
	ctx := r.Context()
	hash := hashSecret(token)
	invalid := func(cause error) { s.invalidRegistrationToken(w, id, cause) }
	c, err := s.cfg.Store.Client(ctx, id)
	switch {
	case errors.Is(err, ErrNotFound):
		invalid(err)
		return
	case err != nil:
		s.oauthError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "try again", err)
		return
	case c.Static || c.RegistrationHash == "" || !equalSecret(c.RegistrationHash, hash):
		invalid(nil)
		return
	}
	switch r.Method {
	case http.MethodGet:
		s.serveJSON(w, http.StatusOK, s.clientInfo(c, token), false)
	case http.MethodDelete:
		err := s.cfg.Store.DeleteClient(ctx, id, hash)
		s.status.invalidate() // its grants are gone
		if errors.Is(err, ErrNotFound) {
			invalid(err) // deleted or rotated meanwhile
			return
		}
		if err != nil {
			s.oauthError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "try again", err)
			return
		}
		s.log.Info("client deleted itself", zap.String("client", id))
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusNoContent)
	case http.MethodPut:
		s.updateClient(w, r, c, hash)
	}
}

// updateClient replaces c's metadata with the request's (RFC 7592 section
// 2.2): what the request leaves out takes its registration default, except
// the authentication method, which stays (it cannot change); client_id
// must be the client's and a client_secret, if sent, its current one.
func (s *Server) updateClient(w http.ResponseWriter, r *http.Request, c *Client, hash string) {
	meta, ok := s.readMetadata(w, r)
	if !ok {
		return
	}
	switch {
	case meta.ClientID != c.ID:
		s.oauthError(w, http.StatusBadRequest, "invalid_request", "client_id must be the client's own", nil)
		return
	case meta.ClientSecret != "" && (c.SecretHash == "" || !equalSecret(hashSecret(meta.ClientSecret), c.SecretHash)):
		s.oauthError(w, http.StatusBadRequest, "invalid_client_metadata", "client_secret is not the client's current secret (a client cannot choose its secret)", nil)
		return
	case meta.AuthMethod != "" && meta.AuthMethod != c.AuthMethod:
		s.oauthError(w, http.StatusBadRequest, "invalid_client_metadata", "token_endpoint_auth_method cannot change: register a new client", nil)
		return
	}
	next := &Client{ID: c.ID, SecretHash: c.SecretHash, AuthMethod: c.AuthMethod, Created: c.Created}
	if !s.applyMetadata(w, r, next, meta) {
		return
	}
	token := randomToken(32)
	next.RegistrationHash = hashSecret(token)
	err := s.cfg.Store.UpdateClient(r.Context(), next, hash)
	if errors.Is(err, ErrNotFound) {
		s.invalidRegistrationToken(w, c.ID, err) // deleted or rotated meanwhile
		return
	}
	if err != nil {
		s.oauthError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "try again", err)
		return
	}
	s.log.Info("client updated", zap.String("client", c.ID), zap.String("name", next.Name), zap.Strings("redirect_uris", next.RedirectURIs))
	s.serveJSON(w, http.StatusOK, s.clientInfo(next, token), false)
}

// invalidRegistrationToken answers a request whose registration access
// token is not the client's (RFC 7592 section 2, RFC 6750 section 3.1).
func (s *Server) invalidRegistrationToken(w http.ResponseWriter, id string, cause error) {
	s.log.Warn("security: client configuration request with an invalid registration access token", zap.String("client", id), zap.Error(cause))
	w.Header().Set("WWW-Authenticate", `Bearer realm="`+s.cfg.Issuer+`", error="invalid_token"`)
	s.oauthError(w, http.StatusUnauthorized, "invalid_token", "the registration access token is not valid for this client", nil)
}

// bearer returns the request's bearer token (RFC 6750 section 2.1).
func bearer(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}
