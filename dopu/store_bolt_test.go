package dopu

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

func TestBoltStoreContract(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, Limits{}, Options{})
	f.boltOnly()
	// Another package's bucket in the same file is left alone.
	if err := f.db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte("tenancy/records"))
		if err != nil {
			return err
		}
		return b.Put([]byte("r1"), []byte("x"))
	}); err != nil {
		t.Fatal(err)
	}
	store, err := NewBoltStore(f.db)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	d := &DropOff{Summary: Summary{ID: "d1", RecordID: "r1", Received: now, Expires: now.Add(time.Hour), Status: StatusPending, Size: 3, Changed: now}, Digest: "aa"}
	var leaked Tx
	err = store.Update(ctx, func(tx Tx) error {
		leaked = tx
		if err := tx.Create(d, []byte("abc")); err != nil {
			return err
		}
		dup := *d
		if tx.Create(&dup, []byte("abc")) == nil {
			t.Error("same id created twice")
		}
		dup.ID = "d2"
		if tx.Create(&dup, []byte("abc")) == nil {
			t.Error("same digest created twice")
		}
		if tx.Delete("d1") == nil {
			t.Error("a pending drop-off was deleted")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaked.Get("d1"); err == nil {
		t.Error("a transaction was usable after it ended")
	}
	// A failing Update keeps nothing.
	boom := errors.New("boom")
	err = store.Update(ctx, func(tx Tx) error {
		d2 := *d
		d2.ID, d2.Digest = "d3", "bb"
		if err := tx.Create(&d2, []byte("x")); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("%v", err)
	}
	err = store.Update(ctx, func(tx Tx) error {
		if _, err := tx.Get("d3"); !errors.Is(err, ErrNotFound) {
			t.Errorf("rolled-back drop-off: %v", err)
		}
		got, err := tx.Get("d1")
		if err != nil {
			return err
		}
		got.Status, got.Changed, got.Digest, got.Size = StatusRejected, now, "forged", 99
		if err := tx.Put(got); err != nil {
			return err
		}
		if got.Digest != "aa" || got.Size != 3 {
			t.Errorf("Put changed immutable fields: %+v", got)
		}
		got.Status = StatusPending
		if err := tx.Put(got); !errors.Is(err, ErrNotPending) {
			t.Errorf("finished drop-off changed: %v", err)
		}
		if _, err := tx.Body("d1"); !errors.Is(err, ErrNoBody) {
			t.Errorf("body of a rejected drop-off: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ro := *d
	ro.ID, ro.Digest, ro.Status = "d4", "cc", StatusPending
	if err := store.View(ctx, func(tx Tx) error { return tx.Create(&ro, []byte("x")) }); !errors.Is(err, bolterrors.ErrTxNotWritable) {
		t.Error("wrote in a read-only transaction")
	}
	f.db.View(func(tx *bbolt.Tx) error {
		if string(tx.Bucket([]byte("tenancy/records")).Get([]byte("r1"))) != "x" {
			t.Error("another package's data changed")
		}
		return nil
	})
}
