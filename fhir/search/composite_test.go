package search

import (
	"math/big"
	"testing"
)

func TestCompositeParams(t *testing.T) {
	runMatchCases(t, "Observation", `{"resourceType":"Observation","id":"bp",
		"code":{"coding":[{"system":"http://loinc.org","code":"55284-4"}]},
		"component":[
			{"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},"valueQuantity":{"value":10,"system":"http://unitsofmeasure.org","code":"mm[Hg]"}},
			{"code":{"coding":[{"system":"http://loinc.org","code":"8462-4"}]},"valueQuantity":{"value":100,"system":"http://unitsofmeasure.org","code":"mm[Hg]"}}]}`, []matchCase{
		{"component-code-value-quantity=8480-6$10", true},
		{"component-code-value-quantity=http://loinc.org|8480-6$lt50|http://unitsofmeasure.org|mm[Hg]", true},
		{"component-code-value-quantity=8480-6$gt50", false}, // 100 belongs to the other component
		{"component-code-value-quantity=8462-4$gt50", true},
		{"component-code-value-quantity=8480-6$gt50,8462-4$gt50", true},
		{"component-code-value-quantity=8480-6$gt50&component-code-value-quantity=8462-4$gt50", false},
		{"component-code-value-quantity=8480-6$lt50&component-code-value-quantity=8462-4$gt50", true},
		{"combo-code-value-quantity=8462-4$100", true},
		{"code-value-quantity=8462-4$100", false}, // only Observation.value
		{"combo-code-value-quantity=55284-4$100", false},
		{"code-value-quantity:missing=false", true},
	})
	runMatchCases(t, "Observation", `{"resourceType":"Observation","id":"h",
		"code":{"coding":[{"system":"http://loinc.org","code":"8302-2"}]},
		"valueQuantity":{"value":165.4,"unit":"cm"},
		"effectivePeriod":{"start":"2013-01-01"}}`, []matchCase{
		{"code-value-quantity=8302-2$165.4", true},
		{"code-value-quantity=8302-2$gt170", false},
		{"combo-code-value-quantity=8302-2$ge165", true},
		{"code-value-concept=8302-2$x", false},
	})
	for _, bad := range []string{
		"component-code-value-quantity=8480-6",
		"component-code-value-quantity=8480-6$1$2",
		"component-code-value-quantity=8480-6$abc",
		"component-code-value-quantity=a|b|c$5",
		"component-code-value-quantity:exact=8480-6$5",
	} {
		v := mustValues(t, bad)
		for _, strict := range []bool{false, true} {
			_, err := Parse("Observation", v, strict)
			wantBadRequest(t, err, "component-code-value-quantity")
		}
	}
}

// TestSyntheaBloodPressure compares a composite search on every Synthea
// Bundle with a plain walk over the blood-pressure components.
func TestSyntheaBloodPressure(t *testing.T) {
	total := 0
	for name, entries := range loadBundles(t) {
		resources := stored(entries)
		want := 0
		for _, r := range resources {
			comps, _ := r["component"].([]any)
			for _, c := range comps {
				cm := c.(map[string]any)
				vq, _ := cm["valueQuantity"].(map[string]any)
				for _, coding := range codingsOf(cm["code"]) {
					if coding["code"] == "8480-6" && vq != nil {
						v, _ := toRat(vq["value"])
						if v.Cmp(big.NewRat(120, 1)) > 0 {
							want++
						}
					}
				}
			}
		}
		total += want
		q := mustParse(t, "Observation", "component-code-value-quantity=http://loinc.org|8480-6$gt120")
		if got := count(q, resources); got != want {
			t.Errorf("%s: systolic > 120: engine %d, walk %d", name, got, want)
		}
	}
	if total == 0 {
		t.Error("no systolic pressure above 120 in any Bundle: the test proves nothing")
	}
}
