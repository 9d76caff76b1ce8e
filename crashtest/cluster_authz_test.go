package crashtest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/authz"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// nodeClient talks to one node under the cluster's public origin (the
// balancer's host and port in the URL and Host header): what a client
// behind the balancer sees when the balancer picks that node.
type nodeClient struct {
	t    *testing.T
	name string
	c    *http.Client
}

func newNodeClient(t *testing.T, name string, port int) *nodeClient {
	jar, _ := cookiejar.New(nil)
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	return &nodeClient{t: t, name: name, c: &http.Client{
		Timeout: 30 * time.Second, Jar: jar,
		Transport: &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, fmt.Sprintf("127.0.0.1:%d", port))
		}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// send makes a request (testkit.Send): a url.Values body is a form, a
// string JSON.
func (n *nodeClient) send(method, u, token string, body any) (int, http.Header, string) {
	n.t.Helper()
	header := http.Header{}
	switch b := body.(type) {
	case url.Values:
		body = b.Encode()
		header.Set("Content-Type", "application/x-www-form-urlencoded")
	case string:
		header.Set("Content-Type", "application/json")
	}
	res, err := testkit.Send(context.Background(), n.c, method, u, token, body, header)
	if err != nil {
		n.t.Fatalf("%s on node %s: %v", u, n.name, err)
	}
	return res.Status, res.Header, string(res.Raw)
}

// token posts a token request to the record's token endpoint on this node.
func (n *nodeClient) token(endpoint string, form url.Values) (int, map[string]any) {
	n.t.Helper()
	status, _, body := n.send("POST", endpoint, "", form)
	var out map[string]any
	_ = json.Unmarshal([]byte(body), &out)
	return status, out
}

var (
	authzRequestRE = regexp.MustCompile(`name="request" value="([^"]+)"`)
	authzCSRFRE    = regexp.MustCompile(`name="csrf" value="([^"]+)"`)
	authzScopeRE   = regexp.MustCompile(`name="scope" value="([^"]+)"`)
)

func formField(re *regexp.Regexp, page string) string {
	m := re.FindStringSubmatch(page)
	if m == nil {
		return ""
	}
	return html.UnescapeString(m[1])
}

// clusterAuthz: the built-in authorization server on two nodes sharing
// PostgreSQL. The person authorizes an app on node A (login, consent), the
// app exchanges the code on node B, refreshes on A; a revocation on B is
// refused on A within authz.StatusTTL (docs/smart.md, "One pipeline"),
// refresh-token reuse across the nodes revokes the family, and the owner's
// disconnect on B ends the app's refresh on A at once.
func clusterAuthz(t *testing.T, c *cluster, slug, patientID string) {
	t.Helper()
	origin := fmt.Sprintf("http://pfr.localhost:%d", c.lb.port)
	fhirBase := fmt.Sprintf("http://%s.pfr.localhost:%d/fhir", slug, c.lb.port)
	onA, onB := newNodeClient(t, "A", c.a.port), newNodeClient(t, "B", c.b.port)

	// Discovery on B names the record's own token endpoint.
	status, _, body := onB.send("GET", fhirBase+"/.well-known/smart-configuration", "", nil)
	var conf map[string]any
	if status != http.StatusOK || json.Unmarshal([]byte(body), &conf) != nil || conf["issuer"] != origin {
		t.Fatalf("smart-configuration on B: %d %s", status, body)
	}
	tokenURL, _ := conf["token_endpoint"].(string)
	if tokenURL != fmt.Sprintf("http://%s.pfr.localhost:%d/oauth/token", slug, c.lb.port) {
		t.Fatalf("token_endpoint %q", tokenURL)
	}

	// The app registers on B; the person authorizes it on A.
	redirect := "http://127.0.0.1:5173/cb"
	status, _, body = onB.send("POST", origin+"/oauth/register", "", `{"client_name":"Cluster app","token_endpoint_auth_method":"none","grant_types":["authorization_code","refresh_token"],"redirect_uris":["`+redirect+`"]}`)
	var reg map[string]any
	if status != http.StatusCreated || json.Unmarshal([]byte(body), &reg) != nil {
		t.Fatalf("register on B: %d %s", status, body)
	}
	clientID, _ := reg["client_id"].(string)
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	verifier := base64.RawURLEncoding.EncodeToString(raw)
	sum := sha256.Sum256([]byte(verifier))
	next := origin + "/oauth/authorize?" + url.Values{
		"response_type": {"code"}, "client_id": {clientID}, "redirect_uri": {redirect}, "state": {"cl"},
		"scope": {"launch/patient patient/*.rs offline_access"}, "aud": {fhirBase},
		"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"},
	}.Encode()
	var page string
	for range 4 { // authorize → consent → login page
		status, header, body := onA.send("GET", next, "", nil)
		if status == http.StatusOK {
			page = body
			break
		}
		if status != http.StatusFound && status != http.StatusSeeOther {
			t.Fatalf("authorize on A: %s answered %d %s", next, status, body)
		}
		next = origin + header.Get("Location")
	}
	status, header, body := onA.send("POST", origin+"/oauth/login", "", url.Values{
		"request": {formField(authzRequestRE, page)}, "csrf": {formField(authzCSRFRE, page)}, "username": {"alice"}})
	if status != http.StatusSeeOther {
		t.Fatalf("login on A: %d %s", status, body)
	}
	status, _, page = onA.send("GET", origin+header.Get("Location"), "", nil)
	if status != http.StatusOK || formField(authzCSRFRE, page) == "" {
		t.Fatalf("consent page on A: %d %s", status, page)
	}
	form := url.Values{"request": {formField(authzRequestRE, page)}, "csrf": {formField(authzCSRFRE, page)}, "decision": {"approve"}}
	for _, m := range authzScopeRE.FindAllStringSubmatch(page, -1) {
		form.Add("scope", html.UnescapeString(m[1]))
	}
	status, header, body = onA.send("POST", origin+"/oauth/consent", "", form)
	back, _ := url.Parse(header.Get("Location"))
	if status != http.StatusSeeOther || back == nil || back.Query().Get("code") == "" {
		t.Fatalf("approval on A: %d %s %s", status, header.Get("Location"), body)
	}

	// The code is exchanged on B.
	status, tok := onB.token(tokenURL, url.Values{"grant_type": {"authorization_code"}, "code": {back.Query().Get("code")},
		"redirect_uri": {redirect}, "code_verifier": {verifier}, "client_id": {clientID}})
	if status != http.StatusOK || tok["patient"] != patientID || tok["refresh_token"] == nil {
		t.Fatalf("code exchange on B: %d %v", status, tok)
	}
	read := func(n *nodeClient, access string) int {
		t.Helper()
		status, _, _ := n.send("GET", fhirBase+"/Patient/"+patientID, access, nil)
		return status
	}
	for _, n := range []*nodeClient{onA, onB} {
		if s := read(n, tok["access_token"].(string)); s != http.StatusOK {
			t.Fatalf("the token from B on node %s: %d", n.name, s)
		}
	}

	// Refreshed on A.
	status, tok2 := onA.token(tokenURL, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok["refresh_token"].(string)}, "client_id": {clientID}})
	if status != http.StatusOK || tok2["patient"] != patientID {
		t.Fatalf("refresh on A: %d %v", status, tok2)
	}
	access2 := tok2["access_token"].(string)
	// A checks it (and remembers its status for up to StatusTTL) ...
	if s := read(onA, access2); s != http.StatusOK {
		t.Fatalf("refreshed token on A: %d", s)
	}
	// ... B revokes it (RFC 7009); from StatusTTL after that on, A refuses
	// it: a request sent then cannot find a status A remembered from before.
	refusedOnA := func(what, access string, since time.Time) {
		t.Helper()
		took := time.Duration(-1)
		for time.Since(since) < authz.StatusTTL {
			if read(onA, access) == http.StatusUnauthorized {
				took = time.Since(since)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if took < 0 {
			// StatusTTL has passed: a status A remembered from before is stale.
			if s := read(onA, access); s != http.StatusUnauthorized {
				t.Fatalf("%s: node A still accepts the token %s after: %d", what, time.Since(since).Round(time.Millisecond), s)
			}
			took = time.Since(since)
		}
		t.Logf("%s: refused on A %s after", what, took.Round(time.Millisecond))
	}
	status, _, body = onB.send("POST", origin+"/oauth/revoke", "", url.Values{"token": {access2}, "client_id": {clientID}})
	if status != http.StatusOK {
		t.Fatalf("revocation on B: %d %s", status, body)
	}
	refusedOnA("access token revoked on B", access2, time.Now())

	// The refresh token rotated on A, used again on B: the family dies on
	// every node.
	status, tok3 := onB.token(tokenURL, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok2["refresh_token"].(string)}, "client_id": {clientID}})
	if status != http.StatusOK {
		t.Fatalf("refresh on B: %d %v", status, tok3)
	}
	if s := read(onA, tok3["access_token"].(string)); s != http.StatusOK {
		t.Fatalf("token refreshed on B, on A: %d", s)
	}
	if status, out := onB.token(tokenURL, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok2["refresh_token"].(string)}, "client_id": {clientID}}); status != http.StatusBadRequest || out["error"] != "invalid_grant" {
		t.Fatalf("reuse of a rotated refresh token on B: %d %v", status, out)
	}
	reused := time.Now()
	if status, out := onA.token(tokenURL, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok3["refresh_token"].(string)}, "client_id": {clientID}}); status != http.StatusBadRequest {
		t.Fatalf("the family's newest refresh token on A after the reuse: %d %v", status, out)
	}
	refusedOnA("family revoked by a reuse on B", tok3["access_token"].(string), reused)

	// A new approval on A; the owner disconnects the app on B: its refresh
	// token is refused on A at once (no cache on that path).
	alice := c.a.token("alice")
	status, tok4 := func() (int, map[string]any) {
		// Authorize again (the browser on A is still signed in).
		sum := sha256.Sum256([]byte(verifier))
		status, header, _ := onA.send("GET", origin+"/oauth/authorize?"+url.Values{
			"response_type": {"code"}, "client_id": {clientID}, "redirect_uri": {redirect}, "state": {"cl2"},
			"scope": {"patient/*.rs offline_access"}, "aud": {fhirBase},
			"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"},
		}.Encode(), "", nil)
		if status != http.StatusFound {
			t.Fatalf("authorize again on A: %d", status)
		}
		_, _, page := onA.send("GET", origin+header.Get("Location"), "", nil)
		form := url.Values{"request": {formField(authzRequestRE, page)}, "csrf": {formField(authzCSRFRE, page)},
			"decision": {"approve"}, "scope": {"patient/*.rs", "offline_access"}}
		_, header, _ = onA.send("POST", origin+"/oauth/consent", "", form)
		back, _ := url.Parse(header.Get("Location"))
		return onB.token(tokenURL, url.Values{"grant_type": {"authorization_code"}, "code": {back.Query().Get("code")},
			"redirect_uri": {redirect}, "code_verifier": {verifier}, "client_id": {clientID}})
	}()
	if status != http.StatusOK || tok4["refresh_token"] == nil {
		t.Fatalf("second approval: %d %v", status, tok4)
	}
	if status, _, body := onB.send("DELETE", origin+"/pfr/v1/records/"+slug+"/apps/"+clientID, alice, nil); status != http.StatusNoContent {
		t.Fatalf("disconnect on B: %d %s", status, body)
	}
	disconnected := time.Now()
	if status, out := onA.token(tokenURL, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok4["refresh_token"].(string)}, "client_id": {clientID}}); status != http.StatusBadRequest || out["error"] != "invalid_grant" {
		t.Fatalf("refresh on A after the disconnect on B: %d %v", status, out)
	}
	refusedOnA("app disconnected on B", tok4["access_token"].(string), disconnected)
}
