// Package kvtest is the conformance suite every kv.DB implementation
// passes (bbolt in package kv, PostgreSQL in internal/pgstate): the
// behaviour tenancy, dopu and audit rely on.
package kvtest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/pfrgateway/caddy-pfr/internal/kv"
)

var (
	bucketA = []byte("kvtest/a")
	bucketB = []byte("kvtest/b")
)

// Run runs the suite; open returns a new, empty database for each test.
func Run(t *testing.T, open func(t *testing.T) kv.DB) {
	newDB := func(t *testing.T) kv.DB {
		db := open(t)
		if err := db.CreateBuckets([][]byte{bucketA, bucketB}); err != nil {
			t.Fatalf("CreateBuckets: %v", err)
		}
		return db
	}
	t.Run("GetPutDelete", func(t *testing.T) { testGetPutDelete(t, newDB(t)) })
	t.Run("Order", func(t *testing.T) { testOrder(t, newDB(t)) })
	t.Run("CursorAcrossPages", func(t *testing.T) { testCursorPages(t, newDB(t)) })
	t.Run("DeleteWhileIterating", func(t *testing.T) { testDeleteWhileIterating(t, newDB(t)) })
	t.Run("Rollback", func(t *testing.T) { testRollback(t, newDB(t)) })
	t.Run("Sequence", func(t *testing.T) { testSequence(t, newDB(t)) })
	t.Run("UpdatesSerialize", func(t *testing.T) { testSerialize(t, newDB(t)) })
	t.Run("ViewSnapshot", func(t *testing.T) { testViewSnapshot(t, newDB(t)) })
}

func update(t *testing.T, db kv.DB, fn func(kv.Tx) error) {
	t.Helper()
	if err := db.Update(context.Background(), "kvtest", fn); err != nil {
		t.Fatalf("Update: %v", err)
	}
}

func view(t *testing.T, db kv.DB, fn func(kv.Tx) error) {
	t.Helper()
	if err := db.View(context.Background(), "kvtest", fn); err != nil {
		t.Fatalf("View: %v", err)
	}
}

func testGetPutDelete(t *testing.T, db kv.DB) {
	update(t, db, func(tx kv.Tx) error {
		a := tx.Bucket(bucketA)
		if v := a.Get([]byte("k")); v != nil {
			t.Errorf("Get of an absent key = %q, want nil", v)
		}
		if err := a.Put([]byte("k"), []byte("v1")); err != nil {
			return err
		}
		if err := a.Put([]byte("k"), []byte("v2")); err != nil {
			return err
		}
		if v := a.Get([]byte("k")); string(v) != "v2" {
			t.Errorf("Get after Put in the same transaction = %q, want v2", v)
		}
		if err := a.Put([]byte("empty"), nil); err != nil {
			return err
		}
		// Buckets are separate key spaces.
		if v := tx.Bucket(bucketB).Get([]byte("k")); v != nil {
			t.Errorf("bucket b sees bucket a's key: %q", v)
		}
		return a.Delete([]byte("absent"))
	})
	view(t, db, func(tx kv.Tx) error {
		a := tx.Bucket(bucketA)
		if v := a.Get([]byte("k")); string(v) != "v2" {
			t.Errorf("committed value = %q, want v2", v)
		}
		if v := a.Get([]byte("empty")); v == nil || len(v) != 0 {
			t.Errorf("empty value = %#v, want a non-nil empty slice", v)
		}
		return nil
	})
	update(t, db, func(tx kv.Tx) error { return tx.Bucket(bucketA).Delete([]byte("k")) })
	view(t, db, func(tx kv.Tx) error {
		if v := tx.Bucket(bucketA).Get([]byte("k")); v != nil {
			t.Errorf("deleted key = %q", v)
		}
		return nil
	})
}

func keys(c kv.Cursor, first func() ([]byte, []byte), next func() ([]byte, []byte)) []string {
	var out []string
	for k, _ := first(); k != nil; k, _ = next() {
		out = append(out, string(k))
	}
	return out
}

func testOrder(t *testing.T, db kv.DB) {
	// Byte order, not collation: 0x00 and 0xff, a prefix before its
	// extensions, upper before lower case, "ab" before "a\xff".
	in := []string{"b", "a\x00", "a", "\xff", "B", "a\xff", "ab", "\x00"}
	want := []string{"\x00", "B", "a", "a\x00", "ab", "a\xff", "b", "\xff"}
	update(t, db, func(tx kv.Tx) error {
		for i, k := range in {
			if err := tx.Bucket(bucketA).Put([]byte(k), []byte{byte(i)}); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketB).Put([]byte("zz"), nil)
	})
	view(t, db, func(tx kv.Tx) error {
		a := tx.Bucket(bucketA)
		c := a.Cursor()
		if got := keys(c, c.First, c.Next); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("First/Next = %q, want %q", got, want)
		}
		c = a.Cursor()
		got := keys(c, c.Last, c.Prev)
		for i, j := 0, len(got)-1; i < j; i, j = i+1, j-1 {
			got[i], got[j] = got[j], got[i]
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("Last/Prev reversed = %q, want %q", got, want)
		}
		c = a.Cursor()
		if k, v := c.Seek([]byte("a\x01")); string(k) != "ab" || !bytes.Equal(v, []byte{6}) {
			t.Errorf("Seek(a\\x01) = %q %v, want ab [6]", k, v)
		}
		if k, _ := c.Prev(); string(k) != "a\x00" {
			t.Errorf("Prev after Seek = %q, want a\\x00", k)
		}
		if k, _ := c.Next(); string(k) != "ab" {
			t.Errorf("Next after Prev = %q, want ab", k)
		}
		if k, _ := c.Seek([]byte("\xff\x01")); k != nil {
			t.Errorf("Seek past the end = %q, want nil", k)
		}
		var n int
		if err := a.ForEach(func(k, v []byte) error { n++; return nil }); err != nil || n != len(want) {
			t.Errorf("ForEach visited %d (%v), want %d", n, err, len(want))
		}
		stop := errors.New("stop")
		if err := a.ForEach(func(k, v []byte) error { return stop }); !errors.Is(err, stop) {
			t.Errorf("ForEach returned %v, want fn's error", err)
		}
		return nil
	})
}

func be(n int) []byte { return binary.BigEndian.AppendUint32(nil, uint32(n)) }

func testCursorPages(t *testing.T, db kv.DB) {
	const n = 1000 // more than any read-ahead page
	update(t, db, func(tx kv.Tx) error {
		for i := range n {
			if err := tx.Bucket(bucketA).Put(be(i), be(i)); err != nil {
				return err
			}
		}
		return nil
	})
	view(t, db, func(tx kv.Tx) error {
		c := tx.Bucket(bucketA).Cursor()
		i := 0
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if !bytes.Equal(k, be(i)) || !bytes.Equal(v, be(i)) {
				t.Fatalf("key %d: got %x=%x", i, k, v)
			}
			i++
		}
		if i != n {
			t.Errorf("walked %d keys, want %d", i, n)
		}
		i = n - 1
		for k, _ := c.Last(); k != nil; k, _ = c.Prev() {
			if !bytes.Equal(k, be(i)) {
				t.Fatalf("backwards key %d: got %x", i, k)
			}
			i--
		}
		if i != -1 {
			t.Errorf("walked back to %d, want -1", i)
		}
		return nil
	})
}

func testDeleteWhileIterating(t *testing.T, db kv.DB) {
	update(t, db, func(tx kv.Tx) error {
		for i := range 300 {
			if err := tx.Bucket(bucketA).Put(be(i), nil); err != nil {
				return err
			}
		}
		return nil
	})
	// Collect, then delete every even key while walking with a fresh
	// Seek after each deletion (the way the stores delete).
	update(t, db, func(tx kv.Tx) error {
		a := tx.Bucket(bucketA)
		c := a.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			i := int(binary.BigEndian.Uint32(k))
			if i%2 == 0 {
				if err := a.Delete(k); err != nil {
					return err
				}
				k, _ = c.Seek(be(i))
				if k == nil {
					break
				}
				if binary.BigEndian.Uint32(k)%2 == 0 {
					t.Fatalf("Seek after Delete landed on a deleted key %x", k)
				}
			}
		}
		return nil
	})
	view(t, db, func(tx kv.Tx) error {
		n := 0
		_ = tx.Bucket(bucketA).ForEach(func(k, v []byte) error {
			if binary.BigEndian.Uint32(k)%2 == 0 {
				t.Errorf("even key %x survived", k)
			}
			n++
			return nil
		})
		if n != 150 {
			t.Errorf("%d keys left, want 150", n)
		}
		return nil
	})
}

func testRollback(t *testing.T, db kv.DB) {
	boom := errors.New("boom")
	err := db.Update(context.Background(), "kvtest", func(tx kv.Tx) error {
		if err := tx.Bucket(bucketA).Put([]byte("x"), []byte("1")); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update = %v, want fn's error", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	err = db.Update(ctx, "kvtest", func(tx kv.Tx) error {
		err := tx.Bucket(bucketA).Put([]byte("y"), []byte("1"))
		cancel()
		return err
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Update whose context ended = %v, want context.Canceled", err)
	}
	func() {
		defer func() { _ = recover() }()
		_ = db.Update(context.Background(), "kvtest", func(tx kv.Tx) error {
			_ = tx.Bucket(bucketA).Put([]byte("z"), []byte("1"))
			panic("fn panics")
		})
	}()
	view(t, db, func(tx kv.Tx) error {
		for _, k := range []string{"x", "y", "z"} {
			if v := tx.Bucket(bucketA).Get([]byte(k)); v != nil {
				t.Errorf("%s was kept after a failed Update", k)
			}
		}
		return nil
	})
}

func testSequence(t *testing.T, db kv.DB) {
	var got []uint64
	for range 3 {
		update(t, db, func(tx kv.Tx) error {
			n, err := tx.Bucket(bucketA).NextSequence()
			got = append(got, n)
			return err
		})
	}
	_ = db.Update(context.Background(), "kvtest", func(tx kv.Tx) error {
		_, _ = tx.Bucket(bucketA).NextSequence()
		return errors.New("roll back")
	})
	update(t, db, func(tx kv.Tx) error {
		n, err := tx.Bucket(bucketA).NextSequence()
		got = append(got, n)
		if m, _ := tx.Bucket(bucketB).NextSequence(); m != 1 {
			t.Errorf("bucket b's first sequence = %d, want 1", m)
		}
		return err
	})
	if fmt.Sprint(got) != "[1 2 3 4]" {
		t.Errorf("sequence = %v, want [1 2 3 4] (a rolled-back one is reused)", got)
	}
}

func testSerialize(t *testing.T, db kv.DB) {
	// Read-modify-write from many goroutines: no increment may be lost.
	const workers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				err := db.Update(context.Background(), "kvtest", func(tx kv.Tx) error {
					a := tx.Bucket(bucketA)
					n := 0
					if v := a.Get([]byte("counter")); v != nil {
						n = int(binary.BigEndian.Uint32(v))
					}
					return a.Put([]byte("counter"), be(n+1))
				})
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	view(t, db, func(tx kv.Tx) error {
		if n := binary.BigEndian.Uint32(tx.Bucket(bucketA).Get([]byte("counter"))); n != workers*each {
			t.Errorf("counter = %d, want %d", n, workers*each)
		}
		return nil
	})
}

func testViewSnapshot(t *testing.T, db kv.DB) {
	update(t, db, func(tx kv.Tx) error { return tx.Bucket(bucketA).Put([]byte("k"), []byte("old")) })
	ready, written, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		done <- db.View(context.Background(), "kvtest", func(tx kv.Tx) error {
			first := string(tx.Bucket(bucketA).Get([]byte("k")))
			close(ready)
			<-written
			if second := string(tx.Bucket(bucketA).Get([]byte("k"))); second != first {
				return fmt.Errorf("a View saw %q then %q: not a snapshot", first, second)
			}
			return nil
		})
	}()
	<-ready
	// bbolt lets one writer commit beside readers; so does PostgreSQL.
	update(t, db, func(tx kv.Tx) error { return tx.Bucket(bucketA).Put([]byte("k"), []byte("new")) })
	close(written)
	if err := <-done; err != nil {
		t.Error(err)
	}
}
