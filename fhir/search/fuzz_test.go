package search

import (
	"errors"
	"net/url"
	"testing"

	"github.com/pfrgateway/caddy-pfr/fhir"
)

// FuzzParseMatch: any query string either parses, or fails with a 400
// *fhir.Error; a parsed query matches and sorts without panicking.
func FuzzParseMatch(f *testing.F) {
	for _, s := range []string{
		"code=http://loinc.org|8302-2&date=ge2013-01&_sort=-date,code",
		"value-quantity=gt5.4|http://unitsofmeasure.org|mg&subject:Patient=1",
		"component-code-value-quantity=8480-6$gt120&_include=Observation:subject",
		"code:not=a,b&code:text=x&subject:missing=true&_count=3&_elements=code",
		`code=a\,b\|c&date=ap2020&value-quantity=1e2`,
		"subject.name=x&_has:Observation:patient:code=1&_revinclude=Provenance:target",
	} {
		f.Add(s)
	}
	resources := map[string]any{
		"resourceType": "Observation", "id": "o",
		"code":              map[string]any{"coding": []any{map[string]any{"system": "http://loinc.org", "code": "8302-2"}}},
		"effectiveDateTime": "2013-01-14T10:00:00Z",
		"valueQuantity":     map[string]any{"value": 5.4, "code": "mg"},
		"subject":           map[string]any{"reference": "Patient/1"},
	}
	f.Fuzz(func(t *testing.T, query string) {
		v, err := url.ParseQuery(query)
		if err != nil {
			return
		}
		for _, strict := range []bool{false, true} {
			q, err := Parse("Observation", v, strict)
			if err != nil {
				var fe *fhir.Error
				if !errors.As(err, &fe) || fe.Status != 400 {
					t.Fatalf("Parse(%q): %v is not a 400 *fhir.Error", query, err)
				}
				continue
			}
			q.Match(resources)
			q.Less(resources, resources)
			for _, inc := range q.Includes {
				inc.References(resources)
			}
			ApplyElements(resources, q.Elements)
		}
	})
}
