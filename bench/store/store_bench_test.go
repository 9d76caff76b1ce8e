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

// BenchmarkTransactionSize writes one transaction Bundle of n Observations
// per iteration into a fresh partition, as an import does: one sensor's
// glucose readings (one code, one subject, one category), so most index
// keys of the entries share their prefix and differ only in the random
// id. ns/entry stays flat when a transaction's cost is linear in its size.
func BenchmarkTransactionSize(b *testing.B) {
	for _, mode := range []struct {
		name      string
		noIndexes bool
	}{{"indexes", false}, {"no-indexes", true}} {
		for _, n := range []int{1000, 10000} {
			b.Run(fmt.Sprintf("%s/n=%d", mode.name, n), func(b *testing.B) {
				h := newStore(b, mode.noIndexes)
				body := glucoseTransaction(n)
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					createPartition(b, h, i+1)
					b.StartTimer()
					call(b, h, http.StatusOK, http.MethodPost, "/fhir", fmt.Sprint(i+1), body)
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/entry")
			})
		}
	}
}

// glucoseTransaction is a transaction Bundle creating n glucose
// Observations of one Patient (the shape of bench/bulk's record).
func glucoseTransaction(n int) []byte {
	var entries []string
	for i := 0; i < n; i++ {
		entries = append(entries, fmt.Sprintf(`{"resource":{"resourceType":"Observation","status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"2339-0","display":"Glucose"}]},"subject":{"reference":"Patient/bench"},"effectiveDateTime":"2026-01-01T00:00:00Z","valueQuantity":{"value":%d.%d0,"unit":"mg/dL","system":"http://unitsofmeasure.org","code":"mg/dL"}},"request":{"method":"POST","url":"Observation"}}`, 70+i%60, i%10))
	}
	return []byte(`{"resourceType":"Bundle","type":"transaction","entry":[` + strings.Join(entries, ",") + `]}`)
}
