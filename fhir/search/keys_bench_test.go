package search

import (
	"encoding/json"
	"testing"
)

// BenchmarkResourceKeys computes the index keys of one Observation of
// bench/store/record's generated record (a glucose reading, as stored:
// numbers decoded as float64), what a store does for every write.
func BenchmarkResourceKeys(b *testing.B) {
	raw := []byte(`{"resourceType":"Observation","id":"019aeb2c-7d4e-7a31-8c2f-5b9e0d1a2f3c","meta":{"versionId":"1","lastUpdated":"2026-12-04T16:39:00.577Z"},"status":"final",` +
		`"category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"laboratory"}]}],` +
		`"code":{"coding":[{"system":"http://loinc.org","code":"2339-0","display":"Glucose [Mass/volume] in Blood"}],"text":"Glucose [Mass/volume] in Blood"},` +
		`"subject":{"reference":"Patient/019aeb2c-7d4e-7a31-8c2f-5b9e0d1a0000"},"effectiveDateTime":"2026-01-01T10:04:31Z","device":{"display":"sensor"},` +
		`"valueQuantity":{"value":101.2,"unit":"mg/dL","system":"http://unitsofmeasure.org","code":"mg/dL"}}`)
	var res map[string]any
	if err := json.Unmarshal(raw, &res); err != nil {
		b.Fatal(err)
	}
	ResourceKeys("Observation", res)
	for b.Loop() {
		ResourceKeys("Observation", res)
	}
}
