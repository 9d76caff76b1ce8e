package store_test

import (
	"context"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/pfrgateway/caddy-pfr/backend"
	"github.com/pfrgateway/caddy-pfr/store"
)

// upstream adapts the store handler to backend.Upstream.
type upstream struct{ h http.Handler }

func (u upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) error {
	u.h.ServeHTTP(w, r)
	return nil
}

// TestGatewayProvisioningAgainstStore runs the gateway's HAPI partition
// provisioning (package backend) against the store: both speak HAPI's
// partition management the same way.
func TestGatewayProvisioningAgainstStore(t *testing.T) {
	db, err := store.Open(filepath.Join(t.TempDir(), "p.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	h, err := store.NewHandler(db, store.Config{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := backend.New(backend.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	up := upstream{h}
	target := backend.Target{RecordID: "rec1", PartitionID: 7, PartitionName: "pfr-rec1"}

	if err := b.Provision(ctx, up, target); err != nil {
		t.Fatalf("provision: %v", err)
	}
	if err := b.Provision(ctx, up, target); err != nil {
		t.Fatalf("provision again (idempotent): %v", err)
	}
	if err := b.Provision(ctx, up, backend.Target{RecordID: "rec2", PartitionID: 8, PartitionName: "pfr-rec1"}); err == nil {
		t.Fatal("a second record got the first one's partition name")
	}
	if err := b.Provision(ctx, up, backend.Target{RecordID: "rec3", PartitionID: 7, PartitionName: "pfr-rec3"}); err == nil {
		t.Fatal("a second record got the first one's partition id")
	}
	if err := b.Deprovision(ctx, up, target); err != nil {
		t.Fatalf("deprovision: %v", err)
	}
	if err := b.Deprovision(ctx, up, target); err != nil {
		t.Fatalf("deprovision again (idempotent): %v", err)
	}
}
