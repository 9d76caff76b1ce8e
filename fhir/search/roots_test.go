package search

import (
	"bytes"
	"path/filepath"
	"slices"
	"testing"

	"github.com/pfrgateway/caddy-pfr/fhir/searchparam"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// Skipping the parameters whose elements a resource lacks changes no
// value: on every resource of the Synthea Bundles and the real-world IPS
// documents, every parameter of its type gives the same nodes with and
// without the check.
func TestRootsSkipOnlyEmptyParameters(t *testing.T) {
	resources := sampleResources(t)
	skipped, evaluated := 0, 0
	for _, res := range resources {
		typ, _ := res["resourceType"].(string)
		shape := shapeOf(res) // shared by the parameters, as ResourceKeys does
		for _, p := range searchparam.ForType(typ) {
			if p.Expression == "" {
				continue
			}
			want, err := p.Evaluate(res)
			if err != nil {
				continue
			}
			if shape.mayHave(p, res) != mayHave(p, res) {
				t.Errorf("%s %s: a shape shared by the parameters decides otherwise than one of its own", typ, p.Code)
			}
			if mayHave(p, res) {
				evaluated++
				continue
			}
			skipped++
			if len(want) > 0 {
				t.Errorf("%s %s (%s): skipped, but it finds %d values", typ, p.Code, p.Expression, len(want))
			}
		}
	}
	if skipped*4 < evaluated {
		t.Errorf("only %d of %d evaluations skipped", skipped, skipped+evaluated)
	}
	t.Logf("%d evaluations skipped, %d done", skipped, evaluated)
	if got := parseRoots("Observation.code | Observation.component.code", "Observation"); !slices.Equal(got, []root{{"code", ""}, {"component", "code"}}) {
		t.Errorf("roots %v", got)
	}
	if got := parseRoots("(Observation.value as Quantity) | Resource.meta.lastUpdated", "Observation"); !slices.Equal(got, []root{{"valueQuantity", ""}, {"meta", "lastUpdated"}}) {
		t.Errorf("roots %v", got)
	}
	if got := parseRoots("(Observation.value as string) | (Observation.value as CodeableConcept).text", "Observation"); !slices.Equal(got, []root{{"valueString", ""}, {"valueCodeableConcept", ""}}) {
		t.Errorf("roots %v", got)
	}
	// A cast deeper in the resource is read in its top-level element;
	// the sides of a union that select another type read nothing.
	if got := parseRoots("(Observation.component.value as Quantity) | (Observation.component.value as SampledData)", "Observation"); !slices.Equal(got, []root{{"component", ""}, {"component", ""}}) {
		t.Errorf("roots %v", got)
	}
	if got := parseRoots("AllergyIntolerance.code | (DeviceRequest.code as CodeableConcept) | Observation.code | (Medication.ingredient.item as CodeableConcept)", "Observation"); !slices.Equal(got, []root{{"code", ""}}) {
		t.Errorf("roots %v", got)
	}
	if got := parseRoots("CarePlan.subject.where(resolve() is Patient) | Observation.subject.where(resolve() is Patient)", "Observation"); !slices.Equal(got, []root{{"subject", ""}}) {
		t.Errorf("roots %v", got)
	}
	if parseRoots("(Observation.value as CodeableConcept).coding.where(system = 'x')", "Observation") != nil {
		t.Error("a function after a cast must be evaluated")
	}
	if parseRoots("Observation.descendants()", "Observation") != nil || parseRoots("CarePlan.subject", "Observation") != nil ||
		parseRoots("Observation | Observation.component", "Observation") != nil {
		t.Error("an expression not read by its roots must always be evaluated")
	}
}

// sampleResources returns every resource (contained ones too) of the
// Synthea Bundles and the real-world IPS documents.
func sampleResources(t *testing.T) []map[string]any {
	t.Helper()
	var resources []map[string]any
	bundles := testkit.Synthea(t)
	ips, _ := filepath.Glob(testkit.FHIRPath(t, "realworld/ips/*.json"))
	if len(ips) == 0 {
		t.Fatal("no real-world IPS documents")
	}
	for _, f := range ips {
		bundles[f] = testkit.ReadFile(t, f)
	}
	for _, raw := range bundles {
		entries, _ := testkit.DecodeFHIR(t, raw)["entry"].([]any)
		for _, e := range entries {
			if res, ok := e.(map[string]any)["resource"].(map[string]any); ok {
				resources = append(resources, res)
				for _, c := range asList(res["contained"]) {
					if cr, ok := c.(map[string]any); ok {
						resources = append(resources, cr)
					}
				}
			}
		}
	}
	return resources
}

// ResourceKeys gives every parameter the keys IndexKeys gives it, also
// those it takes as the union of other parameters' keys (an Observation's
// combo-* parameters), on every sample resource and on Observations whose
// components carry codes, quantities, concepts and absent reasons.
func TestResourceKeysAreIndexKeys(t *testing.T) {
	resources := sampleResources(t)
	coding := func(code string) map[string]any {
		return map[string]any{"coding": []any{map[string]any{"system": "http://loinc.org", "code": code}}}
	}
	resources = append(resources,
		map[string]any{"resourceType": "Observation", "status": "final", "code": coding("85354-9"),
			"dataAbsentReason": coding("unknown"),
			"component": []any{
				map[string]any{"code": coding("8480-6"), "valueQuantity": map[string]any{"value": 120.0, "unit": "mm[Hg]"}},
				map[string]any{"code": coding("85354-9"), "valueQuantity": map[string]any{"value": 120.0, "unit": "mm[Hg]"}},
				map[string]any{"code": coding("8462-4"), "valueCodeableConcept": coding("LA1"), "dataAbsentReason": coding("unknown")},
			}},
		map[string]any{"resourceType": "Observation", "status": "final", "code": coding("1-1"), "valueCodeableConcept": coding("LA1"),
			"component": []any{map[string]any{"code": coding("1-1"), "valueCodeableConcept": coding("LA2")}}},
	)
	unions := 0
	for _, res := range resources {
		typ, _ := res["resourceType"].(string)
		got := ResourceKeys(typ, res)
		for i, p := range IndexedParams(typ) {
			if want := IndexKeys(p, res); !slices.EqualFunc(got[i], want, bytes.Equal) {
				t.Errorf("%s %s: ResourceKeys %q, IndexKeys %q", typ, p.Code, got[i], want)
			}
			if keyPlanOf(typ).unionOf[i] != nil && len(got[i]) > 0 {
				unions++
			}
		}
	}
	if unions == 0 {
		t.Error("no parameter took its keys from others")
	}
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

// A store writes the keys of every indexed parameter but the unions of
// others (KeysOf), and finds a union's keys under its parts' tags
// (IndexTags): Observation's four combo-* parameters, whose operands are
// plain paths; a union with an operand that could fail to evaluate (a
// function, an indexer) is not read from its parts.
func TestUnionKeysReadFromParts(t *testing.T) {
	tag := func(code string) byte {
		i := slices.IndexFunc(IndexedParams("Observation"), func(p *searchparam.Param) bool { return p.Code == code })
		if i < 0 {
			t.Fatalf("%s is not indexed", code)
		}
		return byte(i + 1)
	}
	want := map[string][]string{
		"combo-code":               {"code", "component-code"},
		"combo-value-quantity":     {"value-quantity", "component-value-quantity"},
		"combo-value-concept":      {"value-concept", "component-value-concept"},
		"combo-data-absent-reason": {"data-absent-reason", "component-data-absent-reason"},
	}
	for _, typ := range searchparam.ResourceTypes() {
		stored := KeysOf(typ)
		for i, p := range IndexedParams(typ) {
			parts, union := want[p.Code]
			union = union && typ == "Observation"
			if stored[i] == union {
				t.Errorf("%s %s: keys written %v", typ, p.Code, stored[i])
			}
			tags, ok := IndexTags(typ, p.Code)
			own, ownOK := IndexTag(typ, p.Code)
			switch {
			case !ok:
				t.Errorf("%s %s: no tags", typ, p.Code)
			case union:
				var wantTags []byte
				for _, part := range parts {
					wantTags = append(wantTags, tag(part))
				}
				if !bytes.Equal(tags, wantTags) || ownOK {
					t.Errorf("%s %s: tags %v (own %v), want %v and none of its own", typ, p.Code, tags, ownOK, wantTags)
				}
			case !ownOK || !bytes.Equal(tags, []byte{own}) || own != byte(i+1):
				t.Errorf("%s %s: tags %v, own %d", typ, p.Code, tags, own)
			}
		}
	}
	for expr, plain := range map[string]bool{
		"Observation.code": true, "(Observation.value as Quantity)": true, "Observation.component.code": true,
		"Observation.component.where(code.exists())": false, "Observation.component[0].code": false,
		"Observation.value.as(Quantity)": false, "Observation.code and Observation.status": false,
	} {
		if plainPath.MatchString(expr) != plain {
			t.Errorf("%s: plain path %v", expr, !plain)
		}
	}
}
