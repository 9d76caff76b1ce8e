package tenancy

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/pfrgateway/caddy-pfr/internal/kv"
)

func TestAccounts(t *testing.T) {
	e := newTestEnv(t)
	var first, again, other *Account
	e.update(t, func(tx Tx) (err error) {
		if first, err = tx.EnsureAccount("https://a.example", "alice"); err != nil {
			return err
		}
		if again, err = tx.EnsureAccount("https://a.example", "alice"); err != nil {
			return err
		}
		// Same subject at another issuer is another person.
		other, err = tx.EnsureAccount("https://b.example", "alice")
		return err
	})
	if first.ID != again.ID || first.ID == other.ID {
		t.Fatalf("accounts: first %+v, again %+v, other issuer %+v", first, again, other)
	}
	if first.Issuer != "https://a.example" || first.Subject != "alice" || !first.Created.Equal(e.clock.Now()) {
		t.Fatalf("account fields: %+v", first)
	}
	e.view(t, func(tx Tx) error {
		got, err := tx.AccountByIdentity("https://a.example", "alice")
		if err != nil || *got != *first {
			t.Errorf("AccountByIdentity = %+v, %v", got, err)
		}
		got, err = tx.Account(first.ID)
		if err != nil || *got != *first {
			t.Errorf("Account = %+v, %v", got, err)
		}
		_, err = tx.AccountByIdentity("https://a.example", "bob")
		wantErr(t, err, ErrNotFound)
		_, err = tx.Account(NewID())
		wantErr(t, err, ErrNotFound)
		return nil
	})
}

func TestIdentityKeysDoNotCollide(t *testing.T) {
	e := newTestEnv(t)
	pairs := [][2]string{{"ab", "c"}, {"a", "bc"}, {"a\x00", "b"}, {"a", "\x00b"}, {"\x01a", "b"}}
	ids := map[string]bool{}
	e.update(t, func(tx Tx) error {
		for _, p := range pairs {
			a, err := tx.EnsureAccount(p[0], p[1])
			if err != nil {
				return err
			}
			ids[a.ID] = true
		}
		return nil
	})
	if len(ids) != len(pairs) {
		t.Fatalf("%d distinct (iss, sub) pairs gave %d accounts", len(pairs), len(ids))
	}
}

func TestEnsureAccountRefusesBadIdentities(t *testing.T) {
	e := newTestEnv(t)
	for _, p := range [][2]string{
		{"", "alice"}, {"https://a.example", ""},
		{strings.Repeat("i", MaxIssuerLength+1), "alice"},
		{"https://a.example", strings.Repeat("s", MaxSubjectLength+1)},
	} {
		err := e.store.Update(context.Background(), func(tx Tx) error {
			_, err := tx.EnsureAccount(p[0], p[1])
			return err
		})
		wantErr(t, err, ErrInvalid)
	}
}

func TestReopenKeepsEverything(t *testing.T) {
	e := newTestEnv(t)
	alice, bob := e.account(t, "alice"), e.account(t, "bob")
	r := e.recordOwnedBy(t, "john", alice)
	r.Status, r.PatientID, r.WebhookURL, r.WebhookSecret = StatusActive, "pat-1", "https://hooks.example/x", "k"
	e.update(t, func(tx Tx) error {
		if err := tx.PutRecord(r); err != nil {
			return err
		}
		return tx.SetMembership(Membership{RecordID: r.ID, AccountID: bob.ID, Role: RoleViewer})
	})
	code := e.invite(t, r, RoleManager, alice, time.Hour)
	deleted := e.recordOwnedBy(t, "gone", alice)
	e.update(t, func(tx Tx) error { return tx.DeleteRecord(deleted.ID) })
	s := e.reopen(t)
	err := s.View(context.Background(), func(tx Tx) error {
		got, err := tx.RecordBySlug("john")
		if err != nil {
			return err
		}
		if *got != *r {
			t.Errorf("record after reopen = %+v, want %+v", got, r)
		}
		a, err := tx.AccountByIdentity("https://issuer.example", "bob")
		if err != nil || a.ID != bob.ID {
			t.Errorf("bob after reopen = %+v, %v", a, err)
		}
		ms, err := tx.Memberships(r.ID)
		if err != nil || len(ms) != 2 {
			t.Errorf("memberships after reopen = %+v, %v", ms, err)
		}
		inv, err := tx.Invitation(code)
		if err != nil || inv.Role != RoleManager || inv.RecordID != r.ID {
			t.Errorf("invitation after reopen = %+v, %v", inv, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Retired ids and the partition sequence survive too.
	next := &Record{Slug: "next", Relationship: RelationshipSelf}
	err = s.Update(context.Background(), func(tx Tx) error {
		if err := tx.CreateRecord(&Record{ID: deleted.ID, Slug: "again", Relationship: RelationshipSelf}); !errors.Is(err, ErrConflict) {
			t.Errorf("reusing a deleted id after reopen: %v, want ErrConflict", err)
		}
		return tx.CreateRecord(next)
	})
	if err != nil {
		t.Fatal(err)
	}
	if next.PartitionID != deleted.PartitionID+1 {
		t.Fatalf("partition id after reopen = %d, want %d", next.PartitionID, deleted.PartitionID+1)
	}
}

func TestBucketsAreNamespaced(t *testing.T) {
	e := newTestEnv(t)
	e.boltOnly(t)
	err := e.db.View(func(tx *bbolt.Tx) error {
		n := 0
		err := tx.ForEach(func(name []byte, _ *bbolt.Bucket) error {
			n++
			if !strings.HasPrefix(string(name), "tenancy/") {
				t.Errorf("bucket %q outside the tenancy/ prefix", name)
			}
			return nil
		})
		if n != len(allBuckets) {
			t.Errorf("%d buckets, want %d", n, len(allBuckets))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// Another package's bucket in the same file is left alone.
	if err := e.db.Update(func(tx *bbolt.Tx) error {
		_, err := tx.CreateBucket([]byte("dopu/queue"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := NewBoltStore(e.db); err != nil {
		t.Fatalf("NewBoltStore on a shared, already initialized file: %v", err)
	}
}

func TestTxMisuse(t *testing.T) {
	e := newTestEnv(t)
	alice := e.account(t, "alice")

	// Writes inside View.
	err := e.store.View(context.Background(), func(tx Tx) error {
		if _, err := tx.EnsureAccount("https://issuer.example", "bob"); !errors.Is(err, ErrReadOnly) {
			t.Errorf("EnsureAccount in View: %v, want ErrReadOnly", err)
		}
		if err := tx.CreateRecord(&Record{Slug: "john", Relationship: RelationshipSelf}); !errors.Is(err, ErrReadOnly) {
			t.Errorf("CreateRecord in View: %v, want ErrReadOnly", err)
		}
		if _, err := tx.AcceptInvitation(NewID(), alice.ID); !errors.Is(err, ErrReadOnly) {
			t.Errorf("AcceptInvitation in View: %v, want ErrReadOnly", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// A Tx kept past its function.
	var leaked Tx
	e.update(t, func(tx Tx) error { leaked = tx; return nil })
	if _, err := leaked.AccountByIdentity("https://issuer.example", "alice"); !errors.Is(err, ErrTxClosed) {
		t.Errorf("read on a closed Tx: %v, want ErrTxClosed", err)
	}
	if err := leaked.CreateRecord(&Record{Slug: "john", Relationship: RelationshipSelf}); !errors.Is(err, ErrTxClosed) {
		t.Errorf("write on a closed Tx: %v, want ErrTxClosed", err)
	}
}

func TestUpdateRollsBackOnCancelAndPanic(t *testing.T) {
	e := newTestEnv(t)

	// Cancelled while fn ran: nothing is kept.
	ctx, cancel := context.WithCancel(context.Background())
	err := e.store.Update(ctx, func(tx Tx) error {
		err := tx.CreateRecord(&Record{Slug: "cancelled", Relationship: RelationshipSelf})
		cancel()
		return err
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Update after cancel = %v, want context.Canceled", err)
	}
	// Cancelled before: fn does not run.
	ran := false
	err = e.store.Update(ctx, func(Tx) error { ran = true; return nil })
	if !errors.Is(err, context.Canceled) || ran {
		t.Fatalf("Update with a done context: err %v, ran %v", err, ran)
	}
	if err := e.store.View(ctx, func(Tx) error { ran = true; return nil }); !errors.Is(err, context.Canceled) || ran {
		t.Fatalf("View with a done context: err %v, ran %v", err, ran)
	}

	// A panic rolls back and propagates.
	func() {
		defer func() {
			if recover() == nil {
				t.Error("the panic did not propagate")
			}
		}()
		_ = e.store.Update(context.Background(), func(tx Tx) error {
			if err := tx.CreateRecord(&Record{Slug: "panicked", Relationship: RelationshipSelf}); err != nil {
				return err
			}
			panic("boom")
		})
	}()

	e.view(t, func(tx Tx) error {
		for _, slug := range []string{"cancelled", "panicked"} {
			if _, err := tx.RecordBySlug(slug); !errors.Is(err, ErrNotFound) {
				t.Errorf("%s record survived: %v", slug, err)
			}
		}
		return nil
	})
	// The write lock was released: another Update works.
	e.update(t, func(tx Tx) error {
		return tx.CreateRecord(&Record{Slug: "after", Relationship: RelationshipSelf})
	})
}

func TestNewBoltStoreNilDB(t *testing.T) {
	if _, err := NewBoltStore(nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("NewBoltStore(nil) = %v, want ErrInvalid", err)
	}
}

func TestCorruptEntryIsAnErrorNotAPanic(t *testing.T) {
	e := newTestEnv(t)
	r := e.recordOwnedBy(t, "john", e.account(t, "alice"))
	if err := e.kv.Update(context.Background(), "test", func(tx kv.Tx) error {
		return tx.Bucket(bucketRecords).Put([]byte(r.ID), []byte("{not json"))
	}); err != nil {
		t.Fatal(err)
	}
	err := e.store.View(context.Background(), func(tx Tx) error {
		_, err := tx.RecordBySlug("john")
		return err
	})
	if err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "decoding") {
		t.Fatalf("reading a corrupt record: %v, want a decoding error", err)
	}
}
