package dopu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/pfrgateway/caddy-pfr/internal/kv"
	"github.com/pfrgateway/caddy-pfr/internal/pgstate"
	"github.com/pfrgateway/caddy-pfr/internal/pgtest"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"

	"github.com/pfrgateway/caddy-pfr/egress"
	"github.com/pfrgateway/caddy-pfr/fhir"
)

// fixture is a Service on bbolt, or on PostgreSQL when the package runs
// under pgtest.RerunOnPostgres.
type fixture struct {
	t     testing.TB
	path  string    // bbolt only
	db    *bbolt.DB // bbolt only
	dsn   string    // PostgreSQL only
	kv    kv.DB
	svc   *Service
	clock *testkit.Clock
}

// newFixture returns a Service on a fresh database; opts.Now is the
// fixture's clock unless set.
func newFixture(t testing.TB, limits Limits, opts Options) *fixture {
	t.Helper()
	f := &fixture{t: t, clock: testkit.NewClock()}
	if pgtest.OnPostgres() {
		f.dsn = pgtest.DSN(t)
	} else {
		f.path = filepath.Join(t.TempDir(), "pfr.db")
	}
	f.open(limits, opts)
	return f
}

// open opens the database and a Service on it.
func (f *fixture) open(limits Limits, opts Options) {
	f.t.Helper()
	if opts.Now == nil {
		opts.Now = f.clock.Now
	}
	opts = withTestEgress(opts)
	if f.dsn != "" {
		db := pgtest.OpenState(f.t, f.dsn)
		f.kv = db
		store, err := NewStore(db)
		if err != nil {
			f.t.Fatal(err)
		}
		f.svc = NewWithStore(store, limits, opts)
		return
	}
	db := testkit.OpenBolt(f.t, f.path)
	f.t.Cleanup(func() { db.Close() })
	f.db, f.kv = db, kv.Bolt(db)
	svc, err := New(db, limits, opts)
	if err != nil {
		f.t.Fatal(err)
	}
	f.svc = svc
}

// reopen closes the database and opens a new Service on it, as after a
// restart.
func (f *fixture) reopen(limits Limits, opts Options) {
	f.t.Helper()
	if f.db != nil {
		if err := f.db.Close(); err != nil {
			f.t.Fatal(err)
		}
	} else {
		f.kv.(*pgstate.DB).Close()
	}
	f.open(limits, opts)
}

// boltOnly skips a test about bbolt itself on PostgreSQL.
func (f *fixture) boltOnly() {
	f.t.Helper()
	if f.db == nil {
		f.t.Skip("about bbolt")
	}
}

const ipsPath = "documents/IPS_IG-bundle-01.json"

func (f *fixture) drop(record string, body []byte, ip string) (*Receipt, error) {
	return f.svc.Intake(context.Background(), record, fhir.ContentType, "", bytes.NewReader(body), Sender{IP: ip, UserAgent: "test"})
}

func (f *fixture) mustDrop(record string, body []byte, ip string) *Receipt {
	f.t.Helper()
	r, err := f.drop(record, body, ip)
	if err != nil {
		f.t.Fatalf("intake: %v", err)
	}
	return r
}

// keyCount counts the keys in every dopu bucket.
func keyCount(t *testing.T, db kv.DB) map[string]int {
	t.Helper()
	out := map[string]int{}
	err := db.View(context.Background(), "test", func(tx kv.Tx) error {
		for _, name := range BoltBuckets {
			n := 0
			if err := tx.Bucket(name).ForEach(func(k, v []byte) error { n++; return nil }); err != nil {
				return err
			}
			out[string(name)] = n
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func assertEmpty(t *testing.T, f *fixture, record string) {
	t.Helper()
	for name, n := range keyCount(t, f.kv) {
		if n != 0 {
			t.Errorf("bucket %s holds %d keys, want none", name, n)
		}
	}
	list, err := f.svc.List(context.Background(), record)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 0 {
		t.Errorf("List returned %d drop-offs, want none", len(list))
	}
}

// wantFHIRError asserts err is a *fhir.Error with status and a diagnostic
// containing substr.
func wantFHIRError(t *testing.T, err error, status int, substr string) *fhir.Error {
	t.Helper()
	var fe *fhir.Error
	if !errors.As(err, &fe) {
		t.Fatalf("error %v (%T), want *fhir.Error %d", err, err, status)
	}
	if fe.Status != status {
		t.Errorf("status %d, want %d (%v)", fe.Status, status, fe)
	}
	outcome, _ := json.Marshal(fe.Outcome())
	if !bytes.Contains(outcome, []byte(substr)) {
		t.Errorf("OperationOutcome %s does not mention %q", outcome, substr)
	}
	if fe.Status == http.StatusTooManyRequests && fe.Header.Get("Retry-After") == "" {
		t.Errorf("429 without Retry-After")
	}
	return fe
}

// bundleJSON builds a Bundle of the given type around resources.
func bundleJSON(t testing.TB, typ string, resources ...map[string]any) []byte {
	var entries []any
	for i, r := range resources {
		e := map[string]any{"fullUrl": fmt.Sprintf("urn:uuid:00000000-0000-4000-8000-%012d", i), "resource": r}
		if typ == "transaction" || typ == "batch" {
			e["request"] = map[string]any{"method": "POST", "url": r["resourceType"]}
		}
		entries = append(entries, e)
	}
	data, err := json.Marshal(map[string]any{"resourceType": "Bundle", "type": typ, "entry": entries})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func patient(family, given, birth, gender string) map[string]any {
	return map[string]any{
		"resourceType": "Patient",
		"name":         []any{map[string]any{"family": family, "given": []any{given}}},
		"birthDate":    birth,
		"gender":       gender,
	}
}

// withTestEgress lets the receivers of the tests, on 127.0.0.1, be
// reached, as an operator's `webhook_allow 127.0.0.1/32` would, unless the
// test sets its own policy.
func withTestEgress(opts Options) Options {
	if opts.Egress == nil && opts.HTTPClient == nil {
		opts.Egress = &egress.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}
	}
	return opts
}

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// TestPostgres runs this package's tests again on PostgreSQL: one suite,
// both implementations of Store.
func TestPostgres(t *testing.T) { pgtest.RerunOnPostgres(t) }
