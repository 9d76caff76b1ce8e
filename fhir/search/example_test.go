package search_test

import (
	"fmt"
	"net/url"

	"github.com/pfrgateway/caddy-pfr/fhir/search"
)

func ExampleParse() {
	params, _ := url.ParseQuery("code=http://loinc.org|8302-2&date=ge2013-01&_sort=-date&_count=10&_include=Observation:subject&nope=1")
	q, err := search.Parse("Observation", params, false)
	if err != nil {
		fmt.Println(err) // a *fhir.Error with status 400
		return
	}
	obs := map[string]any{
		"resourceType": "Observation", "id": "h1",
		"code":              map[string]any{"coding": []any{map[string]any{"system": "http://loinc.org", "code": "8302-2"}}},
		"effectiveDateTime": "2013-01-14T10:00:00Z",
		"subject":           map[string]any{"reference": "Patient/123"},
	}
	fmt.Println(q.Match(obs), q.Count, q.Unknown)
	for _, inc := range q.Includes {
		fmt.Println(inc, inc.References(obs))
	}
	// Output:
	// true 10 [nope=1]
	// Observation:subject [Patient/123]
}

func ExampleParse_strict() {
	params, _ := url.ParseQuery("subject.nope=peter")
	_, err := search.Parse("Observation", params, true)
	fmt.Println(err)
	// Output:
	// 400 search parameter subject.nope: no type subject can refer to (Group, Device, Patient, Location) supports nope
}
