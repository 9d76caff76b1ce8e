package dopu

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/pgtest"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// otherNode returns a second Store on the fixture's database: its own
// connection pool on PostgreSQL (another gateway node), the same file on
// bbolt (another loop of one node).
func otherNode(t *testing.T, f *fixture) Store {
	t.Helper()
	db := f.kv
	if f.dsn != "" {
		db = pgtest.OpenState(t, f.dsn)
	}
	s, err := NewStore(db)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Two delivery loops on one database, running at once: every drop-off's
// alert reaches the receiver exactly once, with its idempotency key.
func TestAlertOnceAcrossDeliveryLoops(t *testing.T) {
	rc := newReceiver(t, testkit.NewClock())
	srv := serveOn(t, "127.0.0.1:0", rc)
	unlimited := Rate{PerMinute: -1}
	limits := Limits{SourceRate: unlimited, RecordRate: unlimited}
	opts := Options{Webhook: webhookTo(srv.URL + "/hook"), PollInterval: 2 * time.Millisecond}
	f := newFixture(t, limits, opts)
	rc.clock = f.clock
	const n = 40
	want := map[string]bool{}
	for i := range n {
		r := f.mustDrop(fmt.Sprintf("rec%d", i%4), crashBundle(t, 1, i), "192.0.2.1")
		want[r.ID] = true
	}
	opts.Now = f.clock.Now
	nodeB := NewWithStore(otherNode(t, f), limits, withTestEgress(opts))

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, svc := range []*Service{f.svc, nodeB} {
		wg.Add(1)
		go func() { defer wg.Done(); _ = svc.Run(ctx) }()
	}
	stop := sync.OnceFunc(func() { cancel(); wg.Wait() })
	defer stop()
	testkit.WaitFor(t, "the outbox to empty", 5*time.Millisecond, func() error {
		if left := outboxLen(t, f); left != 0 {
			return fmt.Errorf("%d alerts still in it", left)
		}
		return nil
	})
	stop()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	seen := map[string]int{}
	for i, p := range rc.got {
		seen[p.DropOff]++
		if rc.keys[i] != p.DropOff {
			t.Errorf("alert of %s carries Idempotency-Key %q", p.DropOff, rc.keys[i])
		}
	}
	for id := range want {
		if seen[id] != 1 {
			t.Errorf("drop-off %s alerted %d times, want once", id, seen[id])
		}
	}
	if len(rc.got) != n || rc.bad != 0 {
		t.Errorf("%d deliveries (%d badly signed) for %d drop-offs", len(rc.got), rc.bad, n)
	}
}

// A node that leased an alert and died holds it only until the lease runs
// out; then another delivers it, and the dead node's late answer changes
// nothing (fencing).
func TestAlertLeaseRunsOut(t *testing.T) {
	ctx := context.Background()
	rc := newReceiver(t, testkit.NewClock())
	srv := serveOn(t, "127.0.0.1:0", rc)
	opts := Options{Webhook: webhookTo(srv.URL + "/hook"), AlertLease: time.Minute}
	f := newFixture(t, Limits{}, opts)
	rc.clock = f.clock
	r := f.mustDrop("rec1", testkit.ReadFHIR(t, ipsPath), "192.0.2.1")
	opts.Now = f.clock.Now
	nodeB := NewWithStore(otherNode(t, f), Limits{}, withTestEgress(opts))

	claimedA, err := f.svc.claimDue(ctx) // node A leases the alert, then "dies"
	if err != nil || len(claimedA) != 1 || claimedA[0].DropOffID != r.ID {
		t.Fatalf("A claimed %v, %v", claimedA, err)
	}
	if n, err := nodeB.DeliverDue(ctx); err != nil || n != 0 || len(rc.delivered()) != 0 {
		t.Fatalf("B delivered %d (%v) while A's lease holds", n, err)
	}
	f.clock.Advance(time.Minute)
	claimedB, err := nodeB.claimDue(ctx)
	if err != nil || len(claimedB) != 1 || claimedB[0].Lease == claimedA[0].Lease {
		t.Fatalf("after A's lease ran out B claimed %v, %v", claimedB, err)
	}
	// A wakes up: its success and its failure both leave B's lease alone.
	if err := f.svc.finishAlert(ctx, claimedA[0]); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.retry(ctx, claimedA[0], errors.New("late failure")); err != nil {
		t.Fatal(err)
	}
	var cur *Alert
	if err := f.svc.store.View(ctx, func(tx Tx) error { cur, err = tx.Alert(r.ID); return err }); err != nil {
		t.Fatalf("the alert is gone after A's late answer: %v", err)
	}
	if cur.Lease != claimedB[0].Lease || cur.Attempts != 0 || cur.LastError != "" {
		t.Fatalf("A's late answer changed B's alert: %+v", cur)
	}
	// B delivers it.
	if ok, err := nodeB.deliver(ctx, claimedB[0]); !ok || err != nil {
		t.Fatalf("B's delivery: %v, %v", ok, err)
	}
	if got := rc.delivered(); len(got) != 1 || got[0].DropOff != r.ID || outboxLen(t, f) != 0 {
		t.Fatalf("delivered %v, outbox %d", got, outboxLen(t, f))
	}
}
