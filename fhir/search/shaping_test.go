package search

import (
	"net/url"
	"reflect"
	"slices"
	"testing"
)

func TestShaping(t *testing.T) {
	obs := map[string]any{"resourceType": "Observation", "id": "o1", "status": "final",
		"code": map[string]any{"text": "c"}, "subject": map[string]any{"reference": "Patient/p"},
		"valueQuantity": map[string]any{"value": 1}, "text": map[string]any{"status": "generated", "div": "<div/>"}}
	cases := []struct {
		query string
		whole bool     // no shaping
		keys  []string // the top-level keys kept (besides meta)
		err   bool
	}{
		{query: "", whole: true},
		{query: "_summary=false", whole: true},
		{query: "_summary=count", whole: true},
		{query: "_elements=", whole: true},
		{query: "_elements=code", keys: []string{"code", "id", "resourceType"}},
		{query: "_elements=Observation.value,status", keys: []string{"id", "resourceType", "status", "valueQuantity"}},
		{query: "_elements=code&_elements=subject", keys: []string{"code", "id", "resourceType", "subject"}},
		{query: "_summary=data", keys: []string{"code", "id", "resourceType", "status", "subject", "valueQuantity"}},
		{query: "_summary=text", keys: []string{"code", "id", "resourceType", "status", "text"}},
		// R4: _elements is ignored when _summary is given.
		{query: "_summary=data&_elements=code", keys: []string{"code", "id", "resourceType", "status", "subject", "valueQuantity"}},
		{query: "_summary=yes", err: true},
		{query: "_elements=code.text", err: true},
	}
	for _, c := range cases {
		q, _ := url.ParseQuery(c.query)
		shape, err := Shaping("Observation", q)
		if c.err {
			if err == nil {
				t.Errorf("%q: no error", c.query)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", c.query, err)
		}
		if c.whole {
			if shape != nil {
				t.Errorf("%q: shaped, want whole", c.query)
			}
			continue
		}
		got := shape(obs)
		var keys []string
		for k := range got {
			if k != "meta" {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		if !reflect.DeepEqual(keys, c.keys) {
			t.Errorf("%q: kept %v, want %v", c.query, keys, c.keys)
		}
		if meta, _ := got["meta"].(map[string]any); meta == nil || meta["tag"] == nil {
			t.Errorf("%q: not marked SUBSETTED: %v", c.query, got["meta"])
		}
		if _, ok := obs["meta"]; ok {
			t.Fatalf("%q: the resource itself was changed", c.query)
		}
	}
}
