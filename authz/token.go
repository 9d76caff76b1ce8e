package authz

import (
	"context"
	"crypto/sha256"
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"

	"github.com/pfrgateway/caddy-pfr/tenancy"
)

// verifierRE is a PKCE code verifier (RFC 7636 section 4.1).
var verifierRE = regexp.MustCompile(`^[A-Za-z0-9._~-]{43,128}$`)

// oauthErr is an error answer of the token endpoint.
type oauthErr struct {
	status      int
	code, desc  string
	cause       error
	logAsAttack bool
}

func (e *oauthErr) Error() string { return e.code + ": " + e.desc }

func badRequest(code, desc string) *oauthErr {
	return &oauthErr{status: http.StatusBadRequest, code: code, desc: desc}
}

func (s *Server) writeOAuthErr(w http.ResponseWriter, e *oauthErr) {
	if e.logAsAttack {
		s.log.Warn("security: token request refused", zap.String("error", e.code), zap.String("description", e.desc), zap.Error(e.cause))
	}
	s.oauthError(w, e.status, e.code, e.desc, e.cause)
}

// clientRequest reads a POSTed form and authenticates its client, for the
// token, revocation and introspection endpoints. ok is false when the
// error answer was written.
func (s *Server) clientRequest(w http.ResponseWriter, r *http.Request, rec *tenancy.Record) (url.Values, *Client, bool) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		s.oauthError(w, http.StatusMethodNotAllowed, "invalid_request", "use POST", nil)
		return nil, nil, false
	}
	form, ok := params(w, r)
	if !ok {
		s.oauthError(w, http.StatusBadRequest, "invalid_request", "the form is malformed or repeats a parameter", nil)
		return nil, nil, false
	}
	client, oe := s.authenticateClient(r, form, s.assertionAudiences(rec))
	if oe != nil {
		s.writeOAuthErr(w, oe)
		return nil, nil, false
	}
	return form, client, true
}

// assertionAudiences are the audiences a client assertion may name: the
// issuer's token endpoint and, at a record's token endpoint, that one.
func (s *Server) assertionAudiences(rec *tenancy.Record) []string {
	if rec == nil {
		return []string{s.endpoint("token")}
	}
	return []string{s.endpoint("token"), s.recordTokenEndpoint(rec.Slug)}
}

// serveRecordToken is a record's token endpoint: the issuer's, with the
// record given by the host the client addressed.
func (s *Server) serveRecordToken(w http.ResponseWriter, r *http.Request, slug string) {
	rec, err := s.activeRecord(r.Context(), slug)
	if errors.Is(err, ErrNotFound) {
		s.oauthError(w, http.StatusNotFound, "invalid_request", "no record is served at this address", nil)
		return
	}
	if err != nil {
		s.oauthError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "try again", err)
		return
	}
	s.serveToken(w, r, rec)
}

// serveToken is the token endpoint; rec is the record whose token
// endpoint was addressed (nil: the issuer's).
func (s *Server) serveToken(w http.ResponseWriter, r *http.Request, rec *tenancy.Record) {
	form, client, ok := s.clientRequest(w, r, rec)
	if !ok {
		return
	}
	var res map[string]any
	var oe *oauthErr
	switch gt := form.Get("grant_type"); gt {
	case "authorization_code":
		res, oe = s.exchangeCode(r.Context(), client, form)
	case "refresh_token":
		res, oe = s.refresh(r.Context(), client, form)
	case "client_credentials":
		res, oe = s.clientCredentials(r.Context(), client, form, rec)
	default:
		oe = badRequest("unsupported_grant_type", "grant_type must be authorization_code, refresh_token or client_credentials")
	}
	if oe != nil {
		s.writeOAuthErr(w, oe)
		return
	}
	s.serveJSON(w, http.StatusOK, res, false)
}

func (s *Server) exchangeCode(ctx context.Context, client *Client, form url.Values) (map[string]any, *oauthErr) {
	if !slices.Contains(client.GrantTypes, "authorization_code") {
		return nil, badRequest("unauthorized_client", "the client may not use the authorization code grant")
	}
	codeHash := hashSecret(form.Get("code"))
	c, err := s.cfg.Store.UseCode(ctx, codeHash, s.cfg.Now())
	switch {
	case errors.Is(err, ErrUsed):
		s.status.invalidate()
		return nil, &oauthErr{status: http.StatusBadRequest, code: "invalid_grant", desc: "the code was already used; the tokens issued for it are revoked", logAsAttack: true, cause: err}
	case errors.Is(err, ErrNotFound):
		return nil, badRequest("invalid_grant", "the code is unknown or expired")
	case err != nil:
		return nil, &oauthErr{status: http.StatusServiceUnavailable, code: "temporarily_unavailable", desc: "try again", cause: err}
	}
	if c.ClientID != client.ID {
		return nil, &oauthErr{status: http.StatusBadRequest, code: "invalid_grant", desc: "the code was issued to another client", logAsAttack: true}
	}
	if form.Get("redirect_uri") != c.RedirectURI {
		return nil, badRequest("invalid_grant", "redirect_uri differs from the authorization request's")
	}
	verifier := form.Get("code_verifier")
	if !verifierRE.MatchString(verifier) {
		return nil, badRequest("invalid_grant", "code_verifier (PKCE) is missing or malformed")
	}
	sum := sha256.Sum256([]byte(verifier))
	if !equalSecret(b64(sum[:]), c.Challenge) {
		return nil, &oauthErr{status: http.StatusBadRequest, code: "invalid_grant", desc: "code_verifier does not match the code_challenge", logAsAttack: true}
	}
	g, err := s.cfg.Store.Grant(ctx, c.GrantID)
	if err != nil {
		return nil, badRequest("invalid_grant", "the grant was revoked")
	}
	return s.issue(ctx, client, g, c.Scope, c.Nonce, nil, codeHash)
}

func (s *Server) refresh(ctx context.Context, client *Client, form url.Values) (map[string]any, *oauthErr) {
	if !slices.Contains(client.GrantTypes, "refresh_token") {
		return nil, badRequest("unauthorized_client", "the client may not use refresh tokens")
	}
	requested := strings.Fields(form.Get("scope"))
	var scopeErr *oauthErr
	token := randomToken(32)
	now := s.cfg.Now()
	n, err := s.cfg.Store.RotateRefresh(ctx, hashSecret(form.Get("refresh_token")), hashSecret(token), func(old *Refresh) (*Refresh, error) {
		if old.ClientID != client.ID {
			scopeErr = &oauthErr{status: http.StatusBadRequest, code: "invalid_grant", desc: "the refresh token was issued to another client", logAsAttack: true}
			return nil, scopeErr
		}
		scope := old.Scope
		if len(requested) > 0 {
			if !subset(requested, old.Scope) {
				scopeErr = &oauthErr{status: http.StatusBadRequest, code: "invalid_scope", desc: "a refresh cannot widen the granted scope", logAsAttack: true}
				return nil, scopeErr
			}
			scope = requested
		}
		// The client's registered scope, if it narrowed since (RFC 7592),
		// bounds every token from now on.
		if limit := strings.Fields(client.Scope); len(limit) > 0 {
			scope = slices.DeleteFunc(slices.Clone(scope), func(sc string) bool { return !slices.Contains(limit, sc) })
			if len(scope) == 0 {
				scopeErr = badRequest("invalid_scope", "the client's registered scope no longer covers this grant")
				return nil, scopeErr
			}
		}
		next := *old
		next.Scope, next.Used = scope, false
		next.Expires = old.FamilyExpires
		return &next, nil
	}, now)
	switch {
	case scopeErr != nil:
		return nil, scopeErr
	case errors.Is(err, ErrUsed):
		s.status.invalidate()
		return nil, &oauthErr{status: http.StatusBadRequest, code: "invalid_grant",
			desc: "the refresh token was already used: every token of its family is revoked", logAsAttack: true}
	case errors.Is(err, ErrNotFound):
		return nil, badRequest("invalid_grant", "the refresh token is unknown, expired or revoked")
	case err != nil:
		return nil, &oauthErr{status: http.StatusServiceUnavailable, code: "temporarily_unavailable", desc: "try again", cause: err}
	}
	g, err := s.cfg.Store.Grant(ctx, n.GrantID)
	if err != nil {
		return nil, badRequest("invalid_grant", "the grant was revoked")
	}
	return s.issue(ctx, client, g, n.Scope, n.Nonce, &refreshed{family: n.Family, token: token}, "")
}

// refreshed is a refresh token already rotated into the store.
type refreshed struct{ family, token string }

// issue answers a token request for grant g with scope: an access token,
// and as the scope asks, the launch patient, an ID token and a refresh
// token (a new family, or the rotated one).
func (s *Server) issue(ctx context.Context, client *Client, g *Grant, scope []string, nonce string, rt *refreshed, codeHash string) (map[string]any, *oauthErr) {
	var rec *tenancy.Record
	var role tenancy.Role
	err := s.cfg.Tenancy.View(ctx, func(tx tenancy.Tx) error {
		var err error
		if rec, err = tx.Record(g.RecordID); err != nil {
			return err
		}
		if m, err := tx.Membership(g.RecordID, g.AccountID); err == nil {
			role = m.Role
		}
		return nil
	})
	if err != nil || rec.Status != tenancy.StatusActive {
		return nil, badRequest("invalid_grant", "the record is not available")
	}
	if role == "" {
		return nil, badRequest("invalid_grant", "the account that approved the app is no longer a member of the record")
	}
	now := s.cfg.Now()
	res := map[string]any{"token_type": "Bearer", "expires_in": int(s.cfg.AccessTokenTTL.Seconds()), "scope": strings.Join(scope, " ")}
	fam := ""
	if rt != nil {
		fam = rt.family
		res["refresh_token"] = rt.token
	} else if slices.Contains(client.GrantTypes, "refresh_token") && (slices.Contains(scope, "offline_access") || slices.Contains(scope, "online_access")) {
		fam = randomToken(16)
		ttl := s.cfg.OnlineRefreshTTL
		if slices.Contains(scope, "offline_access") {
			ttl = s.cfg.RefreshTokenTTL
		}
		token := randomToken(32)
		r := &Refresh{Family: fam, GrantID: g.ID, ClientID: client.ID, Scope: scope, Nonce: nonce,
			Expires: now.Add(ttl), FamilyExpires: now.Add(ttl)}
		if err := s.cfg.Store.PutRefresh(ctx, hashSecret(token), r); err != nil {
			return nil, &oauthErr{status: http.StatusServiceUnavailable, code: "temporarily_unavailable", desc: "try again", cause: err}
		}
		if codeHash != "" {
			if err := s.cfg.Store.CodeIssued(ctx, codeHash, fam); err != nil {
				return nil, &oauthErr{status: http.StatusServiceUnavailable, code: "temporarily_unavailable", desc: "try again", cause: err}
			}
		}
		res["refresh_token"] = token
	}
	base := s.recordBase(rec.Slug)
	claims := jwt.MapClaims{
		"iss": s.cfg.Issuer, "sub": g.AccountID, "aud": base, "client_id": client.ID,
		"scope": strings.Join(scope, " "), "grant": g.ID, "jti": randomToken(16),
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(s.cfg.AccessTokenTTL).Unix(),
	}
	if fam != "" {
		claims["fam"] = fam
	}
	if slices.Contains(scope, "launch/patient") && rec.PatientID != "" {
		res["patient"] = rec.PatientID
		res["need_patient_banner"] = true
		claims["patient"] = rec.PatientID
	}
	access, err := s.sign(ctx, claims)
	if err != nil {
		return nil, &oauthErr{status: http.StatusServiceUnavailable, code: "temporarily_unavailable", desc: "signing failed", cause: err}
	}
	res["access_token"] = access
	if slices.Contains(scope, "openid") {
		idc := jwt.MapClaims{
			"iss": s.cfg.Issuer, "sub": g.AccountID, "aud": client.ID, "iat": now.Unix(),
			"exp": now.Add(s.cfg.AccessTokenTTL).Unix(), "auth_time": g.Created.Unix(),
		}
		if nonce != "" {
			idc["nonce"] = nonce
		}
		// fhirUser: the record's Patient, when the person signed in is
		// the record's subject (they created it for themselves and own it).
		if slices.Contains(scope, "fhirUser") && rec.Relationship == tenancy.RelationshipSelf && role == tenancy.RoleOwner && rec.PatientID != "" {
			idc["fhirUser"] = base + "/Patient/" + rec.PatientID
		}
		idt, err := s.sign(ctx, idc)
		if err != nil {
			return nil, &oauthErr{status: http.StatusServiceUnavailable, code: "temporarily_unavailable", desc: "signing failed", cause: err}
		}
		res["id_token"] = idt
	}
	return res, nil
}

// sign signs claims with the current key (RS256).
func (s *Server) sign(ctx context.Context, claims jwt.MapClaims) (string, error) {
	key, err := s.keys.signer(ctx)
	if err != nil {
		return "", err
	}
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	t.Header["kid"] = key.kid
	return t.SignedString(key.priv)
}

// parseOwn verifies a token this server signed (signature, iss, exp) and
// returns its claims.
func (s *Server) parseOwn(ctx context.Context, token string) (jwt.MapClaims, error) {
	claims := jwt.MapClaims{}
	_, err := jwt.NewParser(jwt.WithValidMethods([]string{"RS256"}), jwt.WithIssuer(s.cfg.Issuer),
		jwt.WithExpirationRequired(), jwt.WithTimeFunc(s.cfg.Now)).ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		return s.keys.Key(ctx, kid)
	})
	return claims, err
}

// serveRevoke is the revocation endpoint (RFC 7009): a refresh token
// revokes its family, an access token is put on the revocation list.
func (s *Server) serveRevoke(w http.ResponseWriter, r *http.Request) {
	form, client, ok := s.clientRequest(w, r, nil)
	if !ok {
		return
	}
	token := form.Get("token")
	if claims, err := s.parseOwn(r.Context(), token); err == nil {
		if cid, _ := claims["client_id"].(string); cid == client.ID {
			jti, _ := claims["jti"].(string)
			exp, _ := claims.GetExpirationTime()
			if jti != "" && exp != nil {
				err := s.cfg.Store.RevokeAccessToken(r.Context(), jti, exp.Time)
				s.status.invalidate()
				if err != nil {
					s.oauthError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "try again", err)
					return
				}
			}
		}
	} else {
		err := s.cfg.Store.RevokeRefresh(r.Context(), hashSecret(token), client.ID)
		s.status.invalidate()
		if err != nil && !errors.Is(err, ErrNotFound) {
			s.oauthError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "try again", err)
			return
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
}

// serveIntrospect is the introspection endpoint (RFC 7662), for
// authenticated clients.
func (s *Server) serveIntrospect(w http.ResponseWriter, r *http.Request) {
	form, _, ok := s.clientRequest(w, r, nil)
	if !ok {
		return
	}
	claims, err := s.parseOwn(r.Context(), form.Get("token"))
	if err != nil {
		s.serveJSON(w, http.StatusOK, map[string]any{"active": false}, false)
		return
	}
	grantID, _ := claims["grant"].(string)
	fam, _ := claims["fam"].(string)
	jti, _ := claims["jti"].(string)
	if _, err := s.cfg.Store.TokenStatus(r.Context(), grantID, fam, jti); err != nil || grantID == "" {
		s.serveJSON(w, http.StatusOK, map[string]any{"active": false}, false)
		return
	}
	out := map[string]any{"active": true, "token_type": "Bearer"}
	for _, k := range []string{"iss", "sub", "aud", "exp", "iat", "nbf", "scope", "client_id", "jti", "patient"} {
		if v, ok := claims[k]; ok {
			out[k] = v
		}
	}
	s.serveJSON(w, http.StatusOK, out, false)
}
