package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/pfrgateway/caddy-pfr/fhir/search"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// withLogBounds sets the index log's bounds for one test.
func withLogBounds(t *testing.T, commit, keys int) {
	t.Helper()
	c, k := maxLogCommit, maxLogKeys
	maxLogCommit, maxLogKeys = commit, keys
	t.Cleanup(func() { maxLogCommit, maxLogKeys = c, k })
}

// logState counts the records of the index log and the keys of the
// Observation index of the default partition.
func logState(t *testing.T, db *DB) (records, indexed int) {
	t.Helper()
	err := db.view(defaultPartitionKey, func(p *ptx) error {
		if lb := p.part.Bucket(bucketIndexLog); lb != nil {
			records = lb.Stats().KeyN
		}
		if b := p.part.Bucket(bucketIndex); b != nil {
			if tb := b.Bucket([]byte("Observation")); tb != nil {
				indexed = tb.Stats().KeyN
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return records, indexed
}

// Whether a commit's index changes go to the index log, into the indexes,
// or merge the log into them, every search answers what a scan answers:
// the same generated data and queries as TestIndexAgreesWithScan, written
// as one large commit, then many small ones (updates of the first
// resources, deletions; searched in between), with every change logged, with the log merged
// every few commits, and with no log; and with the keys placed by value
// kept in the delta (the default bound) or the delta merged every few
// commits.
func TestIndexLogAgreesWithScan(t *testing.T) {
	for _, c := range []struct {
		name         string
		commit, keys int
		delta        int // maxDeltaKeys, 0: as is
	}{
		{"logged", 1 << 30, 1 << 30, 0},
		{"merged", 200, 1500, 0},
		{"direct", -1, 0, 0},
		{"merged, delta merged", 200, 1500, 30},
		{"direct, delta merged", -1, 0, 80},
	} {
		t.Run(c.name, func(t *testing.T) {
			withLogBounds(t, c.commit, c.keys)
			if c.delta > 0 {
				withDeltaBound(t, c.delta)
			}
			db := openSteppingDB(t)
			rng := rand.New(rand.NewPCG(14, 4))
			ixData(t, db, rng, 100)
			// Searches between the commits read the log as it grows
			// and is merged (the overlay cache follows it).
			between := ixQueries(rand.New(rand.NewPCG(1, 1)), 10)
			for i := range 40 {
				ixData(t, db, rng, 1+rng.IntN(6)) // rewrites the first ones
				if i%3 == 0 {
					ixCompare(t, db, between)
				}
			}
			for i := 0; i < 100; i += 7 {
				err := db.update(defaultPartitionKey, func(p *ptx) error {
					prev, err := p.current("Observation", fmt.Sprintf("o%d", i))
					if err != nil {
						return err
					}
					_, err = p.write("Observation", fmt.Sprintf("o%d", i), nil, prev)
					return err
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			records, indexed := logState(t, db)
			switch strings.Split(c.name, ",")[0] {
			case "logged":
				if records == 0 || indexed != 0 {
					t.Fatalf("every change should be in the log: %d records, %d keys indexed", records, indexed)
				}
			case "merged":
				if records == 0 || indexed == 0 {
					t.Fatalf("want changes both in the log and merged: %d records, %d keys indexed", records, indexed)
				}
			case "direct":
				if records != 0 || indexed == 0 {
					t.Fatalf("want no log: %d records, %d keys indexed", records, indexed)
				}
			}
			if c.delta > 0 {
				placed := search.ValuePlaced("Observation")
				index, delta, _ := deltaState(t, db)
				if len(delta) == 0 || !slices.ContainsFunc(index, func(k string) bool { return k[0] > 0 && placed[k[0]-1] }) {
					t.Fatalf("want keys placed by value both merged and in the delta: %d in the delta", len(delta))
				}
			}
			queries := ixQueries(rng, 400)
			indexedQ, vouched, hits := ixCompare(t, db, queries)
			if indexedQ < len(queries)/2 || vouched == 0 || hits < len(queries)/2 {
				t.Fatalf("the queries do not exercise the index: %d of %d indexed, %d vouched, %d hits", indexedQ, len(queries), vouched, hits)
			}
		})
	}
}

// indexCursor shows the index bucket's keys with the log's changes over
// them: checked against a set of keys, from random places.
func TestIndexCursorMergesTheLog(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "c.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rng := rand.New(rand.NewPCG(3, 9))
	key := func() string { // a few letters: main and log share many keys
		return strings.Repeat(string(rune('a'+rng.IntN(4))), 1+rng.IntN(3)) + string(rune('a'+rng.IntN(5)))
	}
	for round := range 300 {
		want := map[string]bool{}
		err := db.Update(func(tx *bolt.Tx) error {
			_ = tx.DeleteBucket([]byte("b"))
			b, err := tx.CreateBucket([]byte("b"))
			if err != nil {
				return err
			}
			for range rng.IntN(20) {
				k := key()
				want[k] = true
				if err := b.Put([]byte(k), nil); err != nil {
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
				if log[k] {
					want[k] = true
				} else {
					delete(want, k)
				}
			}
			views := []*indexView{{b: b, ov: ov}}
			if round%10 == 0 { // no index bucket yet: the log alone
				want = map[string]bool{}
				for _, e := range ov {
					if e.present {
						want[string(e.key)] = true
					}
				}
				views = []*indexView{{ov: ov}}
			}
			sorted := slices.Sorted(func(yield func(string) bool) {
				for k := range want {
					if !yield(k) {
						return
					}
				}
			})
			for range 10 {
				from := key()[:1+rng.IntN(2)]
				if rng.IntN(5) == 0 {
					from = ""
				}
				var got []string
				c := views[0].cursor()
				for k := c.Seek([]byte(from)); k != nil; k = c.Next() {
					got = append(got, string(k))
				}
				i, _ := slices.BinarySearch(sorted, from)
				if !slices.Equal(got, sorted[i:]) {
					t.Fatalf("round %d: from %q: got %q, want %q (log %v)", round, from, got, sorted[i:], log)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// A log record round-trips, and a damaged one is an error, not a panic.
func TestLogRecord(t *testing.T) {
	m := map[string]bool{"a\x00x": true, "b\x00y": false, string(bytes.Repeat([]byte{'k'}, 300)) + "\x00z": true}
	v := encodeLogRecord(m)
	got := map[string]bool{}
	if err := decodeLogRecord(v, func(k []byte, present bool) { got[string(k)] = present }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(m) {
		t.Fatalf("got %v, want %v", got, m)
	}
	for i := range len(v) {
		_ = decodeLogRecord(v[:i], func([]byte, bool) {})
		if decodeLogRecord(v[:i], func([]byte, bool) {}) == nil {
			t.Errorf("a record cut at %d of %d decodes", i, len(v))
		}
	}
	if k := logKey("Observation", 7); func() string { s, _ := typeOfLogKey(k); return s }() != "Observation" {
		t.Errorf("typeOfLogKey(%q)", k)
	}
}

// A file indexed by a store without the index log (the meta bucket holds
// only search.IndexVersion()) is indexed again at Open, and a log left
// by another layout is dropped with the indexes.
func TestIndexRebuiltForLogLayout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	db, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	ixData(t, db, rng, 50)
	queries := ixQueries(rng, 40)
	err = db.bolt.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(partitionBucketName(defaultPartitionKey))
		// A stale log record that would remove every Observation's
		// status key if it were read.
		lb, err := b.CreateBucketIfNotExists(bucketIndexLog)
		if err != nil {
			return err
		}
		tag, _ := search.IndexTag("Observation", "status")
		stale := map[string]bool{}
		for i := range 50 {
			for _, st := range []string{"final", "amended", "preliminary"} {
				stale[string(indexKey(tag, []byte("c"+st+"\x01*"), fmt.Sprintf("o%d", i)))] = false
			}
		}
		if err := lb.Put(logKey("Observation", 1), encodeLogRecord(stale)); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(metaIndexVersion, []byte(search.IndexVersion()))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, joined := openLogged(t, path)
	defer db.Close()
	if !strings.Contains(joined, "building search indexes of") || !strings.Contains(joined, indexVersion()) {
		t.Fatalf("not indexed again:\n%s", joined)
	}
	if records, _ := logState(t, db); records != 0 {
		t.Fatalf("the old log is still there (%d records)", records)
	}
	queries = append(queries, struct{ typ, query string }{"Observation", "status=final"}, struct{ typ, query string }{"Observation", "status=amended,preliminary"})
	if _, _, hits := ixCompare(t, db, queries); hits == 0 {
		t.Fatal("no hits")
	}
}

// A write's index keys come from the resource it holds (searchForm), not
// from decoding the JSON it stored: that is the same tree decoding gives,
// on every resource of the Synthea Bundles and the real-world IPS
// documents as the door parses them; and what would not round-trip the
// same is left to decoding.
func TestSearchFormIsTheDecodedJSON(t *testing.T) {
	bundles := testkit.Synthea(t)
	ips, _ := filepath.Glob(testkit.FHIRPath(t, "realworld/ips/*.json"))
	for _, f := range ips {
		bundles[f] = testkit.ReadFile(t, f)
	}
	n := 0
	for name, raw := range bundles {
		doc, err := parseResource(raw)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		entries, _ := doc["entry"].([]any)
		for _, e := range entries {
			res, ok := e.(map[string]any)["resource"].(map[string]any)
			if !ok {
				continue
			}
			resource(res).stamp("x1", 3, time.Date(2026, 12, 4, 5, 0, 0, 0, time.UTC))
			body, err := encodeResource(res)
			if err != nil {
				t.Fatal(err)
			}
			want, err := decodeForSearch(body)
			if err != nil {
				t.Fatal(err)
			}
			got, ok := searchForm(res)
			if !ok || !reflect.DeepEqual(got, any(want)) {
				t.Fatalf("%s %s: searchForm gives %v (%v), decoding %v", name, res["resourceType"], got, ok, want)
			}
			// It shares what needs no change with res, and leaves res
			// as it was.
			if again, _ := encodeResource(res); !bytes.Equal(again, body) {
				t.Fatalf("%s %s: searchForm changed the resource", name, res["resourceType"])
			}
			typ := res["resourceType"].(string)
			if a, b := entriesOfResource(typ, res, body), entriesOf(typ, body); !reflect.DeepEqual(a, b) {
				t.Fatalf("%s %s: entries %v, from the JSON %v", name, typ, a, b)
			}
			n++
		}
	}
	if n < 500 {
		t.Fatalf("only %d resources", n)
	}
	for _, v := range []any{
		"caf\xe9", map[string]any{"a\xff": "x"}, json.Number("1e400"), []any{json.Number("-1e999")},
		1, int64(2), map[string]string{}, math.Inf(1), []byte("x"),
	} {
		if _, ok := searchForm(map[string]any{"resourceType": "Basic", "v": v}); ok {
			t.Errorf("searchForm takes %#v", v)
		}
	}
	// What it leaves to decoding is indexed as decoding gives it (an
	// invalid byte as U+FFFD).
	res := map[string]any{"resourceType": "Patient", "name": []any{map[string]any{"family": "M\xfcller"}}}
	body, _ := encodeResource(res)
	if a, b := entriesOfResource("Patient", res, body), entriesOf("Patient", body); !reflect.DeepEqual(a, b) || len(a) == 0 {
		t.Fatalf("entries %v, from the JSON %v", a, b)
	}
}
