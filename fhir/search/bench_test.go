package search

import "testing"

// BenchmarkMatch measures one typical query over every resource of the six
// Synthea Bundles (ns/op is per resource).
func BenchmarkMatch(b *testing.B) {
	var resources []map[string]any
	for _, entries := range loadBundles(b) {
		resources = append(resources, stored(entries)...)
	}
	q := mustParse(b, "Observation", "patient=Patient/x,Patient/y&code=http://loinc.org|8302-2&date=ge2010")
	for i := 0; b.Loop(); i++ {
		q.Match(resources[i%len(resources)])
	}
}
