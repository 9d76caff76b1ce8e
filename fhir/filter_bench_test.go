package fhir

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"testing"
)

// benchSearchset is a searchset of n Synthea-like vital signs of Patient
// p1 as an embedded store answers a search (fullUrl, meta, search mode):
// what bench/gateway's 50-entry search carries.
func benchSearchset(n int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"resourceType":"Bundle","id":"s1","meta":{"lastUpdated":"2026-12-04T03:59:00Z"},"type":"searchset","total":`)
	fmt.Fprintf(&b, `%d,"link":[{"relation":"self","url":"https://x/fhir/Observation?_count=%d"}],"entry":[`, n, n)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		obs := map[string]any{
			"id": fmt.Sprintf("obs%04d", i),
			"meta": map[string]any{"versionId": "1", "lastUpdated": "2026-12-04T03:59:00.123Z",
				"tag": []any{map[string]any{"system": "https://smarthealthit.org/tags", "code": "synthea-5-2019"}}},
			"status": "final",
			"category": []any{map[string]any{"coding": []any{map[string]any{
				"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs", "display": "vital-signs"}}}},
			"code": map[string]any{"coding": []any{map[string]any{"system": "http://loinc.org", "code": "8302-2", "display": "Body Height"}},
				"text": "Body Height"},
			"subject":           map[string]any{"reference": "Patient/p1"},
			"effectiveDateTime": "2015-01-01T09:30:00Z", "issued": "2015-01-01T09:30:00Z",
			"valueQuantity": map[string]any{"value": 160.37, "unit": "cm", "system": "http://unitsofmeasure.org", "code": "cm"},
		}
		res, _ := json.Marshal(obs)
		res = append([]byte(`{"resourceType":"Observation",`), res[1:]...) // first, as servers write it
		fmt.Fprintf(&b, `{"fullUrl":"https://x/fhir/Observation/obs%04d","resource":%s,"search":{"mode":"match"}}`, i, res)
	}
	b.WriteString(`]}`)
	return b.Bytes()
}

// BenchmarkFilterSearch50 filters what bench/gateway searches: 50 entries
// of the record's own, every one decided on the fast path.
func BenchmarkFilterSearch50(b *testing.B) {
	body := benchSearchset(50)
	o := Owner{PatientID: "p1", Bases: []string{"https://x/fhir"}}
	p := DefaultOwnershipPolicy()
	keep := func(map[string]any) bool { b.Fatal("decoded"); return false }
	opts := FilterOptions{DropTotal: true, Nested: true, Quick: func(f *EntryFacts) (bool, bool) {
		_, keep, decided := o.JudgeEntry(f, p)
		return keep, decided
	}}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if removed, err := FilterBundle(bytes.NewReader(body), io.Discard, keep, opts); err != nil || removed != 0 {
			b.Fatal(removed, err)
		}
	}
}
