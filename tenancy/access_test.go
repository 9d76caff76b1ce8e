package tenancy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/pfrgateway/caddy-pfr/internal/kv"
)

// accessOf calls Access on s with a background context.
func accessOf(t *testing.T, s Store, slug, iss, sub string) (*Record, Role, error) {
	t.Helper()
	return Access(context.Background(), s, slug, iss, sub)
}

func TestAccess(t *testing.T) {
	e := newTestEnv(t)
	alice, bob := e.account(t, "alice"), e.account(t, "bob")
	e.account(t, "carol")
	r := e.activeRecord(t, "john", alice)
	e.update(t, func(tx Tx) error {
		return tx.SetMembership(Membership{RecordID: r.ID, AccountID: bob.ID, Role: RoleViewer})
	})
	const iss = "https://issuer.example"
	for _, s := range []Store{e.store, viewOnly{e.store}} { // the cached and the plain way agree
		for _, c := range []struct {
			name, iss, sub string
			want           Role
		}{
			{"owner", iss, "alice", RoleOwner},
			{"viewer", iss, "bob", RoleViewer},
			{"account without membership", iss, "carol", ""},
			{"identity without account", iss, "dave", ""},
			{"same subject at another issuer", "https://other.example", "alice", ""},
			{"anonymous", "", "", ""},
		} {
			rec, role, err := accessOf(t, s, "john", c.iss, c.sub)
			if err != nil || rec.ID != r.ID || rec.Slug != "john" || role != c.want {
				t.Errorf("%T %s: %v, %q, %v; want record %s, role %q", s, c.name, rec, role, err, r.ID, c.want)
			}
		}
		if _, _, err := accessOf(t, s, "nobody", iss, "alice"); !errors.Is(err, ErrNotFound) {
			t.Errorf("%T unknown slug: %v, want ErrNotFound", s, err)
		}
	}

	// The record handed out is the caller's own: changing it changes
	// nothing for the next caller.
	rec, _, _ := accessOf(t, e.store, "john", iss, "alice")
	rec.PatientID, rec.Status = "changed", StatusDisabled
	if again, _, err := accessOf(t, e.store, "john", iss, "alice"); err != nil || again.PatientID == "changed" || again.Status != StatusActive {
		t.Errorf("a caller's change to its record reached the next caller: %+v, %v", again, err)
	}
}

// activeRecord creates an active record with slug, owned by owner.
func (e *testEnv) activeRecord(t *testing.T, slug string, owner *Account) *Record {
	t.Helper()
	r := &Record{Slug: slug, Relationship: RelationshipSelf, Status: StatusActive}
	e.update(t, func(tx Tx) error {
		if err := tx.CreateRecord(r); err != nil {
			return err
		}
		return tx.SetMembership(Membership{RecordID: r.ID, AccountID: owner.ID, Role: RoleOwner})
	})
	return r
}

// viewOnly hides the KVStore behind the Store interface, so Access reads
// it in a View every time.
type viewOnly struct{ Store }

// TestAccessSeesChangesAtOnce: every change made through the store is
// seen by the very next Access.
func TestAccessSeesChangesAtOnce(t *testing.T) {
	e := newTestEnv(t)
	alice, bob := e.account(t, "alice"), e.account(t, "bob")
	r := e.activeRecord(t, "john", alice)
	const iss = "https://issuer.example"
	role := func(sub string) Role {
		t.Helper()
		_, role, err := accessOf(t, e.store, "john", iss, sub)
		if err != nil {
			t.Fatalf("Access %s: %v", sub, err)
		}
		return role
	}
	if got := role("bob"); got != "" {
		t.Fatalf("bob before joining: %q", got)
	}
	e.update(t, func(tx Tx) error {
		return tx.SetMembership(Membership{RecordID: r.ID, AccountID: bob.ID, Role: RoleManager})
	})
	if got := role("bob"); got != RoleManager {
		t.Errorf("bob after joining: %q, want manager", got)
	}
	e.update(t, func(tx Tx) error {
		return tx.SetMembership(Membership{RecordID: r.ID, AccountID: bob.ID, Role: RoleViewer})
	})
	if got := role("bob"); got != RoleViewer {
		t.Errorf("bob after demotion: %q, want viewer", got)
	}
	e.update(t, func(tx Tx) error { return tx.DeleteMembership(r.ID, bob.ID) })
	if got := role("bob"); got != "" {
		t.Errorf("bob after removal: %q, want none", got)
	}

	// The record disabled, renamed, deleted: seen at once.
	setStatus := func(s Status) {
		e.update(t, func(tx Tx) error {
			cur, err := tx.Record(r.ID)
			if err != nil {
				return err
			}
			cur.Status = s
			return tx.PutRecord(cur)
		})
	}
	setStatus(StatusDisabled)
	if _, _, err := accessOf(t, e.store, "john", iss, "alice"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a disabled record: %v, want ErrNotFound", err)
	}
	setStatus(StatusActive)
	if _, got, err := accessOf(t, e.store, "john", iss, "alice"); err != nil || got != RoleOwner {
		t.Errorf("the record active again: %q, %v", got, err)
	}
	e.update(t, func(tx Tx) error {
		cur, err := tx.Record(r.ID)
		if err != nil {
			return err
		}
		cur.Slug = "johnny"
		return tx.PutRecord(cur)
	})
	if _, _, err := accessOf(t, e.store, "john", iss, "alice"); !errors.Is(err, ErrNotFound) {
		t.Errorf("the old slug after a rename: %v, want ErrNotFound", err)
	}
	if rec, got, err := accessOf(t, e.store, "johnny", iss, "alice"); err != nil || got != RoleOwner || rec.ID != r.ID {
		t.Errorf("the new slug: %v, %q, %v", rec, got, err)
	}
	e.update(t, func(tx Tx) error { return tx.DeleteRecord(r.ID) })
	if _, _, err := accessOf(t, e.store, "johnny", iss, "alice"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a deleted record: %v, want ErrNotFound", err)
	}
}

// TestAccessOtherNode: a change made by another node on the same database
// (another KVStore, with its own memory) is seen by the next Access here,
// at once: the generation it bumped is read in Access's own snapshot.
func TestAccessOtherNode(t *testing.T) {
	e := newTestEnv(t)
	alice, bob := e.account(t, "alice"), e.account(t, "bob")
	r := e.activeRecord(t, "john", alice)
	e.update(t, func(tx Tx) error {
		return tx.SetMembership(Membership{RecordID: r.ID, AccountID: bob.ID, Role: RoleManager})
	})
	other, err := NewStore(e.kv)
	if err != nil {
		t.Fatal(err)
	}
	other.Now = e.clock.Now
	const iss = "https://issuer.example"
	for range 2 { // the second answer comes from memory
		if _, got, err := accessOf(t, e.store, "john", iss, "bob"); err != nil || got != RoleManager {
			t.Fatalf("bob before: %q, %v", got, err)
		}
	}
	if n := len(e.store.cache.m); n != 1 {
		t.Fatalf("%d answers remembered, want 1", n)
	}
	// The other node removes bob: refused here at once.
	if err := other.Update(context.Background(), func(tx Tx) error { return tx.DeleteMembership(r.ID, bob.ID) }); err != nil {
		t.Fatal(err)
	}
	if _, got, err := accessOf(t, e.store, "john", iss, "bob"); err != nil || got != "" {
		t.Errorf("bob removed by another node: %q, %v; want no role", got, err)
	}
	// The other node disables the record: gone here at once.
	if _, got, _ := accessOf(t, e.store, "john", iss, "alice"); got != RoleOwner {
		t.Fatalf("alice: %q", got)
	}
	if err := other.Update(context.Background(), func(tx Tx) error {
		cur, err := tx.Record(r.ID)
		if err != nil {
			return err
		}
		cur.Status = StatusDisabled
		return tx.PutRecord(cur)
	}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := accessOf(t, e.store, "john", iss, "alice"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a record disabled by another node: %v, want ErrNotFound", err)
	}
	// A failed Update changes nothing, the generation included: what is
	// remembered stays usable.
	if err := other.Update(context.Background(), func(tx Tx) error {
		cur, err := tx.Record(r.ID)
		if err != nil {
			return err
		}
		cur.Status = StatusActive
		if err := tx.PutRecord(cur); err != nil {
			return err
		}
		return errors.New("changed my mind")
	}); err == nil {
		t.Fatal("the failing Update succeeded")
	}
	if _, _, err := accessOf(t, e.store, "john", iss, "alice"); !errors.Is(err, ErrNotFound) {
		t.Errorf("after a failed Update: %v, want ErrNotFound still", err)
	}
}

// TestAccessConcurrentChanges: Access racing with Updates never keeps
// using an answer read before the last change: once the changes stop, the
// next Access sees the final state.
func TestAccessConcurrentChanges(t *testing.T) {
	e := newTestEnv(t)
	alice, bob := e.account(t, "alice"), e.account(t, "bob")
	r := e.activeRecord(t, "john", alice)
	const iss = "https://issuer.example"
	roles := []Role{RoleViewer, RoleManager}
	for round := range 20 {
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					if _, _, err := Access(context.Background(), e.store, "john", iss, "bob"); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		final := roles[round%2]
		for i := range 5 {
			role := roles[(round+i+1)%2]
			if i == 4 {
				role = final
			}
			e.update(t, func(tx Tx) error {
				return tx.SetMembership(Membership{RecordID: r.ID, AccountID: bob.ID, Role: role})
			})
		}
		close(stop)
		wg.Wait()
		if _, got, err := accessOf(t, e.store, "john", iss, "bob"); err != nil || got != final {
			t.Fatalf("round %d: after the last change to %s, Access said %q (%v)", round, final, got, err)
		}
	}
}

// TestAccessBounded: however many callers, the memory holds at most
// maxAccessEntries answers.
func TestAccessBounded(t *testing.T) {
	e := newTestEnv(t)
	e.activeRecord(t, "john", e.account(t, "alice"))
	for i := range maxAccessEntries + 10 {
		if _, _, err := accessOf(t, e.store, "john", "https://issuer.example", fmt.Sprintf("sub-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	e.store.cache.mu.RLock()
	n := len(e.store.cache.m)
	e.store.cache.mu.RUnlock()
	if n == 0 || n > maxAccessEntries {
		t.Errorf("%d answers remembered, want 1..%d", n, maxAccessEntries)
	}
}

// TestAccessReadDuringChange: an answer read from a snapshot taken before
// a change committed is not used after it: the next Access sees the
// change.
func TestAccessReadDuringChange(t *testing.T) {
	e := newTestEnv(t)
	alice, bob := e.account(t, "alice"), e.account(t, "bob")
	r := e.activeRecord(t, "john", alice)
	e.update(t, func(tx Tx) error {
		return tx.SetMembership(Membership{RecordID: r.ID, AccountID: bob.ID, Role: RoleViewer})
	})
	hooked := &afterViewDB{DB: e.kv}
	s, err := NewStore(hooked)
	if err != nil {
		t.Fatal(err)
	}
	s.Now = e.clock.Now
	hooked.after = func() {
		hooked.after = nil
		// Bob is promoted after Access read his role, before it keeps it.
		if err := s.Update(context.Background(), func(tx Tx) error {
			return tx.SetMembership(Membership{RecordID: r.ID, AccountID: bob.ID, Role: RoleManager})
		}); err != nil {
			t.Error(err)
		}
	}
	const iss = "https://issuer.example"
	if _, got, err := accessOf(t, s, "john", iss, "bob"); err != nil || got != RoleViewer {
		t.Fatalf("the read that raced: %q, %v; want viewer, as read", got, err)
	}
	if _, got, err := accessOf(t, s, "john", iss, "bob"); err != nil || got != RoleManager {
		t.Errorf("after the change that raced a read: %q, %v; want manager", got, err)
	}
}

// afterViewDB calls after (when set) once each View has returned, and
// counts the Views. On bbolt it is one too (BoltDB), so that the store on
// it keeps its generation in memory as on the plain database.
type afterViewDB struct {
	kv.DB
	after func()
	views int
}

func (d *afterViewDB) View(ctx context.Context, owner string, fn func(kv.Tx) error) error {
	d.views++
	err := d.DB.View(ctx, owner, fn)
	if d.after != nil {
		d.after()
	}
	return err
}

func (d *afterViewDB) BoltDB() *bbolt.DB { return kv.BoltOf(d.DB) }

// TestAccessWithoutRead: on bbolt a remembered answer is used without a
// read transaction (the generation is in memory, advanced by every Update
// of this process, which holds the file); on PostgreSQL every Access reads
// the stored generation, since another node may have changed it. Both see
// a change at once, including one made through another store on the same
// database.
func TestAccessWithoutRead(t *testing.T) {
	e := newTestEnv(t)
	alice, bob := e.account(t, "alice"), e.account(t, "bob")
	r := e.activeRecord(t, "john", alice)
	counted := &afterViewDB{DB: e.kv}
	s, err := NewStore(counted)
	if err != nil {
		t.Fatal(err)
	}
	s.Now = e.clock.Now
	if (s.local != nil) != (kv.BoltOf(e.kv) != nil) {
		t.Fatalf("generation in memory: %v, on bbolt: %v", s.local != nil, kv.BoltOf(e.kv) != nil)
	}
	const iss = "https://issuer.example"
	for role := range []Role{RoleViewer, RoleManager} {
		want := []Role{RoleViewer, RoleManager}[role]
		// Changed through the other store on the same database.
		e.update(t, func(tx Tx) error {
			return tx.SetMembership(Membership{RecordID: r.ID, AccountID: bob.ID, Role: want})
		})
		counted.views = 0
		for range 3 {
			if _, got, err := accessOf(t, s, "john", iss, "bob"); err != nil || got != want {
				t.Fatalf("bob: %q, %v; want %q", got, err, want)
			}
		}
		wantViews := 1 // the first Access reads, the next two use memory
		if s.local == nil {
			wantViews = 3
		}
		if counted.views != wantViews {
			t.Errorf("%d read transactions for three Accesses, want %d", counted.views, wantViews)
		}
	}
}
