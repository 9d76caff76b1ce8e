package gateway

import (
	"path/filepath"
	"strings"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/backend"

	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/tenancy"
)

func testRecord() *tenancy.Record {
	return &tenancy.Record{ID: "rec1", Slug: "john", PartitionID: 1, PartitionName: "pfr-rec1", PatientID: "p1", Status: tenancy.StatusActive}
}

func splitFields(s string) []string { return strings.Fields(s) }

func containsByte(s string, b byte) bool { return strings.IndexByte(s, b) >= 0 }

func roleOf(s string) tenancy.Role { return tenancy.Role(s) }

func errStatus(err error) int { return fhir.AsError(err).Status }

// newTestGateway is a gateway for pfr.localhost on a fresh tenancy store,
// in front of an upstream in header partition mode, with no token issuer.
func newTestGateway(t *testing.T) *Gateway {
	t.Helper()
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "pfr.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	tenants, err := tenancy.NewBoltStore(db)
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
	g, err := New(Config{BaseDomain: "pfr.localhost", Backend: be, Tenancy: tenants, Verifier: v})
	if err != nil {
		t.Fatal(err)
	}
	return g
}
