package store

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestIDSetAgreesWithMap: the id set numbers and finds exactly what a Go
// map does, for ids added as bytes and as strings, with duplicates,
// through several growths of its table, and for absent ids that share
// prefixes with present ones.
func TestIDSetAgreesWithMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 7, 1000, 30000} {
		set := newIDSet(min(n, 3)) // small: the table grows
		ref := map[string]int32{}
		var order []string
		for i := range 2 * n {
			id := fmt.Sprintf("id-%d", rng.IntN(n+1))
			if i%3 == 0 {
				id += "-x"
			}
			var got int32
			var added bool
			if i%2 == 0 {
				got, added = set.add([]byte(id))
			} else {
				got, added = set.addString(id)
			}
			want, had := ref[id]
			if !had {
				want = int32(len(order))
				ref[id] = want
				order = append(order, id)
			}
			if got != want || added == had {
				t.Fatalf("n=%d add(%q) = %d, %v; want %d, %v", n, id, got, added, want, !had)
			}
		}
		if set.len() != len(ref) {
			t.Fatalf("n=%d: %d ids, want %d", n, set.len(), len(ref))
		}
		for i, id := range set.ids {
			if id != order[i] {
				t.Fatalf("n=%d: id %d is %q, want %q", n, i, id, order[i])
			}
		}
		for i := range 4*n + 10 {
			id := fmt.Sprintf("id-%d", i)
			for _, probe := range []string{id, id + "-x", id + "-", id[:len(id)-1]} {
				want, had := ref[probe]
				got, ok := set.lookup([]byte(probe))
				gotS, okS := set.lookupString(probe)
				if ok != had || okS != had || (had && (got != want || gotS != want)) {
					t.Fatalf("n=%d lookup(%q) = %d, %v / %d, %v; want %d, %v", n, probe, got, ok, gotS, okS, want, had)
				}
			}
		}
	}
}
