package dopu

import (
	"context"
	"errors"
	"testing"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// TestLeaseOfDeadProcess: a pick-up that died with its process (the lease is
// left in the database) does not block the owner after a restart, because
// only one process can have the bbolt file open; within the same process a
// live lease still blocks.
func TestLeaseOfDeadProcess(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, Limits{}, Options{})
	f.boltOnly() // a shared store: see TestLeaseSharedStore
	r := f.mustDrop("rec1", testkit.ReadFHIR(t, ipsPath), "192.0.2.1")
	if _, err := f.svc.BeginPickup(ctx, "rec1", r.ID); err != nil { // then the process "dies"
		t.Fatal(err)
	}
	if _, err := f.svc.BeginPickup(ctx, "rec1", r.ID); !errors.Is(err, ErrPickupInProgress) {
		t.Fatalf("a live lease of this process: %v, want ErrPickupInProgress", err)
	}

	// A new process: same database, another lease prefix.
	defer func(old string) { processLeasePrefix = old }(processLeasePrefix)
	processLeasePrefix = newID() + ":"
	f.reopen(Limits{}, Options{})
	p, err := f.svc.BeginPickup(ctx, "rec1", r.ID)
	if err != nil {
		t.Fatalf("after a restart the dead pick-up's lease still blocks: %v", err)
	}
	p.Abort()
	if err := f.svc.Reject(ctx, "rec1", r.ID, "not mine"); err != nil {
		t.Fatalf("reject after the restart: %v", err)
	}

}

// TestLeaseSharedStore: a store shared by several processes (NewWithStore,
// PostgreSQL) keeps honouring leases until they run out.
func TestLeaseSharedStore(t *testing.T) {
	ctx := context.Background()
	g := newFixture(t, Limits{}, Options{})
	shared := NewWithStore(mustStore(t, g), Limits{}, Options{Now: g.clock.Now})
	r2 := g.mustDrop("rec1", testkit.ReadFHIR(t, ipsPath), "192.0.2.1")
	if _, err := shared.BeginPickup(ctx, "rec1", r2.ID); err != nil {
		t.Fatal(err)
	}
	defer func(old string) { processLeasePrefix = old }(processLeasePrefix)
	processLeasePrefix = newID() + ":"
	other := NewWithStore(mustStore(t, g), Limits{}, Options{Now: g.clock.Now})
	if _, err := other.BeginPickup(ctx, "rec1", r2.ID); !errors.Is(err, ErrPickupInProgress) {
		t.Fatalf("a shared store: %v, want ErrPickupInProgress", err)
	}
}

func mustStore(t *testing.T, f *fixture) Store {
	t.Helper()
	s, err := NewStore(f.kv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
