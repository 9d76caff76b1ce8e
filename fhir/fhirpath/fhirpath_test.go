package fhirpath

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"sync"
	"testing"
)

const searchParametersFile = "../../testdata/fhir/search-parameters.r4.json"

// decode decodes JSON like the store does; useNumber picks json.Number.
func decode(t testing.TB, data string, useNumber bool) map[string]any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(data))
	if useNumber {
		dec.UseNumber()
	}
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestCompileAllSearchParameters compiles every expression of every
// non-composite, non-special R4 SearchParameter (and the component
// expressions of composites) and requires all of them to compile.
func TestCompileAllSearchParameters(t *testing.T) {
	data, err := os.ReadFile(searchParametersFile)
	if err != nil {
		t.Fatal(err)
	}
	var bundle struct {
		Entry []struct {
			Resource struct {
				ID, Type, Expression string
				Component            []struct{ Expression string }
			}
		}
	}
	if err := json.Unmarshal(data, &bundle); err != nil {
		t.Fatal(err)
	}
	total, ok := 0, 0
	for _, e := range bundle.Entry {
		r := e.Resource
		exprs := []string{r.Expression}
		for _, c := range r.Component {
			exprs = append(exprs, c.Expression)
		}
		for _, src := range exprs {
			if src == "" {
				continue
			}
			total++
			if _, err := Compile(src); err != nil {
				if r.Type != "composite" && r.Type != "special" {
					t.Errorf("%s (%s): %v", r.ID, r.Type, err)
				}
				continue
			}
			ok++
		}
	}
	t.Logf("compiled %d of %d SearchParameter expressions", ok, total)
	if total < 1300 || ok != total {
		t.Errorf("compiled %d of %d expressions, want all", ok, total)
	}
}

const observation = `{
  "resourceType": "Observation", "id": "o1",
  "contained": [{"resourceType": "Patient", "id": "p1"}],
  "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}], "text": "Body Height"},
  "subject": {"reference": "Patient/123"},
  "performer": [{"reference": "#p1"}, {"reference": "https://x.example/fhir/Practitioner/9/_history/2"}, {"reference": "urn:uuid:abc"}],
  "effectiveDateTime": "2012-03-07T20:15:35+00:00",
  "valueQuantity": {"value": 165.5, "unit": "cm", "system": "http://unitsofmeasure.org", "code": "cm"},
  "component": [{"code": {"text": "a"}, "valueString": "x"}, {"code": {"text": "b"}, "valueQuantity": {"value": 2}}],
  "extension": [{"url": "http://e/1", "valueBoolean": true}, {"url": "http://e/2", "valueCode": "z"}],
  "telecom": [{"system": "email", "value": "a@b"}, {"system": "phone", "value": "123"}]
}`

func TestEvaluate(t *testing.T) {
	cases := []struct {
		expr string
		want []string // JSON of each result node's value
	}{
		{"Observation.code.coding.code", []string{`"8302-2"`}},
		{"Patient.name", nil},
		{"Resource.id", []string{`"o1"`}},
		{"DomainResource.id", []string{`"o1"`}},
		{"Observation.value", []string{`{"code":"cm","system":"http://unitsofmeasure.org","unit":"cm","value":165.5}`}},
		{"(Observation.value as Quantity).value", []string{`165.5`}},
		{"Observation.value as CodeableConcept", nil},
		{"Observation.value.as(Quantity).unit", []string{`"cm"`}},
		{"Observation.effective.ofType(dateTime)", []string{`"2012-03-07T20:15:35+00:00"`}},
		{"Observation.effective as Period", nil},
		{"Observation.component.value as Quantity", []string{`{"value":2}`}},
		{"Observation.component.value.ofType(string)", []string{`"x"`}},
		{"Observation.subject.where(resolve() is Patient)", []string{`{"reference":"Patient/123"}`}},
		{"Observation.subject.where(resolve() is Group)", nil},
		{"Observation.performer.where(resolve() is Patient)", []string{`{"reference":"#p1"}`}},
		{"Observation.performer.where(resolve() is Practitioner)", []string{`{"reference":"https://x.example/fhir/Practitioner/9/_history/2"}`}},
		{"Observation.performer.resolve().id", []string{`"p1"`, `"9"`}},
		{"Observation.telecom.where(system='email').value", []string{`"a@b"`}},
		{"Observation.telecom.where(system='email' or system='phone').value", []string{`"a@b"`, `"123"`}},
		{"Observation.telecom.where(system='email' and value='123')", nil},
		{"Observation.telecom.where(system != 'email').value", []string{`"123"`}},
		{"Observation.extension('http://e/2').value", []string{`"z"`}},
		{"Observation.extension('http://e/3')", nil},
		{"Observation.subject | Observation.subject | Observation.id", []string{`{"reference":"Patient/123"}`, `"o1"`}},
		{"Observation.performer[1].reference", []string{`"https://x.example/fhir/Practitioner/9/_history/2"`}},
		{"Observation.performer.first().reference", []string{`"#p1"`}},
		{"Observation.performer[7]", nil},
		{"Observation.value.exists() and Observation.value.value != 1", []string{`true`}},
		{"Observation.status.exists()", []string{`false`}},
		{"Observation.performer.count() > 2", []string{`true`}},
		{"Observation.extension.where(value = true).url", []string{`"http://e/1"`}},
		{"%resource.id", []string{`"o1"`}},
		{"Observation.component.where($this.code.text = 'b').value.value", []string{`2`}},
		{"Observation.valueQuantity.value = 165.5", []string{`true`}},
		{"Observation.code.text.empty().not()", []string{`true`}},
		{"Observation.component.code.text.last()", []string{`"b"`}},
		{"(Observation.value as Quantity) is Quantity", []string{`true`}},
	}
	for _, useNumber := range []bool{false, true} {
		res := decode(t, observation, useNumber)
		for _, c := range cases {
			e, err := Compile(c.expr)
			if err != nil {
				t.Errorf("Compile(%q): %v", c.expr, err)
				continue
			}
			got, err := e.Evaluate(res)
			if err != nil {
				t.Errorf("Evaluate(%q): %v", c.expr, err)
				continue
			}
			var gotJSON []string
			for _, n := range got {
				b, _ := json.Marshal(n.Value)
				gotJSON = append(gotJSON, string(b))
			}
			if strings.Join(gotJSON, ",") != strings.Join(c.want, ",") {
				t.Errorf("useNumber=%v %q = %v, want %v", useNumber, c.expr, gotJSON, c.want)
			}
		}
	}
}

func TestChoiceTypeNames(t *testing.T) {
	res := decode(t, observation, false)
	got, err := MustCompile("Observation.effective | Observation.value").Evaluate(res)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Type != "dateTime" || got[1].Type != "Quantity" {
		t.Fatalf("types = %+v", got)
	}
}

func TestResolver(t *testing.T) {
	res := decode(t, observation, false)
	env := &Env{Resolve: func(ref string) (map[string]any, bool) {
		if ref == "urn:uuid:abc" {
			return map[string]any{"resourceType": "Patient", "id": "u"}, true
		}
		return nil, false
	}}
	got, err := MustCompile("Observation.performer.where(resolve() is Patient).reference").EvaluateEnv(res, env)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Value != "#p1" || got[1].Value != "urn:uuid:abc" {
		t.Fatalf("got %+v", got)
	}
}

func TestCompileErrors(t *testing.T) {
	for _, src := range []string{
		"", "Observation.", "Observation.code.where(", "(Observation.code", "Observation.code)",
		"Observation.foo(1)", "'unterminated", "Observation.code as", "Observation.where()",
		"Observation.code ! x", "%", "%unknown", "Observation.exists(a, b)", "Observation[",
		"`unterminated", "Observation.extension()", "a.b.c.as(1)",
	} {
		_, err := Compile(src)
		if err == nil {
			t.Errorf("Compile(%q) succeeded, want error", src)
			continue
		}
		if !strings.Contains(err.Error(), src) {
			t.Errorf("Compile(%q) error %q does not name the expression", src, err)
		}
	}
}

func TestEvaluateErrors(t *testing.T) {
	res := decode(t, observation, false)
	for _, src := range []string{
		"Observation.performer['x']",
		"Observation.where(performer.reference)",
		"Observation.where(performer.reference = 'x' and performer.reference)",
		"Observation.extension(Observation.performer.reference)",
	} {
		_, err := MustCompile(src).Evaluate(res)
		if err == nil || !strings.Contains(err.Error(), src) {
			t.Errorf("Evaluate(%q) err = %v, want an error naming the expression", src, err)
		}
	}
}

func TestSplitReference(t *testing.T) {
	cases := []struct {
		ref, typ, id string
		ok           bool
	}{
		{"Patient/123", "Patient", "123", true},
		{"Patient/123/_history/4", "Patient", "123", true},
		{"https://h/fhir/Patient/a-b.c", "Patient", "a-b.c", true},
		{"urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0", "", "", false},
		{"#p1", "", "", false},
		{"Patient", "", "", false},
		{"x/Patient/1", "", "", false},
		{"patient/1", "", "", false},
		{"Patient/1?x=y", "", "", false},
		{"Patient/" + strings.Repeat("a", 65), "", "", false},
		{"Patient/a b", "", "", false},
	}
	for _, c := range cases {
		typ, id, ok := SplitReference(c.ref)
		if typ != c.typ || id != c.id || ok != c.ok {
			t.Errorf("SplitReference(%q) = %q %q %v", c.ref, typ, id, ok)
		}
	}
}

// TestSyntheaObservations evaluates real Synthea resources and compares with
// a plain walk of the Bundle JSON.
func TestSyntheaObservations(t *testing.T) {
	data, err := os.ReadFile("../../testdata/fhir/synthea/Ned_Hintz_e4b9259d-0f54-48d1-a35d-b526729a4dfe.json")
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var bundle struct {
		Entry []struct{ Resource map[string]any }
	}
	if err := dec.Decode(&bundle); err != nil {
		t.Fatal(err)
	}
	codes := MustCompile("Observation.code.coding.code")
	values := MustCompile("(Observation.value as Quantity).value")
	seen := 0
	for _, e := range bundle.Entry {
		if e.Resource["resourceType"] != "Observation" {
			if got, _ := codes.Evaluate(e.Resource); len(got) != 0 {
				t.Errorf("%v matched an Observation expression", e.Resource["resourceType"])
			}
			continue
		}
		seen++
		code := e.Resource["code"].(map[string]any)["coding"].([]any)[0].(map[string]any)["code"]
		got, err := codes.Evaluate(e.Resource)
		if err != nil || len(got) == 0 || got[0].Value != code {
			t.Errorf("code of %v = %v, %v; want %v", e.Resource["id"], got, err, code)
		}
		vq, hasQuantity := e.Resource["valueQuantity"].(map[string]any)
		got, err = values.Evaluate(e.Resource)
		if err != nil {
			t.Fatal(err)
		}
		if hasQuantity != (len(got) == 1) || hasQuantity && got[0].Value != vq["value"] {
			t.Errorf("value of %v = %v, want %v", e.Resource["id"], got, vq["value"])
		}
	}
	if seen != 35 {
		t.Errorf("saw %d Observations, want 35", seen)
	}
}

func TestConcurrentEvaluate(t *testing.T) {
	e := MustCompile("Observation.performer.where(resolve() is Practitioner) | Observation.value.as(Quantity)")
	res := decode(t, observation, false)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				got, err := e.Evaluate(res)
				if err != nil || len(got) != 2 {
					t.Errorf("got %v, %v", got, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestLocation: what a path finds knows where it sits (the object, the JSON
// name, the index in the member's array); the resource itself, literals and
// computed values do not. Parent splits off the last element name.
func TestLocation(t *testing.T) {
	var res map[string]any
	if err := json.Unmarshal([]byte(`{"resourceType":"Observation","valueQuantity":{"value":1},"component":[{"code":{"text":"a"}},{"code":{"text":"b"}}],`+
		`"extension":[{"url":"u","valueString":"x"}],"contained":[{"resourceType":"Patient","id":"p"}],"subject":{"reference":"#p"}}`), &res); err != nil {
		t.Fatal(err)
	}
	comps := res["component"].([]any)
	for _, c := range []struct {
		path   string
		parent any
		key    string
		index  int
	}{
		{"Observation.value", res, "valueQuantity", -1},
		{"Observation.component[1]", res, "component", 1},
		{"Observation.component.where(code.text='b').code", comps[1], "code", -1},
		{"Observation.component.code.text.last()", comps[1].(map[string]any)["code"], "text", -1},
		{"Observation.extension('u')", res, "extension", 0},
		{"Observation.subject.resolve()", res, "contained", 0},
	} {
		nodes, err := MustCompile(c.path).Evaluate(res)
		if err != nil || len(nodes) != 1 {
			t.Fatalf("%s: %v %v", c.path, nodes, err)
		}
		parent, key, index, ok := nodes[0].Location()
		if !ok || !sameNode(Node{Value: parent}, Node{Value: c.parent}) || key != c.key || index != c.index {
			t.Errorf("%s: at %v %q %d (%v)", c.path, parent, key, index, ok)
		}
	}
	for _, p := range []string{"Observation", "'x'", "Observation.component.count()", "Observation.value.exists()"} {
		nodes, _ := MustCompile(p).Evaluate(res)
		if len(nodes) != 1 {
			t.Fatalf("%s: %v", p, nodes)
		}
		if _, _, _, ok := nodes[0].Location(); ok {
			t.Errorf("%s has a location", p)
		}
	}
	parent, name, ok := MustCompile("Observation.component[0].code").Parent()
	if !ok || name != "code" || parent.String() != "Observation.component[0]" {
		t.Errorf("Parent: %v %q %v", parent, name, ok)
	}
	if _, _, ok := MustCompile("Observation.component.first()").Parent(); ok {
		t.Error("a function call has no parent element")
	}
}
