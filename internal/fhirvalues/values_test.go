package fhirvalues

import "testing"

func TestDiff(t *testing.T) {
	must := func(s string) map[string]any {
		m, err := Decode([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	sent := must(`{"id":"a","meta":{"versionId":"1"},"valueQuantity":{"value":0.40},"subject":{"reference":"urn:uuid:1"},"text":{"div":"<div/>"}}`)
	for _, c := range []struct {
		got  string
		o    Options
		want bool // a difference
	}{
		{`{"id":"b","valueQuantity":{"value":0.40},"subject":{"reference":"urn:uuid:1"},"text":{"div":"<div/>"}}`, Options{Aside: []string{"id", "meta"}}, false},
		{`{"id":"a","meta":{"versionId":"1"},"valueQuantity":{"value":0.4},"subject":{"reference":"urn:uuid:1"},"text":{"div":"<div/>"}}`, Options{}, true},
		{`{"valueQuantity":{"value":0.40},"subject":{"reference":"Patient/1"},"text":{"div":"<div></div>"}}`, Options{Aside: []string{"id", "meta"},
			SkipReference: func(string) bool { return true }, SkipObject: func(m map[string]any) bool { return m["div"] != nil }}, false},
		{`{"valueQuantity":{"value":0.40},"subject":{"reference":"Patient/1"},"text":{"div":"<div/>"}}`, Options{Aside: []string{"id", "meta"}}, true},
		{`{"valueQuantity":{"value":0.40,"unit":"x"},"subject":{"reference":"urn:uuid:1"},"text":{"div":"<div/>"}}`, Options{Aside: []string{"id", "meta"}}, false},
		{`{"valueQuantity":{"value":0.40},"subject":{"reference":"urn:uuid:1"},"text":{"div":"<div/>"},"extra":1}`, Options{Aside: []string{"id", "meta"}, NoneAdded: true}, true},
	} {
		if d := Diff(sent, must(c.got), c.o); (d != "") != c.want {
			t.Errorf("%s: diff %q, want a difference: %v", c.got, d, c.want)
		}
	}
}
