package tenancy

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// testClock is a clock tests move by hand.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// openTestDB opens (or reopens) a bbolt file and closes it at cleanup.
func openTestDB(t *testing.T, path string) *bbolt.DB {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatalf("opening %s: %v", path, err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

type testEnv struct {
	path  string
	db    *bbolt.DB
	store *BoltStore
	clock *testClock
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pfr.db")
	db := openTestDB(t, path)
	s, err := NewBoltStore(db)
	if err != nil {
		t.Fatalf("NewBoltStore: %v", err)
	}
	clock := &testClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	s.Now = clock.Now
	return &testEnv{path: path, db: db, store: s, clock: clock}
}

// update runs fn in an Update and fails the test on error.
func (e *testEnv) update(t *testing.T, fn func(Tx) error) {
	t.Helper()
	if err := e.store.Update(context.Background(), fn); err != nil {
		t.Fatalf("Update: %v", err)
	}
}

// view runs fn in a View and fails the test on error.
func (e *testEnv) view(t *testing.T, fn func(Tx) error) {
	t.Helper()
	if err := e.store.View(context.Background(), fn); err != nil {
		t.Fatalf("View: %v", err)
	}
}

// account creates an account for sub at a fixed issuer.
func (e *testEnv) account(t *testing.T, sub string) *Account {
	t.Helper()
	var a *Account
	e.update(t, func(tx Tx) (err error) {
		a, err = tx.EnsureAccount("https://issuer.example", sub)
		return err
	})
	return a
}

// recordOwnedBy creates an active record with slug, owned by owner.
func (e *testEnv) recordOwnedBy(t *testing.T, slug string, owner *Account) *Record {
	t.Helper()
	r := &Record{Slug: slug, Relationship: RelationshipSelf}
	e.update(t, func(tx Tx) error {
		if err := tx.CreateRecord(r); err != nil {
			return err
		}
		return tx.SetMembership(Membership{RecordID: r.ID, AccountID: owner.ID, Role: RoleOwner})
	})
	return r
}

// wantErr fails unless err wraps target.
func wantErr(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error = %v, want one wrapping %v", err, target)
	}
}
