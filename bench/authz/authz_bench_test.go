// Package authzbench measures the built-in SMART authorization server:
// a whole authorize + consent + token round trip over HTTP, and what
// verifying its tokens costs in the gateway's verifier compared with an
// external issuer's.
package authzbench

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.etcd.io/bbolt"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/authz"
	"github.com/pfrgateway/caddy-pfr/internal/kv"
	"github.com/pfrgateway/caddy-pfr/tenancy"
)

const devIss = "urn:pfr:dev-issuer:bench"

// server is an authorization server on an ephemeral port with one record,
// john, owned by alice.
type server struct {
	srv    *authz.Server
	issuer string
	base   string
	client *http.Client // a browser: cookies, no redirects followed
}

func newServer(b *testing.B) *server {
	b.Helper()
	db, err := bbolt.Open(filepath.Join(b.TempDir(), "pfr.db"), 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	tenants, err := tenancy.NewBoltStore(db)
	if err != nil {
		b.Fatal(err)
	}
	store, err := authz.NewStore(kv.Bolt(db))
	if err != nil {
		b.Fatal(err)
	}
	rec := &tenancy.Record{Slug: "john", Relationship: tenancy.RelationshipSelf}
	err = tenants.Update(context.Background(), func(tx tenancy.Tx) error {
		acct, err := tx.EnsureAccount(devIss, "alice")
		if err != nil {
			return err
		}
		if err := tx.CreateRecord(rec); err != nil {
			return err
		}
		rec.Status, rec.PatientID = tenancy.StatusActive, "p-john"
		if err := tx.PutRecord(rec); err != nil {
			return err
		}
		return tx.SetMembership(tenancy.Membership{RecordID: rec.ID, AccountID: acct.ID, Role: tenancy.RoleOwner})
	})
	if err != nil {
		b.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(nil)
	addr := ts.Listener.Addr().String()
	port := ts.Listener.Addr().(*net.TCPAddr).Port
	s := &server{issuer: "http://pfr.localhost:" + strconv.Itoa(port)}
	s.base = "http://john.pfr.localhost:" + strconv.Itoa(port) + "/fhir"
	s.srv, err = authz.New(context.Background(), authz.Config{Store: store, Tenancy: tenants, Issuer: s.issuer,
		BaseDomain: "pfr.localhost", Login: authz.DevLogin{Issuer: devIss}})
	if err != nil {
		b.Fatal(err)
	}
	ts.Config.Handler = s.srv
	ts.Start()
	b.Cleanup(ts.Close)
	jar, _ := cookiejar.New(nil)
	s.client = &http.Client{Jar: jar,
		Transport: &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return s
}

func (s *server) do(b *testing.B, method, u string, form url.Values) (*http.Response, string) {
	b.Helper()
	if strings.HasPrefix(u, "/") {
		u = s.issuer + u
	}
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, u, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	res, err := s.client.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	raw, _ := io.ReadAll(res.Body)
	res.Body.Close()
	return res, string(raw)
}

var hidden = regexp.MustCompile(`name="(request|csrf)" value="([^"]+)"`)

func fields(body string) url.Values {
	v := url.Values{}
	for _, m := range hidden.FindAllStringSubmatch(body, -1) {
		v.Set(m[1], m[2])
	}
	return v
}

const scope = "openid launch/patient offline_access patient/Patient.rs patient/Observation.rs"

// roundTrip runs authorize, consent (already logged in) and the token
// exchange, and returns the token response.
func (s *server) roundTrip(b *testing.B, clientID, redirect string, login bool) map[string]any {
	b.Helper()
	verifier := base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(time.Now().UnixNano(), 10) + "-0123456789abcdef0123456789"))
	sum := sha256.Sum256([]byte(verifier))
	q := url.Values{"response_type": {"code"}, "client_id": {clientID}, "redirect_uri": {redirect}, "scope": {scope},
		"state": {"s"}, "aud": {s.base}, "code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"}}
	res, _ := s.do(b, "GET", "/oauth/authorize?"+q.Encode(), nil)
	res, body := s.do(b, "GET", res.Header.Get("Location"), nil)
	if login {
		_, body = s.do(b, "GET", res.Header.Get("Location"), nil)
		form := fields(body)
		form.Set("username", "alice")
		res, _ = s.do(b, "POST", "/oauth/login", form)
		_, body = s.do(b, "GET", res.Header.Get("Location"), nil)
	}
	form := fields(body)
	form.Set("decision", "approve")
	form["scope"] = strings.Fields(scope)
	res, _ = s.do(b, "POST", "/oauth/consent", form)
	loc, _ := url.Parse(res.Header.Get("Location"))
	res, body = s.do(b, "POST", "/oauth/token", url.Values{"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")},
		"redirect_uri": {redirect}, "code_verifier": {verifier}, "client_id": {clientID}})
	var out map[string]any
	if err := json.Unmarshal([]byte(body), &out); err != nil || res.StatusCode != http.StatusOK {
		b.Fatalf("token: %d %s", res.StatusCode, body)
	}
	return out
}

func (s *server) register(b *testing.B, redirect string) string {
	b.Helper()
	req, _ := http.NewRequest("POST", s.issuer+"/oauth/register", strings.NewReader(`{"client_name":"bench","token_endpoint_auth_method":"none","grant_types":["authorization_code","refresh_token"],"redirect_uris":["`+redirect+`"]}`))
	res, err := s.client.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(res.Body).Decode(&out)
	return out["client_id"].(string)
}

// BenchmarkAuthorizeTokenRoundTrip: one app authorization by a logged-in
// person, over HTTP: authorize, the consent page, the approval (a grant and
// a code written), the code exchange (a refresh token written, an access
// token and an ID token signed).
func BenchmarkAuthorizeTokenRoundTrip(b *testing.B) {
	s := newServer(b)
	redirect := "http://127.0.0.1:9/cb"
	client := s.register(b, redirect)
	s.roundTrip(b, client, redirect, true)
	b.ResetTimer()
	for b.Loop() {
		s.roundTrip(b, client, redirect, false)
	}
}

// external is an issuer with an RSA key served as a static JWKS, as the
// verifier holds an external provider's keys once fetched.
func external(b *testing.B) (auth.IssuerConfig, func(aud string) string) {
	b.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	jwks, _ := json.Marshal(map[string]any{"keys": []any{map[string]any{"kty": "RSA", "kid": "ext", "alg": "RS256",
		"n": enc(key.N.Bytes()), "e": enc(big.NewInt(int64(key.E)).Bytes())}}})
	keys, err := auth.ParseJWKS(jwks)
	if err != nil {
		b.Fatal(err)
	}
	mint := func(aud string) string {
		now := time.Now()
		t := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"iss": "https://login.example", "sub": "alice", "aud": aud,
			"scope": "patient/*.rs", "iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(), "jti": strconv.FormatInt(now.UnixNano(), 10)})
		t.Header["kid"] = "ext"
		s, _ := t.SignedString(key)
		return s
	}
	return auth.IssuerConfig{Issuer: "https://login.example", Keys: keys}, mint
}

// benchVerify verifies token over and over with the given cache size
// (negative: every verification checks the signature).
func benchVerify(b *testing.B, ic auth.IssuerConfig, token, aud string, cache int) {
	v, err := auth.NewVerifier([]auth.IssuerConfig{ic}, auth.Options{TokenCacheSize: cache})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, err := v.Verify(ctx, token, []string{aud}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := v.Verify(ctx, token, []string{aud}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerify compares, in one run, the pipeline's verification of a
// built-in token (RS256 and the grant check, a bbolt read) with an
// external issuer's (RS256, keys already fetched), with and without the
// verified-token cache.
func BenchmarkVerify(b *testing.B) {
	s := newServer(b)
	redirect := "http://127.0.0.1:9/cb"
	builtin := s.roundTrip(b, s.register(b, redirect), redirect, true)["access_token"].(string)
	ext, mint := external(b)
	extToken := mint(s.base)
	for _, c := range []struct {
		name  string
		cache int
	}{{"signature", -1}, {"cached", 0}} {
		b.Run("builtin/"+c.name, func(b *testing.B) { benchVerify(b, s.srv.IssuerConfig(), builtin, s.base, c.cache) })
		b.Run("external/"+c.name, func(b *testing.B) { benchVerify(b, ext, extToken, s.base, c.cache) })
	}
}
