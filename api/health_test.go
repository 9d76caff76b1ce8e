package api

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/backend"
	"github.com/pfrgateway/caddy-pfr/gateway"
	"github.com/pfrgateway/caddy-pfr/tenancy"
)

func TestHealth(t *testing.T) {
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "pfr.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	store, err := tenancy.NewBoltStore(db)
	if err != nil {
		t.Fatal(err)
	}
	be, err := backend.New(backend.Config{})
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewVerifier(nil, auth.Options{})
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(gateway.Config{BaseDomain: "pfr.localhost", Backend: be, Tenancy: store, Verifier: v})
	if err != nil {
		t.Fatal(err)
	}
	New(g)
	get := func(method string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(method, "https://pfr.localhost/pfr/v1/health", nil)
		if err := g.ServeHTTP(rec, req, nil); err != nil {
			t.Fatal(err)
		}
		return rec
	}
	if rec := get(http.MethodGet); rec.Code != http.StatusOK || rec.Body.String() != "{\"status\":\"ok\"}\n" {
		t.Fatalf("healthy: %d %s", rec.Code, rec.Body)
	}
	if rec := get(http.MethodPost); rec.Code != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d", rec.Code)
	}
	// The state is gone: the balancer must stop sending here.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if rec := get(http.MethodGet); rec.Code != http.StatusServiceUnavailable || !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/fhir+json") {
		t.Fatalf("unhealthy: %d %s %s", rec.Code, rec.Header(), rec.Body)
	}
}
