package store

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/pfrgateway/caddy-pfr/fhir/search"
)

// withDeltaBound sets maxDeltaKeys for one test.
func withDeltaBound(t *testing.T, n int) {
	t.Helper()
	old := maxDeltaKeys
	maxDeltaKeys = n
	t.Cleanup(func() { maxDeltaKeys = old })
}

// An index view shows the index bucket's keys and the delta's (a key in
// both once) with the log's changes over them, forwards (indexCursor),
// backwards (backKeys) and counted (countPrefix), from random places:
// checked against a set of keys. The delta holds keys of some first
// bytes (tags) only, so the walks skip it where it has none.
func TestIndexViewMergesTheDelta(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "c.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rng := rand.New(rand.NewPCG(14, 9))
	key := func(tags string) string { // few letters: the three share many keys
		return string(tags[rng.IntN(len(tags))]) + strings.Repeat(string(rune('a'+rng.IntN(3))), rng.IntN(3)) + string(rune('a'+rng.IntN(4)))
	}
	for round := range 400 {
		err := db.Update(func(tx *bolt.Tx) error {
			for _, name := range []string{"b", "d"} {
				_ = tx.DeleteBucket([]byte(name))
			}
			b, err := tx.CreateBucket([]byte("b"))
			if err != nil {
				return err
			}
			d, err := tx.CreateBucket([]byte("d"))
			if err != nil {
				return err
			}
			want := map[string]bool{}
			for range rng.IntN(30) {
				k := key("abcde")
				want[k] = true
				if err := b.Put([]byte(k), nil); err != nil {
					return err
				}
			}
			deltaTags := []string{"b", "bd", "ae", "abcde"}[round%4]
			for range rng.IntN(30) {
				k := key(deltaTags)
				want[k] = true
				if err := d.Put([]byte(k), nil); err != nil {
					return err
				}
			}
			log := map[string]bool{}
			for range rng.IntN(15) {
				log[key("abcde")] = rng.IntN(2) == 0
			}
			var ov []overlayEntry
			for _, k := range slices.Sorted(mapKeys(log)) {
				ov = append(ov, overlayEntry{[]byte(k), log[k]})
				if log[k] {
					want[k] = true
				} else {
					delete(want, k)
				}
			}
			var view *indexView
			switch round % 5 {
			case 0: // no index bucket yet
				if err := tx.DeleteBucket([]byte("b")); err != nil {
					return err
				}
				for k := range want {
					if k2, _ := d.Cursor().Seek([]byte(k)); string(k2) != k && !log[k] {
						delete(want, k)
					}
				}
				view = newIndexView(nil, d, ov)
			default:
				view = newIndexView(b, d, ov)
			}
			sorted := slices.Sorted(mapKeys(want))
			for range 10 {
				from := key("abcdef")[:1+rng.IntN(2)]
				if rng.IntN(6) == 0 {
					from = ""
				}
				var got []string
				c := view.cursor()
				for k := c.Seek([]byte(from)); k != nil; k = c.Next() {
					got = append(got, string(k))
				}
				i, _ := slices.BinarySearch(sorted, from)
				if !slices.Equal(got, sorted[i:]) {
					t.Fatalf("round %d: from %q: got %q, want %q", round, from, got, sorted[i:])
				}
				got = got[:0]
				bk := newBackKeys(view)
				for k := bk.Before([]byte(from)); k != nil; k = bk.Prev() {
					got = append(got, string(k))
				}
				back := slices.Clone(sorted[:i])
				slices.Reverse(back)
				if !slices.Equal(got, back) {
					t.Fatalf("round %d: before %q: got %q, want %q", round, from, got, back)
				}
				n := 0
				for _, k := range sorted {
					if strings.HasPrefix(k, from) {
						n++
					}
				}
				if got := countPrefix(view, []byte(from)); got != n {
					t.Fatalf("round %d: %d keys start with %q, counted %d", round, n, from, got)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// mapKeys yields the keys of m.
func mapKeys(m map[string]bool) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// deltaState returns the keys of the Observation index and of its delta
// in the default partition, and the count of keys added to the delta.
func deltaState(t *testing.T, db *DB) (index, delta []string, added uint64) {
	t.Helper()
	err := db.view(defaultPartitionKey, func(p *ptx) error {
		for i, name := range [][]byte{bucketIndex, bucketIndexDelta} {
			b := p.part.Bucket(name)
			if b == nil {
				continue
			}
			if i == 1 {
				added, _ = binary.Uvarint(b.Get([]byte("Observation\x00")))
			}
			if tb := b.Bucket([]byte("Observation")); tb != nil {
				_ = tb.ForEach(func(k, _ []byte) error {
					if i == 0 {
						index = append(index, string(k))
					} else {
						delta = append(delta, string(k))
					}
					return nil
				})
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return index, delta, added
}

// The keys of parameters placed by value (search.ValuePlaced) go to the
// type's delta, the others to the index; once the delta has had more
// than maxDeltaKeys its keys move into the index in the commit that
// passes the bound; a resource removed leaves no key in either; and
// searches by value find the same before and after the merge.
func TestValueKeysGoToTheDelta(t *testing.T) {
	withLogBounds(t, -1, 0) // every commit's keys into the index and the delta
	withDeltaBound(t, 9)
	s := newTestServer(t)
	placed := search.ValuePlaced("Observation")
	byValue := func(k string) bool { return k[0] > 0 && placed[k[0]-1] }
	obs := func(v int) map[string]any {
		return map[string]any{"resourceType": "Observation", "status": "final",
			"code":          map[string]any{"coding": []any{map[string]any{"system": "http://loinc.org", "code": "2339-0"}}},
			"valueQuantity": map[string]any{"value": json.Number(fmt.Sprint(v)), "system": "http://unitsofmeasure.org", "code": "mg/dL"}}
	}
	search := func() []string {
		var ids []string
		for _, e := range s.must(http.StatusOK, "GET", "/fhir/Observation?value-quantity=gt104&_count=100", "DEFAULT", nil).JSON(t)["entry"].([]any) {
			ids = append(ids, str(e, "resource", "id"))
		}
		slices.Sort(ids)
		return ids
	}
	// Each Observation has 2 keys placed by value (value-quantity and
	// code-value-quantity, a point each): four fill the delta to 8.
	var ids []string
	for v := range 4 {
		r := s.must(http.StatusCreated, "POST", "/fhir/Observation", "DEFAULT", obs(100+v*3))
		ids = append(ids, str(r.JSON(t), "id"))
	}
	index, delta, added := deltaState(t, s.db)
	if len(delta) != 8 || added != 8 || slices.ContainsFunc(delta, func(k string) bool { return !byValue(k) }) {
		t.Fatalf("want the 8 keys placed by value in the delta: %d keys, %d added: %q", len(delta), added, delta)
	}
	if len(index) == 0 || slices.ContainsFunc(index, byValue) {
		t.Fatalf("want the other keys in the index, none placed by value: %q", index)
	}
	before := search()
	if len(before) != 2 {
		t.Fatalf("value-quantity=gt104 found %v, want the two above 104", before)
	}
	// Updating the first passes the bound: everything in the index, no
	// delta, and of the first's keys only its new ones (the commit's
	// changes win over the delta's keys).
	oldKeys := slices.DeleteFunc(slices.Clone(delta), func(k string) bool { return idOfIndexKey([]byte(k)) != ids[0] })
	first := obs(121)
	first["id"] = ids[0]
	s.must(http.StatusOK, "PUT", "/fhir/Observation/"+ids[0], "DEFAULT", first)
	index, delta, added = deltaState(t, s.db)
	if len(delta) != 0 || added != 0 || !slices.ContainsFunc(index, byValue) {
		t.Fatalf("want the delta merged: %d keys left, %d added, index %q", len(delta), added, index)
	}
	if len(oldKeys) != 2 || slices.ContainsFunc(oldKeys, func(k string) bool { return slices.Contains(index, k) }) {
		t.Fatalf("the first's old keys %q: want 2, none left in the index", oldKeys)
	}
	if got := search(); len(got) != 3 || !slices.Contains(got, before[0]) || !slices.Contains(got, before[1]) {
		t.Fatalf("after the merge value-quantity=gt104 found %v", got)
	}
	// Deleted: its keys leave the index (merged) or the delta (new).
	s.must(http.StatusCreated, "POST", "/fhir/Observation", "DEFAULT", obs(130))
	for _, id := range ids {
		s.must(http.StatusOK, "DELETE", "/fhir/Observation/"+id, "DEFAULT", nil)
	}
	index, delta, _ = deltaState(t, s.db)
	for _, k := range append(index, delta...) {
		if slices.Contains(ids, idOfIndexKey([]byte(k))) {
			t.Fatalf("key %q of a deleted resource is left", k)
		}
	}
	if len(delta) != 2 {
		t.Fatalf("want the last resource's 2 keys in the delta, got %q", delta)
	}
	if got := search(); len(got) != 1 {
		t.Fatalf("after the deletions value-quantity=gt104 found %v, want the last one", got)
	}
}

// sortKeys sorts, in two halves or not, whatever the lengths and
// whichever half holds the smallest keys.
func TestSortKeys(t *testing.T) {
	old := parallelSortMin
	t.Cleanup(func() { parallelSortMin = old })
	rng := rand.New(rand.NewPCG(14, 5))
	for round := range 200 {
		parallelSortMin = []int{1, 2, 5, 1 << 30}[round%4]
		keys := make([]string, rng.IntN(300))
		for i := range keys {
			keys[i] = fmt.Sprintf("%c%d", 'a'+rng.IntN(3), rng.IntN(1000))
		}
		if round%5 == 0 { // sorted halves, the second before the first
			slices.Sort(keys)
			keys = append(keys[len(keys)/2:], keys[:len(keys)/2]...)
		}
		want := slices.Sorted(slices.Values(keys))
		if got := sortKeys(keys); !slices.Equal(got, want) {
			t.Fatalf("round %d: sortKeys(%d keys) = %q, want %q", round, len(keys), got, want)
		}
	}
}
