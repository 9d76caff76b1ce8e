package api

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/backend"
	"github.com/pfrgateway/caddy-pfr/gateway"
	"github.com/pfrgateway/caddy-pfr/tenancy"
)

// TestRouting checks the router's answers that no handler writes: who
// gets 401, 404 and 405, each an OperationOutcome with the status the
// hand-written router gave before the ServeMux (401 before any 404 or 405
// on the apex; 405 names the allowed methods; a path that is not clean is
// a 404, never a redirect).
func TestRouting(t *testing.T) {
	dir := t.TempDir()
	db, err := bbolt.Open(filepath.Join(dir, "pfr.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	store, err := tenancy.NewBoltStore(db)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := auth.LoadOrCreateDevIssuer(dir)
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewVerifier([]auth.IssuerConfig{dev.Config()}, auth.Options{})
	if err != nil {
		t.Fatal(err)
	}
	be, err := backend.New(backend.Config{})
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(gateway.Config{BaseDomain: "pfr.localhost", Backend: be, Tenancy: store, Verifier: v})
	if err != nil {
		t.Fatal(err)
	}
	New(g)
	token, err := dev.Mint("alice", "openid", []string{"https://pfr.localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		method, path string
		token        bool
		status       int
		allow        string
	}{
		{"GET", "/pfr/v1/records", false, 401, ""},
		{"GET", "/pfr/v1/nothing", false, 401, ""},
		{"PATCH", "/pfr/v1/records", false, 401, ""},
		{"GET", "/elsewhere", false, 404, ""},
		{"GET", "/pfr/v1", false, 404, ""},
		{"GET", "/pfr/v1/", true, 404, ""},
		{"GET", "/pfr/v1/nothing", true, 404, ""},
		{"GET", "/pfr/v1/records/john/nothing", true, 404, ""},
		{"GET", "/pfr/v1/records//members", true, 404, ""},
		{"GET", "/pfr/v1/records/../records", true, 404, ""},
		{"GET", "/pfr/v1/records/./john", true, 404, ""},
		{"GET", "/pfr/v1/records", true, 200, ""},
		{"GET", "/pfr/v1/records/", true, 200, ""},
		{"PATCH", "/pfr/v1/records", true, 405, "GET, POST"},
		{"POST", "/pfr/v1/records/john", true, 405, "DELETE, GET"},
		{"GET", "/pfr/v1/records/john/members/x", true, 405, "DELETE, PUT"},
		{"GET", "/pfr/v1/records/john/dropoffs/d/pickup", true, 405, "POST"},
		{"GET", "/pfr/v1/invitations/c/accept", true, 405, "POST"},
		{"PUT", "/pfr/v1/records/john/apps", true, 405, "GET"},
		{"GET", "/pfr/v1/records/john", true, 404, ""}, // no such record: the same 404 as a stranger's
		{"GET", "/pfr/v1/records/john/apps", true, 404, ""},
		{"GET", "/pfr/v1/receipts/r1", false, 404, ""}, // public; drop-offs are not enabled here
		{"POST", "/pfr/v1/health", false, 405, "GET, HEAD"},
	} {
		req := httptest.NewRequest(c.method, "https://pfr.localhost"+c.path, nil)
		if c.token {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		rec := httptest.NewRecorder()
		if err := g.ServeHTTP(rec, req, nil); err != nil {
			t.Fatal(err)
		}
		ct := rec.Header().Get("Content-Type")
		switch {
		case rec.Code != c.status:
			t.Errorf("%s %s: %d %s, want %d", c.method, c.path, rec.Code, rec.Body, c.status)
		case c.status >= 400 && (!strings.HasPrefix(ct, "application/fhir+json") || !strings.Contains(rec.Body.String(), `"OperationOutcome"`)):
			t.Errorf("%s %s: %d is no OperationOutcome: %s %s", c.method, c.path, rec.Code, ct, rec.Body)
		case rec.Header().Get("Allow") != c.allow:
			t.Errorf("%s %s: Allow %q, want %q", c.method, c.path, rec.Header().Get("Allow"), c.allow)
		case c.status == http.StatusUnauthorized && rec.Header().Get("WWW-Authenticate") == "":
			t.Errorf("%s %s: 401 without WWW-Authenticate", c.method, c.path)
		}
	}
}
