package audit

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/pfrgateway/caddy-pfr/internal/kv"
	"github.com/pfrgateway/caddy-pfr/internal/pgstate"
	"github.com/pfrgateway/caddy-pfr/internal/pgtest"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// fixture is a Log on bbolt, or on PostgreSQL when the package runs under
// pgtest.RerunOnPostgres.
type fixture struct {
	t     testing.TB
	path  string    // bbolt only
	db    *bbolt.DB // bbolt only
	dsn   string    // PostgreSQL only
	kv    kv.DB
	log   *Log
	clock *testkit.Clock
}

// newFixture returns a Log on a fresh database; opts.Now is the fixture's
// clock unless set.
func newFixture(t testing.TB, opts Options) *fixture {
	t.Helper()
	f := &fixture{t: t, clock: testkit.NewClock()}
	if opts.Now == nil {
		opts.Now = f.clock.Now
	}
	if pgtest.OnPostgres() {
		f.dsn = pgtest.DSN(t)
		f.kv = pgtest.OpenState(t, f.dsn)
	} else {
		f.path = filepath.Join(t.TempDir(), "pfr.db")
		f.db = testkit.OpenBolt(t, f.path)
		t.Cleanup(func() { f.db.Close() })
		f.kv = kv.Bolt(f.db)
	}
	store, err := NewStore(f.kv)
	if err != nil {
		t.Fatalf("NewStore: %v", err)
	}
	l, err := NewWithStore(store, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	f.log = l
	return f
}

// reopen closes the database and returns a new store on it, as after a
// restart.
func (f *fixture) reopen() Store {
	f.t.Helper()
	var db kv.DB
	if f.db != nil {
		if err := f.db.Close(); err != nil {
			f.t.Fatal(err)
		}
		bdb := testkit.OpenBolt(f.t, f.path)
		f.t.Cleanup(func() { bdb.Close() })
		db = kv.Bolt(bdb)
	} else {
		f.kv.(*pgstate.DB).Close()
		db = pgtest.OpenState(f.t, f.dsn)
	}
	s, err := NewStore(db)
	if err != nil {
		f.t.Fatal(err)
	}
	return s
}

// closeDB closes the database under the log.
func (f *fixture) closeDB() {
	f.t.Helper()
	if f.db != nil {
		if err := f.db.Close(); err != nil {
			f.t.Fatal(err)
		}
		return
	}
	f.kv.(*pgstate.DB).Close()
}

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// TestPostgres runs this package's tests again on PostgreSQL: one suite,
// both implementations of Store.
func TestPostgres(t *testing.T) { pgtest.RerunOnPostgres(t) }

func (f *fixture) flush() {
	f.t.Helper()
	if err := f.log.Flush(context.Background()); err != nil {
		f.t.Fatalf("Flush: %v", err)
	}
}

// events returns the AuditEvents of recordID's Bundle (default count).
func (f *fixture) events(recordID string) []map[string]any {
	f.t.Helper()
	return entriesOf(f.t, f.bundle(recordID, time.Time{}, 0))
}

func (f *fixture) bundle(recordID string, since time.Time, count int) map[string]any {
	f.t.Helper()
	b, err := f.log.Bundle(context.Background(), recordID, since, count)
	if err != nil {
		f.t.Fatalf("Bundle(%s): %v", recordID, err)
	}
	return b
}

// entriesOf checks the Bundle's own shape and returns its resources.
func entriesOf(t testing.TB, b map[string]any) []map[string]any {
	t.Helper()
	if b["resourceType"] != "Bundle" || b["type"] != "searchset" {
		t.Fatalf("not a searchset Bundle: %v", b)
	}
	raw, ok := b["entry"]
	if !ok {
		return nil
	}
	entries := raw.([]any)
	if len(entries) == 0 {
		t.Fatalf("empty entry array (FHIR forbids it)")
	}
	out := make([]map[string]any, len(entries))
	for i, e := range entries {
		entry := e.(map[string]any)
		if entry["search"].(map[string]any)["mode"] != "match" {
			t.Errorf("entry %d: search.mode %v", i, entry["search"])
		}
		out[i] = entry["resource"].(map[string]any)
	}
	return out
}

var fhirID = regexp.MustCompile(`^[A-Za-z0-9\-.]{1,64}$`)

// checkAuditEvent fails unless ae has the required elements of an R4
// AuditEvent as this package writes them, and returns its recorded time.
func checkAuditEvent(t testing.TB, ae map[string]any) time.Time {
	t.Helper()
	if ae["resourceType"] != "AuditEvent" {
		t.Fatalf("resourceType %v", ae["resourceType"])
	}
	if id, _ := ae["id"].(string); !fhirID.MatchString(id) {
		t.Errorf("id %q is not a FHIR id", id)
	}
	typ, _ := ae["type"].(map[string]any)
	if typ["system"] != "http://terminology.hl7.org/CodeSystem/audit-event-type" || typ["code"] != "rest" {
		t.Errorf("type %v", ae["type"])
	}
	if a, _ := ae["action"].(string); !actions[a] {
		t.Errorf("action %v", ae["action"])
	}
	rec, _ := ae["recorded"].(string)
	recorded, err := time.Parse(time.RFC3339Nano, rec)
	if err != nil {
		t.Errorf("recorded %q: %v", rec, err)
	}
	agents, _ := ae["agent"].([]any)
	if len(agents) == 0 {
		t.Fatalf("no agent")
	}
	if agents[0].(map[string]any)["requestor"] != true {
		t.Errorf("agent[0].requestor %v", agents[0])
	}
	src, _ := ae["source"].(map[string]any)
	obs, _ := src["observer"].(map[string]any)
	if obs["display"] != "caddy-pfr" {
		t.Errorf("source %v", ae["source"])
	}
	return recorded
}

// path returns the value at a path of map keys and array indexes.
func path(v any, keys ...any) any {
	for _, k := range keys {
		switch k := k.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			a, ok := v.([]any)
			if !ok || k >= len(a) {
				return nil
			}
			v = a[k]
		}
	}
	return v
}

// keyCount returns how many keys a bucket holds.
func keyCount(t testing.TB, db kv.DB, bucket []byte) int {
	t.Helper()
	n := 0
	if err := db.View(context.Background(), "test", func(tx kv.Tx) error {
		n = countKeys(tx.Bucket(bucket))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func countKeys(b kv.Bucket) int {
	n := 0
	_ = b.ForEach(func(k, v []byte) error { n++; return nil })
	return n
}

// storedEvents returns how many events the log holds, in all segments.
func storedEvents(t testing.TB, db kv.DB) int {
	t.Helper()
	n := 0
	if err := db.View(context.Background(), "test", func(tx kv.Tx) error {
		return tx.Bucket(bucketEvents).ForEach(func(k, v []byte) error {
			evs, err := readSegment(nil, k[len(k)-stampLen:], v)
			n += len(evs)
			return err
		})
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// checkCounts fails unless the stored counts, the segments and the time
// index agree: every segment holds events in stamp order under its newest
// stamp, is indexed by its oldest, and comes after the record's segments
// before it.
func checkCounts(t testing.TB, db kv.DB) {
	t.Helper()
	if err := db.View(context.Background(), "test", func(tx kv.Tx) error {
		actual := map[string]uint64{}
		newest := map[string][]byte{}
		segments := 0
		err := tx.Bucket(bucketEvents).ForEach(func(k, v []byte) error {
			rec, key := string(k[:len(k)-stampLen-1]), k[len(k)-stampLen:]
			evs, err := readSegment(nil, key, v)
			if err != nil || len(evs) == 0 {
				t.Errorf("segment %x of %s: %d events, %v", key, rec, len(evs), err)
				return nil
			}
			segments++
			actual[rec] += uint64(len(evs))
			for i := 1; i < len(evs); i++ {
				if bytes.Compare(evs[i-1].stamp, evs[i].stamp) >= 0 {
					t.Errorf("segment %x of %s: events out of order", key, rec)
				}
			}
			if !bytes.Equal(evs[len(evs)-1].stamp, key) {
				t.Errorf("segment %x of %s: newest event %x", key, rec, evs[len(evs)-1].stamp)
			}
			if prev := newest[rec]; prev != nil && bytes.Compare(prev, evs[0].stamp) >= 0 {
				t.Errorf("segment %x of %s overlaps the one before (newest %x)", key, rec, prev)
			}
			newest[rec] = bytes.Clone(key)
			ref, err := parseByTime(evs[0].stamp, tx.Bucket(bucketByTime).Get(evs[0].stamp))
			if err != nil || ref.recordID != rec || !bytes.Equal(ref.newest, key) {
				t.Errorf("segment %x of %s indexed as %+v, %v", key, rec, ref, err)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if n := countKeys(tx.Bucket(bucketByTime)); n != segments {
			t.Errorf("%d index entries for %d segments", n, segments)
		}
		stored := map[string]uint64{}
		_ = tx.Bucket(bucketCounts).ForEach(func(k, _ []byte) error {
			stored[string(k)] = boltTx{tx}.count(string(k))
			return nil
		})
		if fmt.Sprint(stored) != fmt.Sprint(actual) {
			t.Errorf("stored counts %v, actual %v", stored, actual)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
