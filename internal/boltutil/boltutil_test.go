package boltutil

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

func TestCreateBuckets(t *testing.T) {
	if CreateBuckets(nil, nil) == nil {
		t.Error("nil database accepted")
	}
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "x.db"), 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	names := [][]byte{[]byte("a/one"), []byte("a/two")}
	for range 2 { // idempotent
		if err := CreateBuckets(db, names); err != nil {
			t.Fatal(err)
		}
	}
	_ = db.View(func(tx *bbolt.Tx) error {
		for _, n := range names {
			if tx.Bucket(n) == nil {
				t.Errorf("bucket %s missing", n)
			}
		}
		return nil
	})
	if err := CreateBuckets(db, [][]byte{{}}); err == nil {
		t.Error("an empty bucket name was accepted")
	}
}

func TestUpdateKeepsAllOrNothing(t *testing.T) {
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "x.db"), 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	name := []byte("b")
	if err := CreateBuckets(db, [][]byte{name}); err != nil {
		t.Fatal(err)
	}
	put := func(k string) func(*bbolt.Tx) error {
		return func(tx *bbolt.Tx) error { return tx.Bucket(name).Put([]byte(k), []byte("v")) }
	}
	has := func(k string) bool {
		var ok bool
		_ = View(context.Background(), db, "test", func(tx *bbolt.Tx) error {
			ok = tx.Bucket(name).Get([]byte(k)) != nil
			return nil
		})
		return ok
	}
	if err := Update(context.Background(), db, "test", put("kept")); err != nil || !has("kept") {
		t.Fatalf("a plain update: %v, kept %v", err, has("kept"))
	}
	boom := errors.New("boom")
	if err := Update(context.Background(), db, "test", func(tx *bbolt.Tx) error { _ = put("failed")(tx); return boom }); err != boom {
		t.Errorf("fn's error came back as %v, want it unchanged", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	err = Update(ctx, db, "test", func(tx *bbolt.Tx) error { cancel(); return put("cancelled")(tx) })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled during fn: %v", err)
	}
	func() {
		defer func() { _ = recover() }()
		_ = Update(context.Background(), db, "test", func(tx *bbolt.Tx) error { _ = put("panicked")(tx); panic("x") })
	}()
	for _, k := range []string{"failed", "cancelled", "panicked"} {
		if has(k) {
			t.Errorf("%s: its write was kept", k)
		}
	}
	if err := View(ctx, db, "test", func(*bbolt.Tx) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("view with a done context: %v", err)
	}
}
