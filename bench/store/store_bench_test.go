// Package storebench measures the embedded FHIR store: how many Synthea
// transaction Bundles it loads per second, and how many
// Observation?patient=… searches it answers per second.
package storebench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
	"github.com/pfrgateway/caddy-pfr/store"
)

// bundles reads the six Synthea transaction Bundles.
func bundles(b *testing.B) [][]byte {
	b.Helper()
	var out [][]byte
	for _, f := range testkit.SyntheaPaths(b) {
		out = append(out, testkit.ReadFile(b, f))
	}
	return out
}

// newStore opens a fresh store in b's temp dir, with or without search
// indexes.
func newStore(b *testing.B, noIndexes bool) http.Handler {
	b.Helper()
	db, err := store.Open(filepath.Join(b.TempDir(), "bench.db"), &store.Options{NoIndexes: noIndexes})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = db.Close() })
	h, err := store.NewHandler(db, store.Config{})
	if err != nil {
		b.Fatal(err)
	}
	return h
}

// call runs one request through h and fails unless it answers want.
func call(b *testing.B, h http.Handler, want int, method, target, partition string, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, bytes.NewReader(body))
	req.Header.Set("X-Request-Partition-IDs", partition)
	if body != nil {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != want {
		b.Fatalf("%s %s: %d: %s", method, target, rec.Code, rec.Body.String())
	}
	return rec
}

// createPartition creates partition id.
func createPartition(b *testing.B, h http.Handler, id int) {
	body := fmt.Sprintf(`{"resourceType":"Parameters","parameter":[{"name":"id","valueInteger":%d},{"name":"name","valueCode":"bench-%d"}]}`, id, id)
	call(b, h, http.StatusOK, http.MethodPost, "/fhir/$partition-management-create-partition", "DEFAULT", []byte(body))
}

// BenchmarkLoadSynthea loads one Synthea transaction Bundle per iteration,
// each into its own partition, fsync included, keeping the search indexes
// or not (the cost of keeping them, in one run).
func BenchmarkLoadSynthea(b *testing.B) {
	b.Run("indexes", func(b *testing.B) { loadSynthea(b, false) })
	b.Run("no-indexes", func(b *testing.B) { loadSynthea(b, true) })
}

func loadSynthea(b *testing.B, noIndexes bool) {
	all := bundles(b)
	h := newStore(b, noIndexes)
	var size int64
	for _, raw := range all {
		size += int64(len(raw))
	}
	b.SetBytes(size / int64(len(all)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		createPartition(b, h, i+1)
		b.StartTimer()
		call(b, h, http.StatusOK, http.MethodPost, "/fhir", fmt.Sprint(i+1), all[i%len(all)])
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "bundles/s")
}

// BenchmarkSearchObservationByPatient answers Observation?patient=X on a
// store holding all six Synthea patients, each in its own partition.
func BenchmarkSearchObservationByPatient(b *testing.B) {
	b.Run("indexes", func(b *testing.B) { searchObservationByPatient(b, false) })
	b.Run("no-indexes", func(b *testing.B) { searchObservationByPatient(b, true) })
}

func searchObservationByPatient(b *testing.B, noIndexes bool) {
	all := bundles(b)
	h := newStore(b, noIndexes)
	type target struct{ partition, patient string }
	var targets []target
	for i, raw := range all {
		part := fmt.Sprint(i + 1)
		createPartition(b, h, i+1)
		rec := call(b, h, http.StatusOK, http.MethodPost, "/fhir", part, raw)
		var resp struct {
			Entry []struct {
				Response struct{ Location string } `json:"response"`
			} `json:"entry"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
			b.Fatal(err)
		}
		for _, e := range resp.Entry {
			if id, ok := strings.CutPrefix(e.Response.Location, "Patient/"); ok {
				targets = append(targets, target{part, strings.Split(id, "/")[0]})
			}
		}
	}
	if len(targets) != len(all) {
		b.Fatalf("found %d patients", len(targets))
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t := targets[i%len(targets)]
		call(b, h, http.StatusOK, http.MethodGet, "/fhir/Observation?patient=Patient/"+t.patient, t.partition, nil)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "searches/s")
}
