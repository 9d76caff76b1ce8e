package tenancy

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/pfrgateway/caddy-pfr/internal/kv"
	"github.com/pfrgateway/caddy-pfr/internal/pgstate"
	"github.com/pfrgateway/caddy-pfr/internal/pgtest"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// TestPostgres runs this package's tests again on PostgreSQL: one suite,
// both implementations of Store.
func TestPostgres(t *testing.T) { pgtest.RerunOnPostgres(t) }

// openTestDB opens (or reopens) a bbolt file and closes it at cleanup.
func openTestDB(t *testing.T, path string) *bbolt.DB {
	t.Helper()
	db := testkit.OpenBolt(t, path)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// testEnv is a store on bbolt, or on PostgreSQL when the package runs
// under pgtest.RerunOnPostgres.
type testEnv struct {
	path  string    // bbolt only
	db    *bbolt.DB // bbolt only
	dsn   string    // PostgreSQL only
	kv    kv.DB
	store *KVStore
	clock *testkit.Clock
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	e := &testEnv{clock: testkit.NewClock()}
	e.clock.Set(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	if pgtest.OnPostgres() {
		e.dsn = pgtest.DSN(t)
		e.kv = pgtest.OpenState(t, e.dsn)
	} else {
		e.path = filepath.Join(t.TempDir(), "pfr.db")
		e.db = openTestDB(t, e.path)
		e.kv = kv.Bolt(e.db)
	}
	s, err := NewStore(e.kv)
	if err != nil {
		t.Fatalf("NewStore: %v", err)
	}
	s.Now = e.clock.Now
	e.store = s
	return e
}

// reopen closes the database and returns a new store on it, as a restart
// (or another node) would see it.
func (e *testEnv) reopen(t *testing.T) *KVStore {
	t.Helper()
	var db kv.DB
	if e.db != nil {
		if err := e.db.Close(); err != nil {
			t.Fatal(err)
		}
		db = kv.Bolt(openTestDB(t, e.path))
	} else {
		e.kv.(*pgstate.DB).Close()
		db = pgtest.OpenState(t, e.dsn)
	}
	s, err := NewStore(db)
	if err != nil {
		t.Fatal(err)
	}
	s.Now = e.clock.Now
	return s
}

// dump returns every byte the database holds for the store: the bbolt
// file, or every key and value in PostgreSQL.
func (e *testEnv) dump(t *testing.T) []byte {
	t.Helper()
	if e.db != nil {
		if err := e.db.Sync(); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(e.path)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	rows, err := e.kv.(*pgstate.DB).Pool().Query(context.Background(), "SELECT bucket, key, value FROM pfr_kv")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out bytes.Buffer
	for rows.Next() {
		var b string
		var k, v []byte
		if err := rows.Scan(&b, &k, &v); err != nil {
			t.Fatal(err)
		}
		out.WriteString(b)
		out.Write(k)
		out.Write(v)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// boltOnly skips a test about the bbolt file itself on PostgreSQL.
func (e *testEnv) boltOnly(t *testing.T) {
	t.Helper()
	if e.db == nil {
		t.Skip("about the bbolt file")
	}
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
