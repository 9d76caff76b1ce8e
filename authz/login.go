package authz

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/pfrgateway/caddy-pfr/auth"
)

// Login establishes who the user is: the development accounts (DevLogin)
// or an OpenID provider (OIDCLogin). The account is the (iss, sub) pair
// memberships are kept under.
type Login interface {
	// start answers GET /oauth/login for the pending request p.
	start(s *Server, w http.ResponseWriter, r *http.Request, p *Pending)
	// finish completes the login from the request (the form post, or the
	// provider's redirect to /oauth/callback) and returns the identity.
	finish(s *Server, r *http.Request, p *Pending) (iss, sub string, err error)
}

// errLogin is a login the user may try again.
type errLogin struct{ msg string }

func (e errLogin) Error() string { return e.msg }

// DevLogin signs users in to the development accounts: the user name is
// the account, under the dev issuer's iss (what `pfr token --sub NAME`
// mints). Only gateways on localhost may use it (auth.DevIssuerAllowed).
type DevLogin struct {
	// Issuer is the dev issuer's iss.
	Issuer string
}

var devUser = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)

func (d DevLogin) start(s *Server, w http.ResponseWriter, r *http.Request, p *Pending) {
	s.loginPage(w, r, http.StatusOK, p, "")
}

func (d DevLogin) finish(_ *Server, r *http.Request, _ *Pending) (string, string, error) {
	user := r.PostForm.Get("username")
	if !devUser.MatchString(user) {
		return "", "", errLogin{"a user name is 1 to 64 letters, digits, '.', '_', '@' or '-'"}
	}
	return d.Issuer, user, nil
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request, status int, p *Pending, msg string) {
	s.page(w, status, "login", map[string]any{
		"Title": "Sign in", "AppName": s.appName(r.Context(), p.ClientID), "Action": PathPrefix + "login",
		"Request": p.ID, "CSRF": p.CSRF, "Error": msg,
	})
}

// OIDCLogin delegates login to an OpenID provider, as a relying party:
// authorization code with PKCE S256 and a nonce; the ID token is verified
// like any token (signature by the provider's JWKS, iss, aud = client id,
// exp).
type OIDCLogin struct {
	// Issuer is the provider's issuer URL (discovery at
	// {Issuer}/.well-known/openid-configuration).
	Issuer string
	// ClientID and ClientSecret are the gateway's registration at the
	// provider (secret empty: a public client). Its redirect URI is
	// {authz issuer}/oauth/callback.
	ClientID, ClientSecret string
	// Scopes asked for besides openid.
	Scopes []string
	// HTTPClient reaches the provider. Default: 10 s timeout.
	HTTPClient *http.Client

	once     sync.Once
	verifier *auth.Verifier
	initErr  error
}

func (o *OIDCLogin) client() *http.Client {
	if o.HTTPClient != nil {
		return o.HTTPClient
	}
	return &http.Client{Timeout: 10 * time.Second}
}

func (o *OIDCLogin) init() error {
	o.once.Do(func() {
		o.verifier, o.initErr = auth.NewVerifier([]auth.IssuerConfig{{Issuer: o.Issuer}}, auth.Options{HTTPClient: o.client()})
	})
	return o.initErr
}

func (o *OIDCLogin) discovery(ctx context.Context) (authz, token string, err error) {
	if err := o.init(); err != nil {
		return "", "", err
	}
	doc, err := o.verifier.Discovery(ctx, o.Issuer)
	if err != nil {
		return "", "", err
	}
	authz, _ = doc["authorization_endpoint"].(string)
	token, _ = doc["token_endpoint"].(string)
	if authz == "" || token == "" {
		return "", "", errors.New("the provider's discovery document lacks its endpoints")
	}
	return authz, token, nil
}

func (o *OIDCLogin) start(s *Server, w http.ResponseWriter, r *http.Request, p *Pending) {
	authzURL, _, err := o.discovery(r.Context())
	if err != nil {
		s.log.Warn("login provider unavailable")
		s.errorPage(w, http.StatusBadGateway, "Sign-in unavailable", "The sign-in provider cannot be reached: "+err.Error())
		return
	}
	p.Login = &LoginState{Verifier: randomToken(32), Nonce: randomToken(16)}
	if err := s.cfg.Store.PutPending(r.Context(), p); err != nil {
		s.errorPage(w, http.StatusServiceUnavailable, "Try again", "The request could not be saved.")
		return
	}
	sum := sha256.Sum256([]byte(p.Login.Verifier))
	q := url.Values{
		"response_type":         {"code"},
		"client_id":             {o.ClientID},
		"redirect_uri":          {s.endpoint("callback")},
		"scope":                 {strings.Join(append([]string{"openid"}, o.Scopes...), " ")},
		"state":                 {p.ID},
		"nonce":                 {p.Login.Nonce},
		"code_challenge":        {b64(sum[:])},
		"code_challenge_method": {"S256"},
	}
	sep := "?"
	if strings.Contains(authzURL, "?") {
		sep = "&"
	}
	http.Redirect(w, r, authzURL+sep+q.Encode(), http.StatusFound)
}

func (o *OIDCLogin) finish(s *Server, r *http.Request, p *Pending) (string, string, error) {
	q := r.URL.Query()
	if e := q.Get("error"); e != "" {
		return "", "", fmt.Errorf("the sign-in provider answered %s", e)
	}
	if p.Login == nil {
		return "", "", errors.New("no sign-in was started for this request")
	}
	_, tokenURL, err := o.discovery(r.Context())
	if err != nil {
		return "", "", err
	}
	form := url.Values{
		"grant_type":    {"authorization_code"},
		"code":          {q.Get("code")},
		"redirect_uri":  {s.endpoint("callback")},
		"code_verifier": {p.Login.Verifier},
	}
	if o.ClientSecret == "" {
		form.Set("client_id", o.ClientID)
	}
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return "", "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if o.ClientSecret != "" {
		req.SetBasicAuth(url.QueryEscape(o.ClientID), url.QueryEscape(o.ClientSecret))
	}
	res, err := o.client().Do(req)
	if err != nil {
		return "", "", fmt.Errorf("the sign-in provider's token endpoint: %w", err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return "", "", err
	}
	if res.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("the sign-in provider's token endpoint answered %d", res.StatusCode)
	}
	var tr struct {
		IDToken string `json:"id_token"`
	}
	if err := json.Unmarshal(body, &tr); err != nil || tr.IDToken == "" {
		return "", "", errors.New("the sign-in provider gave no ID token")
	}
	id, err := o.verifier.Verify(r.Context(), tr.IDToken, []string{o.ClientID})
	if err != nil {
		return "", "", fmt.Errorf("the sign-in provider's ID token: %w", err)
	}
	if nonce, _ := id.Claims["nonce"].(string); !equalSecret(nonce, p.Login.Nonce) {
		return "", "", errors.New("the ID token's nonce does not match")
	}
	return id.Issuer, id.Subject, nil
}
