package dopu

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

func TestPickupStateMachine(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, Limits{TTL: time.Hour}, Options{LeaseTTL: time.Minute})
	body := testkit.ReadFHIR(t, ipsPath)
	r := f.mustDrop("rec1", body, "192.0.2.1")

	if _, err := f.svc.BeginPickup(ctx, "rec2", r.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("another record's pick-up: %v, want ErrNotFound", err)
	}
	p, err := f.svc.BeginPickup(ctx, "rec1", r.ID)
	if err != nil {
		t.Fatal(err)
	}
	// While one pick-up holds it, nobody else takes or rejects it.
	if _, err := f.svc.BeginPickup(ctx, "rec1", r.ID); !errors.Is(err, ErrPickupInProgress) {
		t.Errorf("concurrent pick-up: %v, want ErrPickupInProgress", err)
	}
	if err := f.svc.Reject(ctx, "rec1", r.ID, "x"); !errors.Is(err, ErrPickupInProgress) {
		t.Errorf("reject during pick-up: %v", err)
	}
	// Abort leaves it pending and free.
	p.Abort()
	p.Abort()
	if st, _ := f.svc.Status(ctx, r.ID); st != StatusPending {
		t.Errorf("after abort: %s", st)
	}
	if err := p.Commit(ctx); err == nil {
		t.Error("commit after abort succeeded")
	}
	p, err = f.svc.BeginPickup(ctx, "rec1", r.ID)
	if err != nil {
		t.Fatalf("pick-up after abort: %v", err)
	}
	if _, err := p.Prepare(martha, pfrID, PrepareOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := p.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	p.Abort() // no effect after commit
	if st, _ := f.svc.Status(ctx, r.ID); st != StatusPickedUp {
		t.Errorf("after commit: %s", st)
	}
	if _, err := f.svc.BeginPickup(ctx, "rec1", r.ID); !errors.Is(err, ErrNotPending) {
		t.Errorf("second pick-up: %v, want ErrNotPending", err)
	}
	if err := f.svc.Reject(ctx, "rec1", r.ID, "late"); !errors.Is(err, ErrNotPending) {
		t.Errorf("reject after pick-up: %v", err)
	}
	sum, got, err := f.svc.Get(ctx, "rec1", r.ID)
	if err != nil || got != nil || sum.Status != StatusPickedUp {
		t.Errorf("picked-up drop-off: %+v, body %d bytes, %v", sum, len(got), err)
	}
	if n := keyCount(t, f.kv)["dopu/bodies"]; n != 0 {
		t.Errorf("%d bodies kept after pick-up", n)
	}
}

func TestRejectThenPickup(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, Limits{}, Options{})
	r := f.mustDrop("rec1", testkit.ReadFHIR(t, ipsPath), "192.0.2.1")
	if err := f.svc.Reject(ctx, "rec2", r.ID, "x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("reject by another record: %v", err)
	}
	if err := f.svc.Reject(ctx, "rec1", r.ID, "not my data"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.BeginPickup(ctx, "rec1", r.ID); !errors.Is(err, ErrNotPending) {
		t.Errorf("pick-up after reject: %v", err)
	}
	if err := f.svc.Reject(ctx, "rec1", r.ID, "again"); !errors.Is(err, ErrNotPending) {
		t.Errorf("second reject: %v", err)
	}
	list, _ := f.svc.List(ctx, "rec1")
	if len(list) != 1 || list[0].Status != StatusRejected || list[0].Reason != "not my data" {
		t.Errorf("list %+v", list)
	}
	if st, _ := f.svc.Status(ctx, r.ID); st != StatusRejected {
		t.Errorf("sender sees %s", st)
	}
	counts := keyCount(t, f.kv)
	if counts["dopu/bodies"] != 0 || counts["dopu/outbox"] != 0 || counts["dopu/usage"] != 0 || counts["dopu/expiry"] != 0 {
		t.Errorf("a rejected drop-off left %v", counts)
	}
}

func TestLeaseExpiresAfterCrash(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, Limits{}, Options{LeaseTTL: time.Minute})
	r := f.mustDrop("rec1", testkit.ReadFHIR(t, ipsPath), "192.0.2.1")
	stale, err := f.svc.BeginPickup(ctx, "rec1", r.ID)
	if err != nil {
		t.Fatal(err)
	}
	// The holder "crashes": never commits nor aborts. After the lease
	// runs out another pick-up takes over, and the stale one cannot commit.
	f.clock.Advance(2 * time.Minute)
	fresh, err := f.svc.BeginPickup(ctx, "rec1", r.ID)
	if err != nil {
		t.Fatalf("after lease expiry: %v", err)
	}
	if err := stale.Commit(ctx); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("stale commit: %v, want ErrLeaseLost", err)
	}
	if err := fresh.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestExpiry(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, Limits{TTL: 24 * time.Hour}, Options{})
	body := testkit.ReadFHIR(t, ipsPath)
	old := f.mustDrop("rec1", body, "192.0.2.1")
	f.clock.Advance(12 * time.Hour)
	young := f.mustDrop("rec1", bundleJSON(t, "collection", patient("A", "B", "2000-01-01", "male")), "192.0.2.1")
	held := f.mustDrop("rec2", body, "192.0.2.1")
	p, err := f.svc.BeginPickup(ctx, "rec2", held.ID)
	if err != nil {
		t.Fatal(err)
	}

	f.clock.Advance(13 * time.Hour) // old and held are past their TTL
	if st, _ := f.svc.Status(ctx, old.ID); st != StatusExpired {
		t.Errorf("past TTL, before the expiry loop: %s", st)
	}
	n, err := f.svc.Expire(ctx)
	if err != nil || n != 1 {
		t.Fatalf("expired %d (%v), want 1: the held one waits for its lease", n, err)
	}
	for id, want := range map[string]Status{old.ID: StatusExpired, young.ID: StatusPending, held.ID: StatusPending} {
		d := getDropOff(t, f, id)
		if d.Status != want {
			t.Errorf("%s: %s, want %s", id, d.Status, want)
		}
	}
	if _, body, _ := f.svc.Get(ctx, "rec1", old.ID); body != nil {
		t.Error("expired body kept")
	}
	// The pick-up started in time may still complete.
	if err := p.Commit(ctx); err != nil {
		t.Errorf("commit of a pick-up begun before expiry: %v", err)
	}
	// Starting a pick-up after the TTL expires the drop-off instead.
	f.clock.Advance(12 * time.Hour)
	if _, err := f.svc.BeginPickup(ctx, "rec1", young.ID); !errors.Is(err, ErrNotPending) {
		t.Errorf("pick-up past TTL: %v", err)
	}
	if d := getDropOff(t, f, young.ID); d.Status != StatusExpired {
		t.Errorf("young: %s", d.Status)
	}
	if n, _ := f.svc.Expire(ctx); n != 0 {
		t.Errorf("second expiry pass expired %d", n)
	}
	// Expired bodies may be dropped off again: a new receipt.
	again := f.mustDrop("rec1", body, "192.0.2.1")
	if again.ID == old.ID || again.Duplicate {
		t.Errorf("after expiry: %+v", again)
	}
	counts := keyCount(t, f.kv)
	if counts["dopu/bodies"] != 1 || counts["dopu/expiry"] != 1 || counts["dopu/outbox"] != 1 {
		t.Errorf("after expiry: %v", counts)
	}
}

func getDropOff(t *testing.T, f *fixture, id string) *DropOff {
	t.Helper()
	var d *DropOff
	err := f.svc.store.View(context.Background(), func(tx Tx) error {
		var err error
		d, err = tx.Get(id)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDeleteRecord(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, Limits{}, Options{})
	body := testkit.ReadFHIR(t, ipsPath)
	a := f.mustDrop("gone", body, "192.0.2.1")
	f.mustDrop("gone", bundleJSON(t, "collection", patient("A", "B", "2000-01-01", "male")), "192.0.2.1")
	if err := f.svc.Reject(ctx, "gone", a.ID, "no"); err != nil {
		t.Fatal(err)
	}
	p, err := f.svc.BeginPickup(ctx, "gone", f.mustDrop("gone", bundleJSON(t, "batch", patient("C", "D", "2000-01-01", "male")), "192.0.2.1").ID)
	if err != nil {
		t.Fatal(err)
	}
	kept := f.mustDrop("stays", body, "192.0.2.1")
	n, err := f.svc.DeleteRecord(ctx, "gone")
	if err != nil || n != 3 {
		t.Fatalf("deleted %d, %v", n, err)
	}
	if err := p.Commit(ctx); err == nil {
		t.Error("a pick-up of a deleted record committed")
	}
	for name, n := range keyCount(t, f.kv) {
		want := 1
		if name == "dopu/finished" {
			want = 0
		}
		if n != want {
			t.Errorf("%s: %d keys, want %d (only the other record's drop-off)", name, n, want)
		}
	}
	if st, _ := f.svc.Status(ctx, kept.ID); st != StatusPending {
		t.Errorf("other record's drop-off: %s", st)
	}
	// The same body may be dropped off again for a new record of that id.
	if r := f.mustDrop("gone", body, "192.0.2.2"); r.Duplicate {
		t.Error("deleted drop-off still deduplicates")
	}
}

func TestPickupLeaseSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	opts := Options{LeaseTTL: 5 * time.Minute}
	f := newFixture(t, Limits{}, opts)
	r := f.mustDrop("rec1", testkit.ReadFHIR(t, ipsPath), "192.0.2.1")
	if _, err := f.svc.BeginPickup(ctx, "rec1", r.ID); err != nil {
		t.Fatal(err)
	}
	// The gateway dies mid pick-up (no Commit, no Abort) and restarts.
	f.reopen(Limits{}, opts)
	if st, _ := f.svc.Status(ctx, r.ID); st != StatusPending {
		t.Fatalf("after a crash mid pick-up: %s", st)
	}
	if _, err := f.svc.BeginPickup(ctx, "rec1", r.ID); !errors.Is(err, ErrPickupInProgress) {
		t.Errorf("while the dead pick-up's lease runs: %v", err)
	}
	f.clock.Advance(6 * time.Minute)
	p, err := f.svc.BeginPickup(ctx, "rec1", r.ID)
	if err != nil {
		t.Fatalf("after the lease ran out: %v", err)
	}
	if err := p.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}
