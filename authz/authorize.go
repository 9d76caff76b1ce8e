package authz

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"go.uber.org/zap"

	"github.com/pfrgateway/caddy-pfr/tenancy"
)

// Cookies. On https they carry the __Host- prefix: Secure, Path=/, no
// Domain, so no other host (another record's subdomain included) can set
// or read them.
const (
	browserCookie = "pfr_browser"
	sessionCookie = "pfr_session"
)

func (s *Server) cookieName(name string) string {
	if s.issuer.Scheme == "https" {
		return "__Host-" + name
	}
	return name
}

func (s *Server) setCookie(w http.ResponseWriter, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: s.cookieName(name), Value: value, Path: "/", MaxAge: maxAge,
		Secure: s.issuer.Scheme == "https", HttpOnly: true, SameSite: http.SameSiteLaxMode,
	})
}

func (s *Server) cookie(r *http.Request, name string) string {
	c, err := r.Cookie(s.cookieName(name))
	if err != nil {
		return ""
	}
	return c.Value
}

// challengeRE is an S256 code challenge: 32 bytes, base64url.
var challengeRE = regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`)

// maxFormBytes bounds form bodies.
const maxFormBytes = 64 << 10

// params reads a request's parameters (query for GET, form for POST); a
// parameter given twice is refused (RFC 6749 section 3.1).
func params(w http.ResponseWriter, r *http.Request) (url.Values, bool) {
	var v url.Values
	if r.Method == http.MethodPost {
		r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
		if err := r.ParseForm(); err != nil {
			return nil, false
		}
		v = r.PostForm
	} else {
		var err error
		if v, err = url.ParseQuery(r.URL.RawQuery); err != nil {
			return nil, false
		}
	}
	for k, vs := range v {
		if len(vs) > 1 && k != "scope" {
			return nil, false
		}
	}
	return v, true
}

// serveAuthorize starts an authorization code flow.
func (s *Server) serveAuthorize(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		w.Header().Set("Allow", "GET, POST")
		s.errorPage(w, http.StatusMethodNotAllowed, "Not allowed", "Use GET or POST.")
		return
	}
	q, ok := params(w, r)
	if !ok {
		s.errorPage(w, http.StatusBadRequest, "Invalid request", "The sign-in request is malformed or repeats a parameter.")
		return
	}
	ctx := r.Context()
	// Until the client and its redirect URI are known to belong together,
	// errors go to the user, never to a redirect (no open redirector).
	client, err := s.cfg.Store.Client(ctx, q.Get("client_id"))
	if err != nil {
		s.errorPage(w, http.StatusBadRequest, "Unknown app", "The app that sent you here is not registered with this server.")
		return
	}
	redirect := q.Get("redirect_uri")
	if redirect == "" || !slices.Contains(client.RedirectURIs, redirect) {
		s.errorPage(w, http.StatusBadRequest, "Invalid return address", "The app's return address is not one it registered; nothing was shared.")
		return
	}
	state := q.Get("state")
	fail := func(code, desc string) {
		s.log.Info("authorization refused", zap.String("client", client.ID), zap.String("error", code), zap.String("description", desc))
		s.redirectError(w, r, redirect, state, code, desc)
	}
	switch {
	case q.Get("response_type") != "code":
		fail("unsupported_response_type", "only response_type=code is supported")
		return
	case !slices.Contains(client.GrantTypes, "authorization_code"):
		fail("unauthorized_client", "the client is not registered for the authorization code grant")
		return
	case q.Get("code_challenge_method") != "S256":
		fail("invalid_request", "PKCE with code_challenge_method=S256 is required")
		return
	case !challengeRE.MatchString(q.Get("code_challenge")):
		fail("invalid_request", "code_challenge must be the base64url SHA-256 of the code verifier")
		return
	case q.Get("aud") == "":
		fail("invalid_request", "aud (the FHIR base URL of the record) is required")
		return
	}
	rec, err := s.recordForAudience(ctx, q.Get("aud"))
	if err != nil {
		fail("invalid_request", "aud is not the FHIR base URL of a record served here")
		return
	}
	scope := userScopes(strings.Fields(strings.Join(q["scope"], " ")), client.Scope)
	if len(scope) == 0 {
		fail("invalid_scope", "none of the requested scopes can be granted")
		return
	}
	browser := s.cookie(r, browserCookie)
	if browser == "" {
		browser = randomToken(32)
		s.setCookie(w, browserCookie, browser, 0)
	}
	p := &Pending{
		ID: randomToken(24), Browser: hashSecret(browser), ClientID: client.ID, RedirectURI: redirect,
		State: state, Scope: scope, Challenge: q.Get("code_challenge"), Nonce: q.Get("nonce"),
		RecordID: rec.ID, Audience: s.recordBase(rec.Slug), CSRF: randomToken(24),
		Expires: s.cfg.Now().Add(PendingTTL),
	}
	if err := s.cfg.Store.PutPending(ctx, p); err != nil {
		s.log.Error("saving an authorization request", zap.Error(err))
		s.errorPage(w, http.StatusServiceUnavailable, "Try again", "The request could not be saved; try again.")
		return
	}
	http.Redirect(w, r, PathPrefix+"consent?request="+url.QueryEscape(p.ID), http.StatusFound)
}

// redirectError sends the user back to the app with an error (RFC 6749
// section 4.1.2.1, with iss per RFC 9207).
func (s *Server) redirectError(w http.ResponseWriter, r *http.Request, redirect, state, code, desc string) {
	v := url.Values{"error": {code}, "error_description": {desc}, "iss": {s.cfg.Issuer}}
	if state != "" {
		v.Set("state", state)
	}
	http.Redirect(w, r, withQuery(redirect, v), http.StatusFound)
}

func withQuery(base string, v url.Values) string {
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	return base + sep + v.Encode()
}

// pending loads the request named by the "request" parameter, bound to
// this browser. ok is false when an error page was written.
func (s *Server) pending(w http.ResponseWriter, r *http.Request, id string) (*Pending, bool) {
	p, err := s.cfg.Store.Pending(r.Context(), id, s.cfg.Now())
	if err != nil {
		s.errorPage(w, http.StatusBadRequest, "Request expired", "This sign-in request is unknown or has expired. Start again from the app.")
		return nil, false
	}
	if browser := s.cookie(r, browserCookie); browser == "" || !equalSecret(hashSecret(browser), p.Browser) {
		s.log.Warn("authorization request used from another browser", zap.String("client", p.ClientID))
		s.errorPage(w, http.StatusForbidden, "Wrong browser", "This sign-in request was started in another browser. Start again from the app.")
		return nil, false
	}
	return p, true
}

// serveLogin shows the login (GET) or completes a development login (POST).
func (s *Server) serveLogin(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		p, ok := s.pending(w, r, r.URL.Query().Get("request"))
		if !ok {
			return
		}
		s.cfg.Login.start(s, w, r, p)
	case http.MethodPost:
		r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
		if err := r.ParseForm(); err != nil {
			s.errorPage(w, http.StatusBadRequest, "Invalid request", "The form could not be read.")
			return
		}
		p, ok := s.pending(w, r, r.PostForm.Get("request"))
		if !ok {
			return
		}
		if !equalSecret(r.PostForm.Get("csrf"), p.CSRF) {
			s.errorPage(w, http.StatusForbidden, "Invalid form", "The form's security token does not match. Start again from the app.")
			return
		}
		if _, dev := s.cfg.Login.(DevLogin); !dev {
			s.errorPage(w, http.StatusMethodNotAllowed, "Not allowed", "Sign in through the provider.")
			return
		}
		s.finishLogin(w, r, p)
	default:
		w.Header().Set("Allow", "GET, POST")
		s.errorPage(w, http.StatusMethodNotAllowed, "Not allowed", "Use GET or POST.")
	}
}

// serveCallback is the OpenID provider's redirect back after login.
func (s *Server) serveCallback(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.cfg.Login.(*OIDCLogin); !ok || r.Method != http.MethodGet {
		s.errorPage(w, http.StatusNotFound, "Not found", "No sign-in provider is configured.")
		return
	}
	p, ok := s.pending(w, r, r.URL.Query().Get("state"))
	if !ok {
		return
	}
	s.finishLogin(w, r, p)
}

func (s *Server) finishLogin(w http.ResponseWriter, r *http.Request, p *Pending) {
	iss, sub, err := s.cfg.Login.finish(s, r, p)
	var retry errLogin
	if errors.As(err, &retry) {
		s.loginPage(w, r, http.StatusBadRequest, p, retry.msg)
		return
	}
	if err != nil {
		s.log.Info("login failed", zap.Error(err))
		s.errorPage(w, http.StatusBadGateway, "Sign-in failed", err.Error())
		return
	}
	cookie := randomToken(32)
	se := &Session{Hash: hashSecret(cookie), Issuer: iss, Subject: sub, Expires: s.cfg.Now().Add(s.cfg.SessionTTL)}
	if err := s.cfg.Store.PutSession(r.Context(), se); err != nil {
		s.errorPage(w, http.StatusServiceUnavailable, "Try again", "The sign-in could not be saved.")
		return
	}
	s.setCookie(w, sessionCookie, cookie, int(s.cfg.SessionTTL.Seconds()))
	http.Redirect(w, r, PathPrefix+"consent?request="+url.QueryEscape(p.ID), http.StatusSeeOther)
}

// session returns the browser's login, or nil.
func (s *Server) session(r *http.Request) *Session {
	c := s.cookie(r, sessionCookie)
	if c == "" {
		return nil
	}
	se, err := s.cfg.Store.Session(r.Context(), hashSecret(c), s.cfg.Now())
	if err != nil {
		return nil
	}
	return se
}

// membership returns the logged-in account's id and role in the record
// ("" when it is not a member).
func (s *Server) membership(r *http.Request, se *Session, recordID string) (*tenancy.Record, string, tenancy.Role, error) {
	var rec *tenancy.Record
	var accountID string
	var role tenancy.Role
	err := s.cfg.Tenancy.View(r.Context(), func(tx tenancy.Tx) error {
		var err error
		if rec, err = tx.Record(recordID); err != nil {
			return err
		}
		acct, m, err := tenancy.Member(tx, recordID, se.Issuer, se.Subject)
		if acct != nil {
			accountID = acct.ID
		}
		if errors.Is(err, tenancy.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		role = m.Role
		return nil
	})
	if err == nil && rec.Status != tenancy.StatusActive {
		err = tenancy.ErrNotFound
	}
	return rec, accountID, role, err
}

// serveConsent shows the consent page (GET) or takes the decision (POST).
func (s *Server) serveConsent(w http.ResponseWriter, r *http.Request) {
	var id string
	switch r.Method {
	case http.MethodGet:
		id = r.URL.Query().Get("request")
	case http.MethodPost:
		r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
		if err := r.ParseForm(); err != nil {
			s.errorPage(w, http.StatusBadRequest, "Invalid request", "The form could not be read.")
			return
		}
		id = r.PostForm.Get("request")
	default:
		w.Header().Set("Allow", "GET, POST")
		s.errorPage(w, http.StatusMethodNotAllowed, "Not allowed", "Use GET or POST.")
		return
	}
	p, ok := s.pending(w, r, id)
	if !ok {
		return
	}
	se := s.session(r)
	if se == nil {
		if r.Method == http.MethodPost {
			s.errorPage(w, http.StatusForbidden, "Signed out", "Your sign-in has ended. Start again from the app.")
			return
		}
		http.Redirect(w, r, PathPrefix+"login?request="+url.QueryEscape(p.ID), http.StatusFound)
		return
	}
	rec, accountID, role, err := s.membership(r, se, p.RecordID)
	if errors.Is(err, tenancy.ErrNotFound) {
		s.redirectError(w, r, p.RedirectURI, p.State, "invalid_request", "the record no longer exists")
		return
	}
	if err != nil {
		s.errorPage(w, http.StatusServiceUnavailable, "Try again", "The record could not be read.")
		return
	}
	if r.Method == http.MethodGet {
		s.consentPage(w, r, p, se, rec, role, "")
		return
	}
	if !equalSecret(r.PostForm.Get("csrf"), p.CSRF) {
		s.log.Warn("consent form with a wrong CSRF token", zap.String("client", p.ClientID))
		s.errorPage(w, http.StatusForbidden, "Invalid form", "The form's security token does not match. Start again from the app.")
		return
	}
	// The client may have deleted itself or dropped the redirect URI
	// (RFC 7592) since the request began.
	client, err := s.cfg.Store.Client(r.Context(), p.ClientID)
	if err != nil && !errors.Is(err, ErrNotFound) {
		s.errorPage(w, http.StatusServiceUnavailable, "Try again", "The app could not be read.")
		return
	}
	if err != nil || !slices.Contains(client.RedirectURIs, p.RedirectURI) {
		_ = s.cfg.Store.DeletePending(r.Context(), p.ID)
		s.errorPage(w, http.StatusBadRequest, "App changed", "The app is no longer registered with this return address; nothing was shared.")
		return
	}
	if r.PostForm.Get("decision") != "approve" || role == "" {
		_ = s.cfg.Store.DeletePending(r.Context(), p.ID)
		s.redirectError(w, r, p.RedirectURI, p.State, "access_denied", "the user did not allow the app")
		return
	}
	ticked := r.PostForm["scope"]
	if !subset(ticked, p.Scope) {
		s.consentPage(w, r, p, se, rec, role, "Only the listed permissions can be allowed.")
		return
	}
	if !role.CanWrite() && slices.ContainsFunc(ticked, writes) {
		s.log.Warn("a viewer tried to grant write access", zap.String("record", rec.ID), zap.String("client", p.ClientID))
		s.consentPage(w, r, p, se, rec, role, "As a viewer of this record you cannot allow an app to change it.")
		return
	}
	granted := slices.DeleteFunc(slices.Clone(p.Scope), func(sc string) bool { return !slices.Contains(ticked, sc) })
	if !slices.ContainsFunc(granted, func(sc string) bool { _, ok := identityScopes[sc]; return !ok }) {
		s.consentPage(w, r, p, se, rec, role, "Allow at least one kind of data, or deny.")
		return
	}
	now := s.cfg.Now()
	g := &Grant{ID: randomToken(16), RecordID: rec.ID, ClientID: p.ClientID, AccountID: accountID,
		Issuer: se.Issuer, Subject: se.Subject, Scope: granted, Created: now}
	code := randomToken(32)
	c := &Code{Hash: hashSecret(code), ClientID: p.ClientID, RedirectURI: p.RedirectURI, Challenge: p.Challenge,
		GrantID: g.ID, Scope: granted, Nonce: p.Nonce, Expires: now.Add(CodeTTL)}
	err = s.cfg.Store.Approve(r.Context(), g, c, p.ID)
	s.status.invalidate() // the grant it replaced is gone
	if err != nil {
		s.log.Error("saving a grant", zap.Error(err))
		s.errorPage(w, http.StatusServiceUnavailable, "Try again", "The approval could not be saved.")
		return
	}
	s.log.Info("app approved", zap.String("record", rec.ID), zap.String("client", p.ClientID),
		zap.String("account", accountID), zap.Strings("scope", granted))
	v := url.Values{"code": {code}, "iss": {s.cfg.Issuer}}
	if p.State != "" {
		v.Set("state", p.State)
	}
	http.Redirect(w, r, withQuery(p.RedirectURI, v), http.StatusSeeOther)
}

func (s *Server) consentPage(w http.ResponseWriter, r *http.Request, p *Pending, se *Session, rec *tenancy.Record, role tenancy.Role, msg string) {
	data := map[string]any{
		"Title": "Allow access?", "AppName": s.appName(r.Context(), p.ClientID), "AppHost": hostOf(p.RedirectURI),
		"Account": se.Subject, "Role": string(role), "RecordBase": p.Audience, "PatientName": rec.Slug,
		"Action": PathPrefix + "consent", "Request": p.ID, "CSRF": p.CSRF, "Error": msg,
	}
	if s.cfg.PatientName != nil {
		if name := s.cfg.PatientName(r.Context(), rec); name != "" {
			data["PatientName"] = name
		}
	}
	status := http.StatusOK
	if msg != "" {
		status = http.StatusBadRequest
	}
	if role == "" {
		s.page(w, http.StatusForbidden, "notmember", data)
		return
	}
	items := make([]scopeItem, 0, len(p.Scope))
	for _, sc := range p.Scope {
		items = append(items, scopeItem{Scope: sc, Label: describe(sc), Disabled: writes(sc) && !role.CanWrite()})
	}
	data["Scopes"] = items
	s.page(w, status, "consent", data)
}

func (s *Server) appName(ctx context.Context, clientID string) string {
	c, err := s.cfg.Store.Client(ctx, clientID)
	if err != nil || c.Name == "" {
		return clientID
	}
	return c.Name
}

func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	return u.Host
}
