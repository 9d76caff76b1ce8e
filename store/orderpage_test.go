package store

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// withOrderPageMin lowers orderPageMin for one test, so that small data
// takes the walk of the order index.
func withOrderPageMin(t *testing.T, n int) {
	t.Helper()
	old := orderPageMin
	orderPageMin = n
	t.Cleanup(func() { orderPageMin = old })
}

// orderObs is an Observation for the order tests: code 8867-4 of system
// (none when ""), a second coding of the same code in another system
// when twice, and an effective date (none when "").
func orderObs(system string, twice bool, date string) map[string]any {
	coding := []any{}
	if system != "" {
		coding = append(coding, map[string]any{"system": system, "code": "8867-4"})
	} else {
		coding = append(coding, map[string]any{"system": "http://loinc.org", "code": "2339-0"})
	}
	if twice {
		coding = append(coding, map[string]any{"system": "urn:other", "code": "8867-4"})
	}
	o := map[string]any{"resourceType": "Observation", "status": "final", "code": map[string]any{"coding": coding}}
	if date != "" {
		o["effectiveDateTime"] = date
	}
	return o
}

// randomOrderObs is an Observation with a date among few (many ties), a
// tenth without one, a third of another code, some with the code in two
// systems.
func randomOrderObs(rng *rand.Rand) map[string]any {
	date := ""
	if rng.IntN(10) > 0 {
		date = fmt.Sprintf("2026-01-%02dT10:00:00Z", 1+rng.IntN(9))
	}
	system := "http://loinc.org"
	if rng.IntN(3) == 0 {
		system = ""
	} else if rng.IntN(4) == 0 {
		system = "urn:other"
	}
	return orderObs(system, system != "" && rng.IntN(5) == 0, date)
}

// placedBothWays runs plan's search of Observations on p twice: with the
// indexes, and as a scan without them.
func placedBothWays(p *ptx, plan *searchPlan) (indexed, scanned refList, err error) {
	if indexed, err = run(p, "Observation", plan, nil); err != nil {
		return indexed, scanned, err
	}
	p.noIndex = true
	scanned, err = run(p, "Observation", plan, nil)
	p.noIndex = false
	return indexed, scanned, err
}

// orderQueries are the sorted searches the order tests compare.
var orderQueries = []string{
	"", "code=8867-4", // the default order: _lastUpdated
	"_sort=date", "_sort=-date",
	"code=8867-4&_sort=-date", "code=8867-4&_sort=date",
	"code=http://loinc.org|8867-4&_sort=-date", "code=urn:other|8867-4&_sort=date",
	// A union's keys, read under its parts' tags (code | component-code).
	"combo-code=8867-4&_sort=-date", "combo-code=http://loinc.org|8867-4&_sort=date",
}

// checkOrderedPages compares orderedPage with run, and run with a scan,
// for every order query and several page ends: the same first matches,
// the same total.
func checkOrderedPages(t *testing.T, db *DB, when string) {
	t.Helper()
	e := newSearchEngine()
	for _, query := range orderQueries {
		params, _ := url.ParseQuery(query)
		plan, err := e.plan("Observation", params, true)
		if err != nil {
			t.Fatal(err)
		}
		err = db.view("DEFAULT", func(p *ptx) error {
			all, scanned, err := placedBothWays(p, plan)
			if err != nil {
				return err
			}
			if !slices.Equal(all.bareAll(), scanned.bareAll()) {
				t.Fatalf("%s: %s: the index places\n %v\nthe scan\n %v", when, query, all.bareAll(), scanned.bareAll())
			}
			for _, want := range []int{0, 1, 7, all.Len() / 2, all.Len(), all.Len() + 3} {
				page, ok, err := orderedPage(p, "Observation", plan, want)
				if err != nil {
					return err
				}
				if !ok {
					t.Fatalf("%s: %s: want %d: no ordered page", when, query, want)
				}
				if page.total != all.Len() {
					t.Fatalf("%s: %s: total %d, run places %d", when, query, page.total, all.Len())
				}
				if exp := all.bareAll()[:min(want, all.Len())]; !slices.Equal(page.ids, exp) && len(exp)+len(page.ids) > 0 {
					t.Fatalf("%s: %s: first %d\n got %v\nwant %v", when, query, want, page.ids, exp)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// The first page read from the order index and the total counted from
// the index are what placing every match gives: descending runs of equal
// dates in id order, resources without a date last, a resource with the
// code in two systems counted once; with the index log's changes over
// the index too (single writes and deletions).
func TestOrderedPageAgreesWithRun(t *testing.T) {
	withOrderPageMin(t, 1)
	s := newTestServer(t)
	rng := rand.New(rand.NewPCG(14, 17))
	var entries []map[string]any
	for i := range 300 {
		entries = append(entries, postEntry(fmt.Sprintf("urn:uuid:o%d", i), randomOrderObs(rng)))
	}
	s.must(http.StatusOK, "POST", "/fhir", "DEFAULT", txBundle("transaction", entries...))
	checkOrderedPages(t, s.db, "indexed")
	// Deletions and a changed date of resources in the index itself (the
	// log removes their keys), then new ones only in the log.
	indexed := placeAll(t, s.db, "_sort=date")
	for _, id := range indexed[:3] {
		s.must(http.StatusOK, "DELETE", "/fhir/Observation/"+id, "DEFAULT", nil)
	}
	moved := randomOrderObs(rng)
	moved["id"] = indexed[10]
	moved["effectiveDateTime"] = "2030-01-01T00:00:00Z"
	s.must(http.StatusOK, "PUT", "/fhir/Observation/"+indexed[10], "DEFAULT", moved)
	var ids []string
	for range 20 {
		b := s.must(http.StatusCreated, "POST", "/fhir/Observation", "DEFAULT", randomOrderObs(rng)).JSON(t)
		ids = append(ids, str(b, "id"))
	}
	for _, id := range ids[:5] {
		s.must(http.StatusOK, "DELETE", "/fhir/Observation/"+id, "DEFAULT", nil)
	}
	if records, _ := logState(t, s.db); records == 0 {
		t.Fatal("the single writes are not in the index log")
	}
	checkOrderedPages(t, s.db, "with the log")
}

// The walk applies only where it is exact and cheap: not to a search
// whose criteria are more than one filter, nor to a filtered one with
// fewer than orderPageMin matches.
func TestOrderedPageDeclines(t *testing.T) {
	s := newTestServer(t)
	for i := range 5 {
		s.must(http.StatusCreated, "POST", "/fhir/Observation", "DEFAULT", orderObs("http://loinc.org", false, fmt.Sprintf("2026-01-0%dT10:00:00Z", i+1)))
	}
	e := newSearchEngine()
	for query, want := range map[string]bool{
		"_sort=-date":                          true,
		"code=8867-4&_sort=-date":              false, // 5 < orderPageMin
		"code=8867-4&status=final&_sort=-date": false,
		"code:text=heart&_sort=-date":          false,
		"code=8867-4":                          false, // by _lastUpdated, but 5 < orderPageMin
		"":                                     true,
	} {
		params, _ := url.ParseQuery(query)
		plan, err := e.plan("Observation", params, true)
		if err != nil {
			t.Fatal(err)
		}
		err = s.db.view("DEFAULT", func(p *ptx) error {
			_, ok, err := orderedPage(p, "Observation", plan, 2)
			if ok != want {
				t.Errorf("%s: ordered page %v, want %v", query, ok, want)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// placeAll returns the ids the search query places now (run), in order.
func placeAll(t *testing.T, db *DB, query string) []string {
	t.Helper()
	params, _ := url.ParseQuery(query)
	plan, err := newSearchEngine().plan("Observation", params, true)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	err = db.view("DEFAULT", func(p *ptx) error {
		all, err := run(p, "Observation", plan, nil)
		ids = all.bareAll()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// A search answered from the order index pins its pages lazily: they are
// what the search saw, whether they are asked for before any write, after
// writes (a new newest match, a deletion, a match moved to the front by a
// new date, each between pages), or never (a write places them anyway).
func TestLazyPagesStayStableWhileWriting(t *testing.T) {
	withOrderPageMin(t, 1)
	const query = "code=8867-4&_sort=-date"
	for _, mode := range []string{"no writes", "writes between pages", "write before the second page"} {
		t.Run(mode, func(t *testing.T) {
			s := newTestServer(t)
			rng := rand.New(rand.NewPCG(5, 8))
			var entries []map[string]any
			for i := range 60 {
				entries = append(entries, postEntry(fmt.Sprintf("urn:uuid:o%d", i), orderObs("http://loinc.org", false, fmt.Sprintf("2026-01-%02dT10:00:00Z", 1+rng.IntN(20)))))
			}
			s.must(http.StatusOK, "POST", "/fhir", "DEFAULT", txBundle("transaction", entries...))
			want := placeAll(t, s.db, query)
			writes := 0
			write := func() {
				writes++
				s.must(http.StatusCreated, "POST", "/fhir/Observation", "DEFAULT", orderObs("http://loinc.org", false, "2027-01-01T00:00:00Z"))
				if writes == 2 { // a match of a later page, gone
					s.must(http.StatusOK, "DELETE", "/fhir/Observation/"+want[len(want)-3], "DEFAULT", nil)
				}
				if writes == 3 { // the last match moves to the front
					moved := orderObs("http://loinc.org", false, "2028-01-01T00:00:00Z")
					moved["id"] = want[len(want)-1]
					s.must(http.StatusOK, "PUT", "/fhir/Observation/"+want[len(want)-1], "DEFAULT", moved)
				}
			}
			var between func()
			switch mode {
			case "writes between pages":
				between = write
			case "write before the second page":
				between = func() {
					if writes == 0 {
						write()
						s.db.snapshots.mu.Lock()
						n := len(s.db.snapshots.pending["DEFAULT"])
						s.db.snapshots.mu.Unlock()
						if n != 0 {
							t.Errorf("%d snapshots still pending after a write", n)
						}
					}
				}
			}
			got, total := pageAll(t, s, "/fhir/Observation?"+query+"&_count=7", "DEFAULT", 20, between)
			if total != float64(len(want)) {
				t.Fatalf("total %v, want %d", total, len(want))
			}
			var gotIDs []string
			for _, r := range got {
				gotIDs = append(gotIDs, str(r, "id"))
			}
			exp := want
			if writes >= 2 { // the deleted match keeps its place but is not shown
				exp = slices.Delete(slices.Clone(want), len(want)-3, len(want)-2)
			}
			if !slices.Equal(gotIDs, exp) {
				t.Fatalf("paged\n %v\nwant\n %v", gotIDs, exp)
			}
			// A fresh search sees the writes.
			if writes > 0 {
				b := s.must(http.StatusOK, "GET", "/fhir/Observation?"+query+"&_count=1", "DEFAULT", nil).JSON(t)
				if b["total"].(float64) == total && writes == 1 {
					t.Fatalf("a fresh search does not see the write: total %v", b["total"])
				}
			}
		})
	}
}

// A search whose read may have raced a write of its partition (one was in
// progress when it began, or began since) places its matches at once, in
// its own transaction; one that saw none leaves them pending, and a write
// places them in the background before it changes anything.
func TestLazySnapshotPlacedWhenAWriteMayHaveRaced(t *testing.T) {
	s := newTestServer(t)
	for i := range 3 {
		s.must(http.StatusCreated, "POST", "/fhir/Observation", "DEFAULT", orderObs("http://loinc.org", false, fmt.Sprintf("2026-01-0%dT10:00:00Z", i+1)))
	}
	want := placeAll(t, s.db, "_sort=-date")
	lazy := func(raced func(writes uint64, idle bool) (uint64, bool)) *searchSnapshot {
		t.Helper()
		writes, idle := s.db.writeState("DEFAULT")
		writes, idle = raced(writes, idle)
		snap := &searchSnapshot{Partition: "DEFAULT", Kind: snapshotSearch, Type: "Observation", Query: "_sort=-date",
			place: func(p *ptx) (refList, error) {
				params, _ := url.ParseQuery("_sort=-date")
				plan, err := newSearchEngine().plan("Observation", params, false)
				if err != nil {
					return refList{}, err
				}
				return run(p, "Observation", plan, nil)
			}}
		err := s.db.view("DEFAULT", func(p *ptx) error {
			_, err := s.db.saveLazySnapshot(p, snap, len(want), writes, idle)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return snap
	}
	placed := func(snap *searchSnapshot) bool {
		select {
		case <-snap.ready:
			return true
		default:
			return false
		}
	}
	for name, raced := range map[string]func(uint64, bool) (uint64, bool){
		"in progress": func(w uint64, _ bool) (uint64, bool) { return w, false },
		"began since": func(w uint64, idle bool) (uint64, bool) { return w - 1, idle },
	} {
		snap := lazy(raced)
		if !placed(snap) || !slices.Equal(snap.Refs.bareAll(), want) {
			t.Fatalf("%s: not placed at once: %v", name, snap.Refs.bareAll())
		}
	}
	quiet := lazy(func(w uint64, idle bool) (uint64, bool) { return w, idle })
	if placed(quiet) {
		t.Fatal("placed although no write raced")
	}
	s.must(http.StatusCreated, "POST", "/fhir/Observation", "DEFAULT", orderObs("http://loinc.org", false, "2027-01-01T00:00:00Z"))
	s.db.snapshots.mu.Lock()
	pending := len(s.db.snapshots.pending["DEFAULT"])
	s.db.snapshots.mu.Unlock()
	if pending != 0 {
		t.Fatalf("%d snapshots still pending after a write", pending)
	}
	<-quiet.ready
	if quiet.err != nil || !slices.Equal(quiet.Refs.bareAll(), want) {
		t.Fatalf("placed by the write: %v (%v), want %v", quiet.Refs.bareAll(), quiet.err, want)
	}
}

// Walking an index view backwards gives its keys (the bucket's, less
// those the log removes, plus those it adds) in descending order, from
// any key.
func TestBackKeysMergeTheLog(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "c.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rng := rand.New(rand.NewPCG(4, 1))
	key := func() string {
		return strings.Repeat(string(rune('a'+rng.IntN(4))), 1+rng.IntN(3)) + string(rune('a'+rng.IntN(5)))
	}
	for round := range 300 {
		err := db.Update(func(tx *bolt.Tx) error {
			_ = tx.DeleteBucket([]byte("b"))
			b, err := tx.CreateBucket([]byte("b"))
			if err != nil {
				return err
			}
			for range rng.IntN(20) {
				if err := b.Put([]byte(key()), nil); err != nil {
					return err
				}
			}
			log := map[string]bool{}
			for range rng.IntN(20) {
				log[key()] = rng.IntN(2) == 0
			}
			var ov []overlayEntry
			for _, k := range slices.Sorted(func(yield func(string) bool) {
				for k := range log {
					if !yield(k) {
						return
					}
				}
			}) {
				ov = append(ov, overlayEntry{[]byte(k), log[k]})
			}
			view := &indexView{b: b, ov: ov}
			if round%10 == 0 {
				view = &indexView{ov: ov}
			}
			var all []string // forward, as indexCursor gives them
			c := view.cursor()
			for k := c.Seek(nil); k != nil; k = c.Next() {
				all = append(all, string(k))
			}
			for range 10 {
				before := key()[:1+rng.IntN(2)]
				if rng.IntN(5) == 0 {
					before = "zzzz"
				}
				var got []string
				bk := newBackKeys(view)
				for k := bk.Before([]byte(before)); k != nil; k = bk.Prev() {
					got = append(got, string(k))
				}
				i, _ := slices.BinarySearch(all, before)
				want := slices.Clone(all[:i])
				slices.Reverse(want)
				if !slices.Equal(got, want) {
					t.Fatalf("round %d: before %q: got %q, want %q", round, before, got, want)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// The same search run again while its snapshot is pending (nothing was
// written since) shares it: one placement for both, and either's pages
// stay what both saw when the older one is dropped and a write comes.
func TestRepeatedSearchSharesItsPendingSnapshot(t *testing.T) {
	s := newTestServer(t)
	for i := range 6 {
		s.must(http.StatusCreated, "POST", "/fhir/Observation", "DEFAULT", orderObs("http://loinc.org", false, fmt.Sprintf("2026-01-0%dT10:00:00Z", i+1)))
	}
	want := placeAll(t, s.db, "_sort=-date")
	pending := func() int {
		s.db.snapshots.mu.Lock()
		defer s.db.snapshots.mu.Unlock()
		return len(s.db.snapshots.pending["DEFAULT"])
	}
	first := s.must(http.StatusOK, "GET", "/fhir/Observation?_sort=-date&_count=2", "DEFAULT", nil).JSON(t)
	second := s.must(http.StatusOK, "GET", "/fhir/Observation?_sort=-date&_count=2", "DEFAULT", nil).JSON(t)
	other := s.must(http.StatusOK, "GET", "/fhir/Observation?_sort=date&_count=2", "DEFAULT", nil).JSON(t)
	if n := pending(); n != 2 {
		t.Fatalf("%d snapshots pending, want 2 (the repeated search shares one)", n)
	}
	// Only the newest search's snapshot fits: the older id goes, the
	// snapshot it shares stays pending for the newer one.
	defer func(n int) { maxSnapshotRefs = n }(maxSnapshotRefs)
	maxSnapshotRefs = len(want)
	s.must(http.StatusOK, "GET", "/fhir/Observation?_sort=-date&_count=2", "DEFAULT", nil)
	expectOutcome(t, s.do("GET", linkOf(t, s, first, "next"), "DEFAULT", nil), http.StatusGone, "does not exist")
	expectOutcome(t, s.do("GET", linkOf(t, s, other, "next"), "DEFAULT", nil), http.StatusGone, "does not exist")
	if n := pending(); n != 1 {
		t.Fatalf("%d snapshots pending, want 1", n)
	}
	_ = second
	maxSnapshotRefs = 10 * len(want)
	third := s.must(http.StatusOK, "GET", "/fhir/Observation?_sort=-date&_count=2", "DEFAULT", nil).JSON(t)
	s.must(http.StatusCreated, "POST", "/fhir/Observation", "DEFAULT", orderObs("http://loinc.org", false, "2027-01-01T00:00:00Z"))
	got, total := pageAll(t, s, linkOf(t, s, third, "next"), "DEFAULT", 10, nil)
	var ids []string
	for _, r := range got {
		ids = append(ids, str(r, "id"))
	}
	if total != float64(len(want)) || !slices.Equal(ids, want[2:]) {
		t.Fatalf("pages after a write: %v (total %v), want %v", ids, total, want[2:])
	}
}

// bbolt (1.5) merges and splits nodes only when a write transaction
// commits: a leaf whose keys a delete removed stays in the tree, empty,
// until then, and Cursor.Prev stops at it (returns nil) where Next steps
// over it. A reverse walk of the index inside the transaction that
// removed a leaf's worth of keys must still read every key before them:
// here 600 resources of one date (~10 leaves of each order index) are
// deleted between 300 of an earlier and 300 of a later date, and the
// sorted first pages are read backwards in the same transaction.
//
// No write path of the store reads the order index backwards today (a
// Bundle's GET entries place their matches with run, which reads forward;
// orderedPage runs in read transactions, which see committed, rebalanced
// trees): the Bundle at the end checks that path too.
func TestReverseWalkAfterDeletesInWriteTx(t *testing.T) {
	withOrderPageMin(t, 1)
	s := newTestServer(t)
	var entries []map[string]any
	for day, n := range []int{300, 600, 300} {
		for i := range n {
			entries = append(entries, postEntry(fmt.Sprintf("urn:uuid:d%d-%d", day, i),
				orderObs("http://loinc.org", i%3 == 0, fmt.Sprintf("2026-01-0%dT10:00:00Z", day+1))))
		}
	}
	s.must(http.StatusOK, "POST", "/fhir", "DEFAULT", txBundle("transaction", entries...))
	byDate := placeAll(t, s.db, "_sort=date")
	if len(byDate) != 1200 {
		t.Fatalf("%d Observations placed, want 1200", len(byDate))
	}
	middle := byDate[300:900] // the second day's, in id order
	queries := []string{
		"_sort=-date", "_sort=-_lastUpdated", "code=8867-4&_sort=-date",
		"code=http://loinc.org|8867-4&_sort=-date", "_sort=date",
	}
	e := newSearchEngine()
	errRollback := errors.New("rolled back")
	err := s.db.update("DEFAULT", func(p *ptx) error {
		for _, id := range middle {
			prev, err := p.current("Observation", id)
			if err != nil {
				return err
			}
			if _, err := p.write("Observation", id, nil, prev); err != nil {
				return err
			}
		}
		if err := p.flushIndex(); err != nil {
			return err
		}
		if p.part.Bucket(bucketIndexLog) != nil {
			t.Fatal("the deletions went to the index log, not into the index")
		}
		for _, query := range queries {
			params, _ := url.ParseQuery(query)
			plan, err := e.plan("Observation", params, true)
			if err != nil {
				return err
			}
			all, scanned, err := placedBothWays(p, plan)
			if err != nil {
				return err
			}
			if all.Len() != 600 || !slices.Equal(all.bareAll(), scanned.bareAll()) {
				t.Fatalf("%s: the index places %d, the scan %d (or another order)", query, all.Len(), scanned.Len())
			}
			for _, want := range []int{1, 299, 300, 301, 600, 700} {
				page, ok, err := orderedPage(p, "Observation", plan, want)
				if err != nil {
					return err
				}
				if !ok {
					t.Fatalf("%s: want %d: no ordered page", query, want)
				}
				if page.total != 600 {
					t.Errorf("%s: want %d: total %d, want 600", query, want, page.total)
				}
				if exp := all.bareAll()[:min(want, 600)]; !slices.Equal(page.ids, exp) {
					t.Errorf("%s: want %d: %d ids read backwards, want %d (first differing at %d)",
						query, want, len(page.ids), len(exp), firstDiff(page.ids, exp))
				}
			}
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatal(err)
	}

	// The same deletions and sorted searches as one transaction Bundle.
	entries = entries[:0]
	for _, id := range middle {
		entries = append(entries, map[string]any{"request": map[string]any{"method": "DELETE", "url": "Observation/" + id}})
	}
	for _, query := range queries {
		entries = append(entries, map[string]any{"request": map[string]any{"method": "GET", "url": "Observation?" + query + "&_count=1000"}})
	}
	out := s.must(http.StatusOK, "POST", "/fhir", "DEFAULT", txBundle("transaction", entries...)).JSON(t)
	got := out["entry"].([]any)[len(middle):]
	after := placeAll(t, s.db, "_sort=date")
	for i, query := range queries {
		b := got[i].(map[string]any)["resource"].(map[string]any)
		var ids []string
		for _, m := range b["entry"].([]any) {
			ids = append(ids, str(m, "resource", "id"))
		}
		want := placeAll(t, s.db, query)
		if total := b["total"].(float64); total != 600 || !slices.Equal(ids, want) {
			t.Errorf("Bundle GET %s: total %v, %d ids, want 600 in the order a search gives after the commit", query, total, len(ids))
		}
	}
	if len(after) != 600 {
		t.Fatalf("%d left after the Bundle, want 600", len(after))
	}
}

// firstDiff is the first index where a and b differ (-1: none).
func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}
