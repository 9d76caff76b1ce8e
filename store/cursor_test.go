package store

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// cursorPrev and cursorBefore read backwards every key a forward walk
// reads, inside a write transaction whose deletes emptied whole leaves
// (runs of hundreds of keys, at the bucket's start and end too), where
// bbolt's own Prev stops at the first empty leaf; with their steps over
// emptied leaves bounded at none too (the fallback).
func TestCursorPrevStepsOverEmptiedLeaves(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "c.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	key := func(i int) []byte { return fmt.Appendf(nil, "k%07d-0123456789abcdef0123456789abcdef", i) }
	const n = 6000
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("b"))
		if err != nil {
			return err
		}
		for i := range n {
			if err := b.Put(key(i), nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(8, 14))
	errRollback := errors.New("rolled back")
	plainStopped := false
	defer func(bound int) { maxEmptyLeaves = bound }(maxEmptyLeaves)
	for round := range 60 {
		// The last rounds take cursorPrev's bounded fallback (a walk
		// forwards from the first key) at every emptied leaf.
		if round == 40 {
			maxEmptyLeaves = 0
		}
		err := db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket([]byte("b"))
			// Runs of deleted keys; the first and last rounds delete
			// the bucket's start and end.
			for range 1 + rng.IntN(6) {
				from := rng.IntN(n)
				switch round % 10 {
				case 0:
					from = 0
				case 1:
					from = n - 300
				}
				for i := from; i < min(from+100+rng.IntN(600), n); i++ {
					if err := b.Delete(key(i)); err != nil {
						return err
					}
				}
			}
			var all [][]byte
			c := b.Cursor()
			for k, _ := c.First(); k != nil; k, _ = c.Next() {
				all = append(all, k)
			}
			var plain int
			for k, _ := c.Last(); k != nil; k, _ = c.Prev() {
				plain++
			}
			plainStopped = plainStopped || plain < len(all)
			var got [][]byte
			for k, _ := c.Last(); k != nil; k, _ = cursorPrev(c, k) {
				got = append(got, k)
			}
			slices.Reverse(got)
			if !slices.EqualFunc(got, all, slices.Equal) {
				t.Fatalf("round %d: %d keys backwards, %d forwards", round, len(got), len(all))
			}
			for range 20 {
				at := key(rng.IntN(n + 1))
				i, _ := slices.BinarySearchFunc(all, at, func(k, at []byte) int { return slices.Compare(k, at) })
				var before [][]byte
				for k, _ := cursorBefore(c, at); k != nil; k, _ = cursorPrev(c, k) {
					before = append(before, k)
				}
				slices.Reverse(before)
				if !slices.EqualFunc(before, all[:i], slices.Equal) {
					t.Fatalf("round %d: before %s: %d keys, want %d", round, at, len(before), i)
				}
			}
			return errRollback
		})
		if !errors.Is(err, errRollback) {
			t.Fatal(err)
		}
	}
	if !plainStopped {
		t.Log("bbolt's Prev no longer stops at an emptied leaf: cursorPrev may be unneeded")
	}
}
