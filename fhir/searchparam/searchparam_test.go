package searchparam

import (
	"encoding/json"
	"os"
	"slices"
	"sync"
	"testing"
)

func TestLookup(t *testing.T) {
	cases := []struct {
		resourceType, code, id, typ string
		ok                          bool
	}{
		{"Observation", "code", "clinical-code", TypeToken, true},
		{"Observation", "patient", "clinical-patient", TypeReference, true},
		{"Observation", "date", "clinical-date", TypeDate, true},
		{"Observation", "value-quantity", "Observation-value-quantity", TypeQuantity, true},
		{"Observation", "_id", "Resource-id", TypeToken, true},
		{"Observation", "_lastUpdated", "Resource-lastUpdated", TypeDate, true},
		{"Observation", "_tag", "Resource-tag", TypeToken, true},
		{"Observation", "_profile", "Resource-profile", TypeURI, true},
		{"Observation", "_security", "Resource-security", TypeToken, true},
		{"Observation", "_text", "DomainResource-text", TypeString, true},
		{"Bundle", "_id", "Resource-id", TypeToken, true},
		{"Bundle", "_text", "", "", false}, // Bundle is not a DomainResource
		{"Patient", "name", "Patient-name", TypeString, true},
		{"Patient", "birthdate", "individual-birthdate", TypeDate, true},
		{"Patient", "link", "Patient-link", TypeReference, true},
		{"RiskAssessment", "probability", "RiskAssessment-probability", TypeNumber, true},
		{"Observation", "nope", "", "", false},
		{"NotAType", "_id", "", "", false},
		{"Resource", "_id", "", "", false},
		{"", "", "", "", false},
	}
	for _, c := range cases {
		p, ok := Lookup(c.resourceType, c.code)
		if ok != c.ok || ok && (p.ID != c.id || p.Type != c.typ || p.Code != c.code) {
			t.Errorf("Lookup(%q, %q) = %+v, %v", c.resourceType, c.code, p, ok)
		}
	}
	p, _ := Lookup("Observation", "subject")
	if !slices.Contains(p.Target, "Patient") || !slices.Contains(p.Target, "Group") {
		t.Errorf("Observation.subject targets = %v", p.Target)
	}
	p, _ = Lookup("Observation", "date")
	if !slices.Contains(p.Comparator, "sa") {
		t.Errorf("Observation.date comparators = %v", p.Comparator)
	}
}

// TestTableMatchesBundle checks the generated table against the source
// Bundle, so a stale params_gen.go fails.
func TestTableMatchesBundle(t *testing.T) {
	data, err := os.ReadFile("../../testdata/fhir/search-parameters.r4.json")
	if err != nil {
		t.Fatal(err)
	}
	var bundle struct {
		Entry []struct {
			Resource struct{ ID, Code, Type, Expression string }
		}
	}
	if err := json.Unmarshal(data, &bundle); err != nil {
		t.Fatal(err)
	}
	all := All()
	if len(all) != len(bundle.Entry) || len(all) != 1375 {
		t.Fatalf("table has %d params, bundle %d", len(all), len(bundle.Entry))
	}
	for i, e := range bundle.Entry {
		r, p := e.Resource, all[i]
		if p.ID != r.ID || p.Code != r.Code || p.Type != r.Type || p.Expression != r.Expression {
			t.Errorf("entry %d: table %s/%s/%s, bundle %s/%s/%s", i, p.ID, p.Code, p.Type, r.ID, r.Code, r.Type)
		}
	}
}

func TestResourceTypes(t *testing.T) {
	types := ResourceTypes()
	if len(types) != 146 || !slices.IsSorted(types) {
		t.Fatalf("%d resource types, sorted %v", len(types), slices.IsSorted(types))
	}
	for _, want := range []string{"Patient", "Observation", "Parameters", "Bundle", "Binary"} {
		if !IsResourceType(want) {
			t.Errorf("%s missing", want)
		}
	}
	for _, bad := range []string{"Resource", "DomainResource", "patient", ""} {
		if IsResourceType(bad) {
			t.Errorf("%q is not a resource type", bad)
		}
	}
	types[0] = "Mutated"
	if ResourceTypes()[0] == "Mutated" {
		t.Error("ResourceTypes returns the shared slice")
	}
	for _, p := range All() {
		for _, b := range p.Base {
			if b != "Resource" && b != "DomainResource" && !IsResourceType(b) {
				t.Errorf("%s: base %s is not a resource type", p.ID, b)
			}
		}
	}
}

func TestForType(t *testing.T) {
	ps := ForType("Observation")
	if len(ps) < 40 {
		t.Fatalf("Observation has %d params", len(ps))
	}
	codes := map[string]bool{}
	for i, p := range ps {
		if i > 0 && ps[i-1].Code >= p.Code {
			t.Errorf("not sorted at %s", p.Code)
		}
		if !p.AppliesTo("Observation") {
			t.Errorf("%s does not apply to Observation", p.ID)
		}
		codes[p.Code] = true
	}
	for _, c := range []string{"_id", "_lastUpdated", "code", "subject", "value-quantity", "combo-code-value-quantity"} {
		if !codes[c] {
			t.Errorf("Observation lacks %s", c)
		}
	}
	if ForType("Nope") != nil {
		t.Error("ForType of an unknown type is not nil")
	}
}

// TestCompileAll compiles every expression through the registry,
// concurrently, to exercise the lazy cache under the race detector.
func TestCompileAll(t *testing.T) {
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for _, p := range All() {
				e, err := p.Compiled()
				switch {
				case p.Expression == "" && err == nil:
					t.Errorf("%s: no expression but no error", p.ID)
				case p.Expression != "" && (err != nil || e.String() != p.Expression):
					t.Errorf("%s: %v", p.ID, err)
				}
			}
		})
	}
	wg.Wait()
	p, _ := Lookup("Observation", "code")
	e1, _ := p.Compiled()
	e2, _ := p.Compiled()
	if e1 != e2 {
		t.Error("compiled expression not cached")
	}
}

func TestEvaluate(t *testing.T) {
	obs := map[string]any{
		"resourceType": "Observation", "id": "x",
		"subject": map[string]any{"reference": "Patient/1"},
	}
	p, _ := Lookup("Observation", "patient")
	got, err := p.Evaluate(obs)
	if err != nil || len(got) != 1 {
		t.Fatalf("patient = %v, %v", got, err)
	}
	obs["subject"] = map[string]any{"reference": "Group/1"}
	if got, _ := p.Evaluate(obs); len(got) != 0 {
		t.Errorf("patient matched a Group subject: %v", got)
	}
	text, _ := Lookup("Observation", "_text")
	if _, err := text.Evaluate(obs); err == nil {
		t.Error("_text evaluated without an expression")
	}
}

func TestResolvedComponents(t *testing.T) {
	var composites int
	for _, p := range All() {
		comps, err := p.ResolvedComponents()
		if p.Type != TypeComposite {
			if err == nil {
				t.Errorf("%s: components of a %s parameter", p.ID, p.Type)
			}
			continue
		}
		composites++
		if err != nil || len(comps) != len(p.Components) || len(comps) < 2 {
			t.Errorf("%s: %v, %d components", p.ID, err, len(comps))
		}
	}
	if composites != 46 {
		t.Errorf("%d composites, want 46", composites)
	}
	p, _ := Lookup("Observation", "code-value-quantity")
	comps, _ := p.ResolvedComponents()
	if comps[0].Param.Type != TypeToken || comps[1].Param.Type != TypeQuantity || comps[1].Expr.String() != "value.as(Quantity)" {
		t.Errorf("code-value-quantity components = %+v", comps)
	}
	if q, ok := ByURL("http://hl7.org/fhir/SearchParameter/clinical-code"); !ok || q.Code != "code" {
		t.Errorf("ByURL clinical-code = %v, %v", q, ok)
	}
	if _, ok := ByURL("http://nope"); ok {
		t.Error("ByURL found an unknown URL")
	}
}

// TestResourceTypeOf: it knows exactly the resource types IsResourceType
// knows, hands out the same string each time, and allocates nothing.
func TestResourceTypeOf(t *testing.T) {
	for _, typ := range append(ResourceTypes(), "", "observation", "Observations", "Patient ", "Bundle\x00") {
		got, ok := ResourceTypeOf([]byte(typ))
		if ok != IsResourceType(typ) || ok && got != typ {
			t.Errorf("ResourceTypeOf(%q) = %q, %v; IsResourceType says %v", typ, got, ok, IsResourceType(typ))
		}
	}
	b := []byte("Observation")
	if allocs := testing.AllocsPerRun(100, func() { _, _ = ResourceTypeOf(b) }); allocs != 0 {
		t.Errorf("%v allocations", allocs)
	}
}
