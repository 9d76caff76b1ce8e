package dopu

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"testing"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
	"github.com/pfrgateway/caddy-pfr/store"
)

// TestImportIntoEmbeddedStore runs prepared pick-ups against the project's
// embedded FHIR store: each transaction is accepted whole, every
// Observation is then found through the record's Patient, and the
// drop-off's tag finds what was imported (what a retried pick-up checks).
func TestImportIntoEmbeddedStore(t *testing.T) {
	db, err := store.Open(filepath.Join(t.TempDir(), "store.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	h, err := store.NewHandler(db, store.Config{})
	if err != nil {
		t.Fatal(err)
	}
	call := func(method, path string, body any) (int, map[string]any) {
		t.Helper()
		var data []byte
		switch b := body.(type) {
		case []byte:
			data = b
		case nil:
		default:
			data = []byte(testkit.JSONString(t, b))
		}
		req := httptest.NewRequest(method, path, bytes.NewReader(data))
		req.Header.Set("Content-Type", "application/fhir+json")
		req.Header.Set("X-Request-Partition-IDs", "DEFAULT")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		var out map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
			t.Fatalf("%s %s: %d %s", method, path, w.Code, w.Body)
		}
		return w.Code, out
	}
	// The record's search, as the gateway gives it: the record's
	// partition of the store, every page.
	search := func(typ string, params url.Values) ([]map[string]any, error) {
		params = maps.Clone(params)
		params.Set("_count", "1000")
		code, out := call(http.MethodGet, "/fhir/"+typ+"?"+params.Encode(), nil)
		if code != http.StatusOK {
			return nil, fmt.Errorf("search %s?%s: %d %v", typ, params.Encode(), code, out)
		}
		var found []map[string]any
		entries, _ := out["entry"].([]any)
		for _, e := range entries {
			found = append(found, e.(map[string]any)["resource"].(map[string]any))
		}
		if out["link"] != nil && len(entries) == 1000 {
			return nil, fmt.Errorf("more than one page")
		}
		return found, nil
	}
	type testCase struct {
		path         string
		patient      map[string]any
		observations int
	}
	cases := []testCase{
		{ipsPath, martha, 7},
		{father, patient("Everywoman1", "Eve", "1955-01-06", "female"), 1},
	}
	// Every Synthea Bundle, for the person it describes.
	for _, file := range testkit.SyntheaPaths(t) {
		path, _ := filepath.Rel(testkit.FHIRPath(t, ""), file)
		var b decodedBundle
		if err := json.Unmarshal(testkit.ReadFHIR(t, path), &b); err != nil {
			t.Fatal(err)
		}
		c := testCase{path: path, patient: b.Entry[0].Resource}
		for _, e := range b.Entry {
			if e.Resource["resourceType"] == "Observation" {
				c.observations++
			}
		}
		cases = append(cases, c)
	}
	if len(cases) != 8 {
		t.Fatalf("%d cases, want the 2 documents and 6 Synthea Bundles", len(cases))
	}
	for _, c := range cases {
		t.Run(c.path, func(t *testing.T) {
			pat := map[string]any{}
			for k, v := range c.patient {
				if k != "id" {
					pat[k] = v
				}
			}
			code, created := call(http.MethodPost, "/fhir/Patient", pat)
			id, _ := created["id"].(string)
			if code != http.StatusCreated || id == "" {
				t.Fatalf("creating the record's Patient: %d %v", code, created)
			}
			f := newFixture(t, Limits{}, Options{})
			r := f.mustDrop("rec1", testkit.ReadFHIR(t, c.path), "192.0.2.1")
			p, err := f.svc.BeginPickup(context.Background(), "rec1", r.ID)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Abort()
			imp, err := p.Prepare(created, id, PrepareOptions{Search: search})
			if err != nil {
				t.Fatal(err)
			}
			if code, out := call(http.MethodPost, "/fhir", imp.Transaction); code != http.StatusOK {
				t.Fatalf("transaction: %d %v", code, out)
			}
			if err := p.Commit(context.Background()); err != nil {
				t.Fatal(err)
			}
			for _, query := range []string{"subject=Patient/" + id, "_tag=" + TagSystem + "|" + r.ID} {
				_, out := call(http.MethodGet, "/fhir/Observation?_summary=count&"+query, nil)
				if got := fmt.Sprint(out["total"]); got != fmt.Sprint(c.observations) {
					t.Errorf("Observation?%s: total %s, want %d", query, got, c.observations)
				}
			}
			// The same document again, other whitespace: a new drop-off,
			// whose pick-up finds everything already in the record.
			var again bytes.Buffer
			if err := json.Indent(&again, testkit.ReadFHIR(t, c.path), "", "   "); err != nil {
				t.Fatal(err)
			}
			r2 := f.mustDrop("rec1", again.Bytes(), "192.0.2.1")
			list, err := f.svc.List(context.Background(), "rec1")
			flagged := false
			for _, d := range list {
				flagged = flagged || (d.ID == r2.ID && d.LikelyDuplicateOf == r.ID)
			}
			if err != nil || len(list) != 2 || !flagged {
				t.Errorf("inbox %+v %v: the re-sent document is not flagged as a likely duplicate of %s", list, err, r.ID)
			}
			p2, err := f.svc.BeginPickup(context.Background(), "rec1", r2.ID)
			if err != nil {
				t.Fatal(err)
			}
			defer p2.Abort()
			imp2, err := p2.Prepare(created, id, PrepareOptions{Search: search})
			if err != nil {
				t.Fatal(err)
			}
			inRecord := 0
			for _, sk := range imp2.Report.Skipped {
				if sk.Reason == SkipInRecord && sk.Existing != "" {
					inRecord++
				}
			}
			// What the first pick-up found in the record (an Organization
			// an earlier case imported) counts too.
			want := imp.Entries
			for _, sk := range imp.Report.Skipped {
				if sk.Reason == SkipInRecord {
					want++
				}
			}
			if imp2.Entries != 0 || inRecord != want {
				t.Errorf("second pick-up: %d entries, %d of %d skipped as already in the record: %+v", imp2.Entries, inRecord, want, imp2.Report.Skipped)
			}
		})
	}
}
