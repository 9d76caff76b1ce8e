package authz

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/internal/kv"
	"github.com/pfrgateway/caddy-pfr/internal/pgtest"
	"github.com/pfrgateway/caddy-pfr/tenancy"
)

const devIss = "urn:pfr:dev-issuer:test"

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// env is an authorization server on an ephemeral port with two records:
// john (alice owns it, vera views it) and bob (bob owns it).
type env struct {
	t        *testing.T
	srv      *Server
	ts       *httptest.Server
	issuer   string
	tenants  *tenancy.KVStore
	clock    *clock
	john     *tenancy.Record
	bob      *tenancy.Record
	verifier *auth.Verifier
	dial     func(ctx context.Context, network, addr string) (net.Conn, error)
}

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// TestPostgres runs this package's tests again on PostgreSQL: the same
// server on the other implementation of the state.
func TestPostgres(t *testing.T) { pgtest.RerunOnPostgres(t) }

func newEnv(t *testing.T, mod func(*Config)) *env {
	t.Helper()
	var state kv.DB
	if pgtest.OnPostgres() {
		pg := pgtest.OpenState(t, pgtest.DSN(t))
		t.Cleanup(pg.Close)
		state = pg
	} else {
		db, err := bbolt.Open(filepath.Join(t.TempDir(), "pfr.db"), 0o600, &bbolt.Options{Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		state = kv.Bolt(db)
	}
	tenants, err := tenancy.NewStore(state)
	if err != nil {
		t.Fatal(err)
	}
	store, err := NewStore(state)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, tenants: tenants, clock: &clock{t: time.Now()}}
	e.john = e.record("john", "alice", "p-john")
	e.bob = e.record("bob", "bob", "p-bob")
	e.member(e.john, "vera", tenancy.RoleViewer)
	e.member(e.john, "mark", tenancy.RoleManager)

	e.ts = httptest.NewUnstartedServer(nil)
	port := e.ts.Listener.Addr().(*net.TCPAddr).Port
	e.issuer = "http://pfr.localhost:" + itoa(port)
	addr := e.ts.Listener.Addr().String()
	e.dial = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	cfg := Config{Store: store, Tenancy: tenants, Issuer: e.issuer, BaseDomain: "pfr.localhost",
		Login: DevLogin{Issuer: devIss}, Now: e.clock.Now}
	if mod != nil {
		mod(&cfg)
	}
	e.srv, err = New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.ts.Config.Handler = e.srv
	e.ts.Start()
	t.Cleanup(e.ts.Close)
	e.verifier, err = auth.NewVerifier([]auth.IssuerConfig{e.srv.IssuerConfig()}, auth.Options{Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func itoa(i int) string { return strconv.Itoa(i) }

func jsonString(v any) string { b, _ := json.Marshal(v); return string(b) }

func (e *env) record(slug, owner, patient string) *tenancy.Record {
	rec := &tenancy.Record{Slug: slug, Relationship: tenancy.RelationshipSelf}
	err := e.tenants.Update(context.Background(), func(tx tenancy.Tx) error {
		acct, err := tx.EnsureAccount(devIss, owner)
		if err != nil {
			return err
		}
		if err := tx.CreateRecord(rec); err != nil {
			return err
		}
		rec.Status, rec.PatientID = tenancy.StatusActive, patient
		if err := tx.PutRecord(rec); err != nil {
			return err
		}
		return tx.SetMembership(tenancy.Membership{RecordID: rec.ID, AccountID: acct.ID, Role: tenancy.RoleOwner})
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return rec
}

func (e *env) member(rec *tenancy.Record, sub string, role tenancy.Role) {
	err := e.tenants.Update(context.Background(), func(tx tenancy.Tx) error {
		acct, err := tx.EnsureAccount(devIss, sub)
		if err != nil {
			return err
		}
		return tx.SetMembership(tenancy.Membership{RecordID: rec.ID, AccountID: acct.ID, Role: role})
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) base(slug string) string { return e.srv.recordBase(slug) }

// browser is a user agent with its own cookies that does not follow
// redirects.
type browser struct {
	e *env
	c *http.Client
}

func (e *env) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{e: e, c: &http.Client{
		Jar:       jar,
		Transport: &http.Transport{DialContext: e.dial},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}}
}

type answer struct {
	status int
	header http.Header
	body   string
}

func (a answer) location() *url.URL {
	u, _ := url.Parse(a.header.Get("Location"))
	return u
}

func (b *browser) do(req *http.Request) answer {
	b.e.t.Helper()
	res, err := b.c.Do(req)
	if err != nil {
		b.e.t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return answer{res.StatusCode, res.Header, string(body)}
}

func (b *browser) get(u string) answer {
	b.e.t.Helper()
	if strings.HasPrefix(u, "/") {
		u = b.e.issuer + u
	}
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	return b.do(req)
}

func (b *browser) post(u string, form url.Values) answer {
	b.e.t.Helper()
	if strings.HasPrefix(u, "/") {
		u = b.e.issuer + u
	}
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

func (b *browser) postJSON(u string, v any) answer {
	b.e.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, b.e.issuer+u, strings.NewReader(jsonString(v)))
	req.Header.Set("Content-Type", "application/json")
	return b.do(req)
}

// app is a client of the test.
type app struct {
	id, secret, redirect string
}

// registerPublic registers a public SMART app.
func (e *env) registerPublic() app {
	e.t.Helper()
	a := e.browser().postJSON("/oauth/register", map[string]any{
		"client_name": "Test App", "redirect_uris": []string{"http://127.0.0.1:9999/callback"},
		"token_endpoint_auth_method": "none", "grant_types": []string{"authorization_code", "refresh_token"},
	})
	if a.status != http.StatusCreated {
		e.t.Fatalf("register: %d %s", a.status, a.body)
	}
	var out map[string]any
	_ = json.Unmarshal([]byte(a.body), &out)
	return app{id: out["client_id"].(string), redirect: "http://127.0.0.1:9999/callback"}
}

type pkce struct{ verifier, challenge string }

func newPKCE() pkce {
	v := randomToken(32)
	sum := sha256.Sum256([]byte(v))
	return pkce{v, b64(sum[:])}
}

func (e *env) authorizeURL(a app, aud, scope string, p pkce) string {
	return "/oauth/authorize?" + url.Values{
		"response_type": {"code"}, "client_id": {a.id}, "redirect_uri": {a.redirect}, "scope": {scope},
		"state": {"st-1"}, "aud": {aud}, "code_challenge": {p.challenge}, "code_challenge_method": {"S256"},
	}.Encode()
}

var (
	csrfRE    = regexp.MustCompile(`name="csrf" value="([^"]+)"`)
	requestRE = regexp.MustCompile(`name="request" value="([^"]+)"`)
)

func field(re *regexp.Regexp, body string) string {
	m := re.FindStringSubmatch(body)
	if m == nil {
		return ""
	}
	return m[1]
}

// consentPage runs authorize and login as user and returns the consent
// page.
func (b *browser) consentPage(a app, aud, scope, user string, p pkce) answer {
	e := b.e
	e.t.Helper()
	res := b.get(e.authorizeURL(a, aud, scope, p))
	if res.status != http.StatusFound {
		e.t.Fatalf("authorize: %d %s", res.status, res.body)
	}
	res = b.get(res.header.Get("Location"))
	if res.status == http.StatusFound && strings.Contains(res.header.Get("Location"), "/oauth/login") {
		login := b.get(res.header.Get("Location"))
		if login.status != http.StatusOK {
			e.t.Fatalf("login page: %d %s", login.status, login.body)
		}
		res = b.post("/oauth/login", url.Values{"request": {field(requestRE, login.body)}, "csrf": {field(csrfRE, login.body)}, "username": {user}})
		if res.status != http.StatusSeeOther {
			e.t.Fatalf("login: %d %s", res.status, res.body)
		}
		res = b.get(res.header.Get("Location"))
	}
	return res
}

// approve ticks scopes on the consent page and returns the redirect.
func (b *browser) approve(page answer, ticked ...string) answer {
	form := url.Values{"request": {field(requestRE, page.body)}, "csrf": {field(csrfRE, page.body)}, "decision": {"approve"}, "scope": ticked}
	return b.post("/oauth/consent", form)
}

// codeFor runs the whole interactive part and returns the code.
func (e *env) codeFor(a app, aud, user string, p pkce, scope string, ticked ...string) string {
	e.t.Helper()
	b := e.browser()
	page := b.consentPage(a, aud, scope, user, p)
	if page.status != http.StatusOK {
		e.t.Fatalf("consent page: %d %s", page.status, page.body)
	}
	if len(ticked) == 0 {
		ticked = strings.Fields(scope)
	}
	res := b.approve(page, ticked...)
	if res.status != http.StatusSeeOther {
		e.t.Fatalf("approve: %d %s", res.status, res.body)
	}
	loc := res.location()
	if loc.Query().Get("state") != "st-1" || loc.Query().Get("iss") != e.issuer {
		e.t.Fatalf("redirect %s lacks state or iss", loc)
	}
	return loc.Query().Get("code")
}

// token posts to the token endpoint as a.
func (e *env) token(a app, form url.Values) (int, map[string]any) {
	e.t.Helper()
	if a.secret == "" && form.Get("client_assertion") == "" {
		form.Set("client_id", a.id)
	}
	req, _ := http.NewRequest(http.MethodPost, e.issuer+"/oauth/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if a.secret != "" {
		req.SetBasicAuth(a.id, a.secret)
	}
	res := e.browser().do(req)
	var out map[string]any
	if err := json.Unmarshal([]byte(res.body), &out); err != nil {
		e.t.Fatalf("token answer %d is not JSON: %s", res.status, res.body)
	}
	return res.status, out
}

func (e *env) exchange(a app, code string, p pkce) (int, map[string]any) {
	return e.token(a, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {a.redirect}, "code_verifier": {p.verifier}})
}

func (e *env) refresh(a app, rt string, scope string) (int, map[string]any) {
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}
	if scope != "" {
		form.Set("scope", scope)
	}
	return e.token(a, form)
}

// verify checks an access token as the gateway's pipeline does.
func (e *env) verify(token, aud string) (*auth.Identity, error) {
	return e.verifier.Verify(context.Background(), token, []string{aud})
}
