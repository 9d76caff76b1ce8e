package fhir

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/pfrgateway/caddy-pfr/fhir/fhirpath"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// Helpers that write the parts of a FHIRPath Patch operation.
func fpOp(typ, path string, parts ...string) string {
	all := append([]string{`{"name":"type","valueCode":"` + typ + `"}`, `{"name":"path","valueString":` + strconvQuote(path) + `}`}, parts...)
	return `{"name":"operation","part":[` + strings.Join(all, ",") + `]}`
}
func fpName(n string) string          { return `{"name":"name","valueString":"` + n + `"}` }
func fpValue(k, v string) string      { return `{"name":"value","` + k + `":` + v + `}` }
func fpInt(name string, n int) string { return fmt.Sprintf(`{"name":%q,"valueInteger":%d}`, name, n) }
func fpParams(ops ...string) string {
	return `{"resourceType":"Parameters","parameter":[` + strings.Join(ops, ",") + `]}`
}
func strconvQuote(s string) string { b, _ := json.Marshal(s); return string(b) }

const fpIdentifiers = `"identifier":[{"system":"http://example.org","value":"value 1"},{"system":"http://example.org","value":"value 2"},{"system":"http://example.org","value":"value 3"},{"system":"http://example.org","value":"value 4"}]`

// fpManyNames is a name list of n HumanNames.
func fpManyNames(n int) string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf(`{"family":"n%d"}`, i))
	}
	return `"name":[` + strings.Join(out, ",") + `]`
}

func fpIDs(values ...int) string {
	var out []string
	for _, v := range values {
		out = append(out, fmt.Sprintf(`{"system":"http://example.org","value":"value %d"}`, v))
	}
	return `"identifier":[` + strings.Join(out, ",") + `]`
}

// TestApplyFHIRPathPatch runs the cases of the FHIR test suite for FHIRPath
// Patch (fhir-test-cases r5/patch/fhir-path-tests.xml, in JSON), then every
// operation's errors.
func TestApplyFHIRPathPatch(t *testing.T) {
	tests := []struct {
		name, doc, params, want string
		status                  int // when want is "", the error status
	}{
		// The FHIR test suite's cases.
		{"no difference", `{"resourceType":"Patient","birthDate":"1920-01-01"}`, fpParams(), `{"resourceType":"Patient","birthDate":"1920-01-01"}`, 0},
		{"replace primitive", `{"resourceType":"Patient","birthDate":"1920-01-01"}`,
			fpParams(fpOp("replace", "Patient.birthDate", fpValue("valueDate", `"1930-01-01"`))), `{"resourceType":"Patient","birthDate":"1930-01-01"}`, 0},
		{"delete primitive", `{"resourceType":"Patient","birthDate":"1920-01-01"}`,
			fpParams(fpOp("delete", "Patient.birthDate")), `{"resourceType":"Patient"}`, 0},
		{"add primitive", `{"resourceType":"Patient"}`,
			fpParams(fpOp("add", "Patient", fpName("birthDate"), fpValue("valueDate", `"1930-01-01"`))), `{"resourceType":"Patient","birthDate":"1930-01-01"}`, 0},
		{"replace nested primitive 1", `{"resourceType":"Patient","contact":[{"name":{"text":"a name"},"gender":"male"}]}`,
			fpParams(fpOp("replace", "Patient.contact[0].gender", fpValue("valueCode", `"female"`))),
			`{"resourceType":"Patient","contact":[{"name":{"text":"a name"},"gender":"female"}]}`, 0},
		{"replace nested primitive 2", `{"resourceType":"Patient","contact":[{"name":{"text":"a name"},"gender":"male"}]}`,
			fpParams(fpOp("replace", "Patient.contact[0].name.text", fpValue("valueString", `"the name"`))),
			`{"resourceType":"Patient","contact":[{"name":{"text":"the name"},"gender":"male"}]}`, 0},
		{"delete nested primitive 1", `{"resourceType":"Patient","contact":[{"name":{"text":"a name"},"gender":"male"}]}`,
			fpParams(fpOp("delete", "Patient.contact[0].gender")), `{"resourceType":"Patient","contact":[{"name":{"text":"a name"}}]}`, 0},
		{"delete nested primitive 2", `{"resourceType":"Patient","contact":[{"name":{"text":"a name"},"gender":"male"}]}`,
			fpParams(fpOp("delete", "Patient.contact[0].name.text")), `{"resourceType":"Patient","contact":[{"name":{},"gender":"male"}]}`, 0},
		{"add nested primitive", `{"resourceType":"Patient","contact":[{"name":{"text":"a name"}}]}`,
			fpParams(fpOp("add", "Patient.contact[0]", fpName("gender"), fpValue("valueCode", `"male"`))),
			`{"resourceType":"Patient","contact":[{"name":{"text":"a name"},"gender":"male"}]}`, 0},
		{"add complex", `{"resourceType":"Patient"}`,
			fpParams(fpOp("add", "Patient", fpName("maritalStatus"), fpValue("valueCodeableConcept", `{"text":"married"}`))),
			`{"resourceType":"Patient","maritalStatus":{"text":"married"}}`, 0},
		{"replace complex", `{"resourceType":"Patient","maritalStatus":{"id":"1","text":"married"}}`,
			fpParams(fpOp("replace", "Patient.maritalStatus", fpValue("valueCodeableConcept", `{"id":"2","text":"not married"}`))),
			`{"resourceType":"Patient","maritalStatus":{"id":"2","text":"not married"}}`, 0},
		{"delete complex", `{"resourceType":"Patient","maritalStatus":{"text":"married"}}`,
			fpParams(fpOp("delete", "Patient.maritalStatus")), `{"resourceType":"Patient"}`, 0},
		{"add anonymous type", `{"resourceType":"Patient"}`,
			fpParams(fpOp("add", "Patient", fpName("contact"), `{"name":"value","part":[{"name":"name","valueHumanName":{"text":"a name"}}]}`)),
			`{"resourceType":"Patient","contact":[{"name":{"text":"a name"}}]}`, 0},
		{"delete anonymous type", `{"resourceType":"Patient","contact":[{"name":{"text":"a name"}}]}`,
			fpParams(fpOp("delete", "Patient.contact[0]")), `{"resourceType":"Patient"}`, 0},
		{"list contents changed", `{"resourceType":"Patient","identifier":[{"id":"a","value":"value 1"},{"id":"b","value":"value 2"}]}`,
			fpParams(fpOp("replace", "Patient.identifier[0].value", fpValue("valueString", `"value 2"`)), fpOp("replace", "Patient.identifier[1].value", fpValue("valueString", `"value 1"`))),
			`{"resourceType":"Patient","identifier":[{"id":"a","value":"value 2"},{"id":"b","value":"value 1"}]}`, 0},
		{"add to list", `{"resourceType":"Patient",` + fpIDs(1, 2) + `}`,
			fpParams(fpOp("insert", "Patient.identifier", fpInt("index", 2), fpValue("valueIdentifier", `{"system":"http://example.org","value":"value 3"}`))),
			`{"resourceType":"Patient",` + fpIDs(1, 2, 3) + `}`, 0},
		{"insert in list 1", `{"resourceType":"Patient",` + fpIDs(1, 2) + `}`,
			fpParams(fpOp("insert", "Patient.identifier", fpInt("index", 1), fpValue("valueIdentifier", `{"system":"http://example.org","value":"value 3"}`))),
			`{"resourceType":"Patient",` + fpIDs(1, 3, 2) + `}`, 0},
		{"insert in list 2", `{"resourceType":"Patient",` + fpIDs(1, 2) + `}`,
			fpParams(fpOp("insert", "Patient.identifier", fpInt("index", 0), fpValue("valueIdentifier", `{"system":"http://example.org","value":"value 3"}`))),
			`{"resourceType":"Patient",` + fpIDs(3, 1, 2) + `}`, 0},
		{"delete from list 1", `{"resourceType":"Patient",` + fpIDs(1, 2, 3) + `}`, fpParams(fpOp("delete", "Patient.identifier[0]")), `{"resourceType":"Patient",` + fpIDs(2, 3) + `}`, 0},
		{"delete from list 2", `{"resourceType":"Patient",` + fpIDs(1, 2, 3) + `}`, fpParams(fpOp("delete", "Patient.identifier[1]")), `{"resourceType":"Patient",` + fpIDs(1, 3) + `}`, 0},
		{"delete from list 3", `{"resourceType":"Patient",` + fpIDs(1, 2, 3) + `}`, fpParams(fpOp("delete", "Patient.identifier[2]")), `{"resourceType":"Patient",` + fpIDs(1, 2) + `}`, 0},
		{"reorder list 1", `{"resourceType":"Patient",` + fpIdentifiers + `}`, fpParams(fpOp("move", "Patient.identifier", fpInt("source", 3), fpInt("destination", 1))), `{"resourceType":"Patient",` + fpIDs(1, 4, 2, 3) + `}`, 0},
		{"reorder list 2", `{"resourceType":"Patient",` + fpIdentifiers + `}`, fpParams(fpOp("move", "Patient.identifier", fpInt("source", 3), fpInt("destination", 0))), `{"resourceType":"Patient",` + fpIDs(4, 1, 2, 3) + `}`, 0},
		{"reorder list 3", `{"resourceType":"Patient",` + fpIdentifiers + `}`, fpParams(fpOp("move", "Patient.identifier", fpInt("source", 3), fpInt("destination", 2))), `{"resourceType":"Patient",` + fpIDs(1, 2, 4, 3) + `}`, 0},
		{"reorder list 4", `{"resourceType":"Patient",` + fpIdentifiers + `}`, fpParams(fpOp("move", "Patient.identifier", fpInt("source", 0), fpInt("destination", 3))), `{"resourceType":"Patient",` + fpIDs(2, 3, 4, 1) + `}`, 0},
		{"reorder list 5 (two moves)", `{"resourceType":"Patient",` + fpIdentifiers + `}`,
			fpParams(fpOp("move", "Patient.identifier", fpInt("source", 1), fpInt("destination", 0)), fpOp("move", "Patient.identifier", fpInt("source", 2), fpInt("destination", 3))),
			`{"resourceType":"Patient",` + fpIDs(2, 1, 4, 3) + `}`, 0},

		// Beyond the suite: choice elements, where(), extensions, primitives' extensions.
		{"add choice by name", `{"resourceType":"Observation","status":"final"}`,
			fpParams(fpOp("add", "Observation", fpName("value"), fpValue("valueQuantity", `{"value":0.1000,"unit":"mg"}`))),
			`{"resourceType":"Observation","status":"final","valueQuantity":{"value":0.1000,"unit":"mg"}}`, 0},
		{"add choice by JSON name", `{"resourceType":"Observation"}`,
			fpParams(fpOp("add", "Observation", fpName("effectiveDateTime"), fpValue("valueDateTime", `"2020-01-01"`))),
			`{"resourceType":"Observation","effectiveDateTime":"2020-01-01"}`, 0},
		{"replace choice changes its type", `{"resourceType":"Observation","valueString":"high"}`,
			fpParams(fpOp("replace", "Observation.value", fpValue("valueQuantity", `{"value":7}`))),
			`{"resourceType":"Observation","valueQuantity":{"value":7}}`, 0},
		{"add second choice refused", `{"resourceType":"Observation","valueString":"high"}`,
			fpParams(fpOp("add", "Observation", fpName("value"), fpValue("valueQuantity", `{"value":7}`))), "", 422},
		{"where", `{"resourceType":"Patient","name":[{"use":"official","family":"A"},{"use":"nickname","given":["B"]}]}`,
			fpParams(fpOp("replace", "Patient.name.where(use='nickname').given[0]", fpValue("valueString", `"C"`))),
			`{"resourceType":"Patient","name":[{"use":"official","family":"A"},{"use":"nickname","given":["C"]}]}`, 0},
		{"add to a repeating primitive", `{"resourceType":"Patient","name":[{"given":["A"]}]}`,
			fpParams(fpOp("add", "Patient.name[0]", fpName("given"), fpValue("valueString", `"B"`))),
			`{"resourceType":"Patient","name":[{"given":["A","B"]}]}`, 0},
		{"add makes the list", `{"resourceType":"Patient"}`,
			fpParams(fpOp("add", "Patient", fpName("identifier"), fpValue("valueIdentifier", `{"value":"x"}`))),
			`{"resourceType":"Patient","identifier":[{"value":"x"}]}`, 0},
		{"insert into an empty list", `{"resourceType":"Patient"}`,
			fpParams(fpOp("insert", "Patient.identifier", fpInt("index", 0), fpValue("valueIdentifier", `{"value":"x"}`))),
			`{"resourceType":"Patient","identifier":[{"value":"x"}]}`, 0},
		{"delete an extension by url", `{"resourceType":"Patient","extension":[{"url":"a","valueString":"1"},{"url":"b","valueString":"2"}]}`,
			fpParams(fpOp("delete", "Patient.extension('a')")),
			`{"resourceType":"Patient","extension":[{"url":"b","valueString":"2"}]}`, 0},
		{"add an extension", `{"resourceType":"Patient"}`,
			fpParams(fpOp("add", "Patient", fpName("extension"), `{"name":"value","part":[{"name":"url","valueUri":"http://e"},{"name":"value","valueDecimal":1.50}]}`)),
			`{"resourceType":"Patient","extension":[{"url":"http://e","valueDecimal":1.50}]}`, 0},
		{"delete a primitive with its extension", `{"resourceType":"Patient","birthDate":"1920","_birthDate":{"extension":[{"url":"x","valueString":"y"}]}}`,
			fpParams(fpOp("delete", "Patient.birthDate")), `{"resourceType":"Patient"}`, 0},
		{"delete a list item keeps extensions aligned", `{"resourceType":"Patient","name":[{"given":["A","B"],"_given":[null,{"id":"b"}]}]}`,
			fpParams(fpOp("delete", "Patient.name[0].given[0]")), `{"resourceType":"Patient","name":[{"given":["B"],"_given":[{"id":"b"}]}]}`, 0},
		{"backbone in backbone (content reference)", `{"resourceType":"Questionnaire","status":"draft","item":[{"linkId":"1","type":"group"}]}`,
			fpParams(fpOp("add", "Questionnaire.item[0]", fpName("item"), `{"name":"value","part":[{"name":"linkId","valueString":"1.1"},{"name":"type","valueCode":"string"}]}`)),
			`{"resourceType":"Questionnaire","status":"draft","item":[{"linkId":"1","type":"group","item":[{"linkId":"1.1","type":"string"}]}]}`, 0},
		{"delete of nothing is nothing", `{"resourceType":"Patient"}`, fpParams(fpOp("delete", "Patient.birthDate")), `{"resourceType":"Patient"}`, 0},
		{"contained by resolve", `{"resourceType":"Observation","contained":[{"resourceType":"Patient","id":"p","gender":"male"}],"subject":{"reference":"#p"}}`,
			fpParams(fpOp("replace", "Observation.subject.resolve().gender", fpValue("valueCode", `"female"`))),
			`{"resourceType":"Observation","contained":[{"resourceType":"Patient","id":"p","gender":"female"}],"subject":{"reference":"#p"}}`, 0},
		{"nested where() past the budget", `{"resourceType":"Patient",` + fpManyNames(60) + `}`,
			fpParams(fpOp("delete", "Patient.name.where(%resource.name.where(%resource.name.where(%resource.name.exists()).exists()).exists()).first()")), "", 422},
		{"nested where() within the budget", `{"resourceType":"Patient",` + fpManyNames(20) + `}`,
			fpParams(fpOp("delete", "Patient.name.where(%resource.name.where(%resource.name.where(%resource.name.exists()).exists()).exists()).first()")),
			`{"resourceType":"Patient",` + strings.Replace(fpManyNames(20), `{"family":"n0"},`, "", 1) + `}`, 0},
		{"all or nothing", `{"resourceType":"Patient","birthDate":"1920"}`,
			fpParams(fpOp("delete", "Patient.birthDate"), fpOp("replace", "Patient.gender", fpValue("valueCode", `"male"`))), "", 422},

		// A patch that cannot apply: 422.
		{"replace finds nothing", `{"resourceType":"Patient"}`, fpParams(fpOp("replace", "Patient.gender", fpValue("valueCode", `"male"`))), "", 422},
		{"replace finds several", `{"resourceType":"Patient",` + fpIDs(1, 2) + `}`, fpParams(fpOp("replace", "Patient.identifier", fpValue("valueIdentifier", `{}`))), "", 422},
		{"delete finds several", `{"resourceType":"Patient",` + fpIDs(1, 2) + `}`, fpParams(fpOp("delete", "Patient.identifier")), "", 422},
		{"add existing single element", `{"resourceType":"Patient","birthDate":"1920"}`,
			fpParams(fpOp("add", "Patient", fpName("birthDate"), fpValue("valueDate", `"1930"`))), "", 422},
		{"add unknown element", `{"resourceType":"Patient"}`, fpParams(fpOp("add", "Patient", fpName("colour"), fpValue("valueString", `"red"`))), "", 422},
		{"add wrong type", `{"resourceType":"Patient"}`,
			fpParams(fpOp("add", "Patient", fpName("maritalStatus"), fpValue("valueQuantity", `{"value":1}`))), "", 422},
		{"add JSON name with another type", `{"resourceType":"Observation"}`,
			fpParams(fpOp("add", "Observation", fpName("valueQuantity"), fpValue("valueString", `"x"`))), "", 422},
		{"add below a primitive", `{"resourceType":"Patient","birthDate":"1920"}`,
			fpParams(fpOp("add", "Patient.birthDate", fpName("id"), fpValue("valueString", `"x"`))), "", 422},
		{"add parts to a data type", `{"resourceType":"Patient"}`,
			fpParams(fpOp("add", "Patient", fpName("maritalStatus"), `{"name":"value","part":[{"name":"text","valueString":"x"}]}`)),
			`{"resourceType":"Patient","maritalStatus":{"text":"x"}}`, 0},
		{"add parts to a primitive", `{"resourceType":"Patient"}`,
			fpParams(fpOp("add", "Patient", fpName("gender"), `{"name":"value","part":[{"name":"text","valueString":"x"}]}`)), "", 422},
		{"add parts to a choice", `{"resourceType":"Observation"}`,
			fpParams(fpOp("add", "Observation", fpName("value"), `{"name":"value","part":[{"name":"value","valueDecimal":1}]}`)), "", 422},
		{"add unknown part", `{"resourceType":"Patient"}`,
			fpParams(fpOp("add", "Patient", fpName("contact"), `{"name":"value","part":[{"name":"colour","valueString":"x"}]}`)), "", 422},
		{"insert beyond the end", `{"resourceType":"Patient",` + fpIDs(1) + `}`,
			fpParams(fpOp("insert", "Patient.identifier", fpInt("index", 2), fpValue("valueIdentifier", `{}`))), "", 422},
		{"insert into a single element", `{"resourceType":"Patient"}`,
			fpParams(fpOp("insert", "Patient.gender", fpInt("index", 0), fpValue("valueCode", `"male"`))), "", 422},
		{"move outside the list", `{"resourceType":"Patient",` + fpIDs(1, 2) + `}`, fpParams(fpOp("move", "Patient.identifier", fpInt("source", 2), fpInt("destination", 0))), "", 422},
		{"move part of a list", `{"resourceType":"Patient",` + fpIDs(1, 2, 3) + `}`,
			fpParams(fpOp("move", "Patient.identifier.where(value!='value 1')", fpInt("source", 1), fpInt("destination", 0))), "", 422},
		{"replace the resource", `{"resourceType":"Patient"}`, fpParams(fpOp("replace", "Patient", fpValue("valueString", `"x"`))), "", 422},
		{"replace the id with another", `{"resourceType":"Patient","id":"a"}`, fpParams(fpOp("replace", "Patient.id", fpValue("valueString", `"b"`))), "", 422},
		{"delete the id", `{"resourceType":"Patient","id":"a"}`, fpParams(fpOp("delete", "Patient.id")), "", 422},

		// A body that is not a FHIRPath Patch: 400.
		{"not Parameters", `{"resourceType":"Patient"}`, `{"resourceType":"Patient"}`, "", 400},
		{"other parameter", `{"resourceType":"Patient"}`, `{"resourceType":"Parameters","parameter":[{"name":"op"}]}`, "", 400},
		{"unknown type", `{"resourceType":"Patient"}`, fpParams(fpOp("merge", "Patient")), "", 400},
		{"missing path", `{"resourceType":"Patient"}`, fpParams(`{"name":"operation","part":[{"name":"type","valueCode":"delete"}]}`), "", 400},
		{"missing value", `{"resourceType":"Patient"}`, fpParams(fpOp("replace", "Patient.gender")), "", 400},
		{"missing name", `{"resourceType":"Patient"}`, fpParams(fpOp("add", "Patient", fpValue("valueCode", `"male"`))), "", 400},
		{"missing index", `{"resourceType":"Patient"}`, fpParams(fpOp("insert", "Patient.name", fpValue("valueHumanName", `{}`))), "", 400},
		{"part not allowed", `{"resourceType":"Patient"}`, fpParams(fpOp("delete", "Patient.gender", fpInt("index", 0))), "", 400},
		{"repeated part", `{"resourceType":"Patient"}`, fpParams(fpOp("delete", "Patient.gender", `{"name":"path","valueString":"Patient.name"}`)), "", 400},
		{"negative index", `{"resourceType":"Patient"}`, fpParams(fpOp("insert", "Patient.name", fpInt("index", -1), fpValue("valueHumanName", `{}`))), "", 400},
		{"bad path", `{"resourceType":"Patient"}`, fpParams(fpOp("delete", "Patient.name.(")), "", 400},
		{"unsupported function", `{"resourceType":"Patient"}`, fpParams(fpOp("delete", "Patient.name.single()")), "", 400},
		{"two values", `{"resourceType":"Patient"}`, fpParams(fpOp("replace", "Patient.gender", `{"name":"value","valueCode":"male","valueString":"x"}`)), "", 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			doc := testkit.DecodeFHIR(t, []byte(tc.doc))
			before := deepCopy(doc)
			patch, err := ParsePatch("application/fhir+json", []byte(tc.params))
			var got map[string]any
			if err == nil {
				got, err = patch.Apply(doc)
			}
			if !reflect.DeepEqual(doc, before) {
				t.Errorf("the input document was modified: %v", doc)
			}
			if tc.want == "" {
				var fe *Error
				if !errors.As(err, &fe) || fe.Status != tc.status {
					t.Fatalf("got %v, %v; want status %d", got, err, tc.status)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := testkit.DecodeFHIR(t, []byte(tc.want))
			if !reflect.DeepEqual(got, want) {
				gotJSON, _ := json.Marshal(got)
				t.Errorf("got  %s\nwant %s", gotJSON, tc.want)
			}
		})
	}
}

// TestParsePatch: the media type picks the kind; a Bundle entry's Binary
// or Parameters gives the same patch.
func TestParsePatch(t *testing.T) {
	doc := testkit.DecodeFHIR(t, []byte(`{"resourceType":"Observation","id":"o","status":"final","valueQuantity":{"value":0.1000}}`))
	jsonPatch := `[{"op":"replace","path":"/status","value":"amended"}]`
	fhirPatch := fpParams(fpOp("replace", "Observation.status", fpValue("valueCode", `"amended"`)))
	want := `{"resourceType":"Observation","id":"o","status":"amended","valueQuantity":{"value":0.1000}}`
	binary := `{"resourceType":"Binary","contentType":"application/json-patch+json","data":"` + base64.StdEncoding.EncodeToString([]byte(jsonPatch)) + `"}`
	for _, tc := range []struct {
		name string
		get  func() (*Patch, error)
		kind string
	}{
		{"json patch", func() (*Patch, error) {
			return ParsePatch("application/json-patch+json; charset=utf-8", []byte(jsonPatch))
		}, "JSON Patch"},
		{"fhirpath patch", func() (*Patch, error) { return ParsePatch("application/fhir+json", []byte(fhirPatch)) }, "FHIRPath Patch"},
		{"json fhirpath patch", func() (*Patch, error) { return ParsePatch("application/json", []byte(fhirPatch)) }, "FHIRPath Patch"},
		{"entry binary", func() (*Patch, error) { return PatchFromResource(testkit.DecodeFHIR(t, []byte(binary))) }, "JSON Patch"},
		{"entry parameters", func() (*Patch, error) { return PatchFromResource(testkit.DecodeFHIR(t, []byte(fhirPatch))) }, "FHIRPath Patch"},
	} {
		p, err := tc.get()
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if p.Kind() != tc.kind {
			t.Errorf("%s: kind %s", tc.name, p.Kind())
		}
		got, err := p.Apply(doc)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !fhirpath.JSONEqual(got, testkit.DecodeFHIR(t, []byte(want))) {
			t.Errorf("%s: got %v", tc.name, got)
		}
		// The untouched decimal keeps its text.
		if b, _ := json.Marshal(got["valueQuantity"]); string(b) != `{"value":0.1000}` {
			t.Errorf("%s: valueQuantity became %s", tc.name, b)
		}
	}
	for name, tc := range map[string]struct {
		get    func() (*Patch, error)
		status int
	}{
		"xml":                     {func() (*Patch, error) { return ParsePatch("application/fhir+xml", []byte(`<Parameters/>`)) }, http.StatusUnsupportedMediaType},
		"json patch as fhir+json": {func() (*Patch, error) { return ParsePatch("application/fhir+json", []byte(" \n"+jsonPatch)) }, http.StatusUnsupportedMediaType},
		"no content type":         {func() (*Patch, error) { return ParsePatch("", []byte(jsonPatch)) }, http.StatusUnsupportedMediaType},
		"merge patch":             {func() (*Patch, error) { return ParsePatch("application/merge-patch+json", []byte(`{}`)) }, http.StatusUnsupportedMediaType},
		"json patch invalid":      {func() (*Patch, error) { return ParsePatch("application/json-patch+json", []byte(`[{"op":"x"}]`)) }, http.StatusBadRequest},
		"duplicate member": {func() (*Patch, error) {
			return ParsePatch("application/json-patch+json", []byte(`[{"op":"add","op":"remove","path":"/a"}]`))
		}, http.StatusBadRequest},
		"binary other type": {func() (*Patch, error) {
			return PatchFromResource(map[string]any{"resourceType": "Binary", "contentType": "text/plain", "data": "W10="})
		}, http.StatusBadRequest},
		"binary bad base64": {func() (*Patch, error) {
			return PatchFromResource(map[string]any{"resourceType": "Binary", "contentType": MediaTypeJSONPatch, "data": "%%"})
		}, http.StatusBadRequest},
		"entry observation": {func() (*Patch, error) { return PatchFromResource(map[string]any{"resourceType": "Observation"}) }, http.StatusBadRequest},
	} {
		_, err := tc.get()
		if fe := AsError(err); err == nil || fe.Status != tc.status {
			t.Errorf("%s: %v, want %d", name, err, tc.status)
		}
	}
	// A JSON Patch that changes the id or type is refused by Apply.
	for _, p := range []string{`[{"op":"replace","path":"/id","value":"x"}]`, `[{"op":"replace","path":"/resourceType","value":"Patient"}]`, `[{"op":"remove","path":"/id"}]`} {
		patch, err := ParsePatch(MediaTypeJSONPatch, []byte(p))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := patch.Apply(doc); AsError(err).Status != http.StatusUnprocessableEntity {
			t.Errorf("%s: %v", p, err)
		}
	}
}

// FuzzFHIRPathPatch: no Parameters and no resource make ApplyFHIRPathPatch
// panic or return something other than a *Error; the input is never
// changed; a result keeps the resource's type and id.
func FuzzFHIRPathPatch(f *testing.F) {
	doc := `{"resourceType":"Patient","id":"p","name":[{"given":["A","B"],"_given":[null,{"id":"x"}]}],"contact":[{"name":{"text":"c"}}],` +
		`"extension":[{"url":"u","valueString":"v"}],"contained":[{"resourceType":"Patient","id":"c"}],"birthDate":"1920"}`
	for _, p := range []string{
		fpParams(fpOp("replace", "Patient.birthDate", fpValue("valueDate", `"1930"`))),
		fpParams(fpOp("insert", "Patient.name[0].given", fpInt("index", 1), fpValue("valueString", `"C"`))),
		fpParams(fpOp("move", "Patient.name[0].given", fpInt("source", 1), fpInt("destination", 0))),
		fpParams(fpOp("add", "Patient", fpName("contact"), `{"name":"value","part":[{"name":"name","valueHumanName":{"text":"a"}}]}`)),
		fpParams(fpOp("delete", "Patient.extension('u')")),
		fpParams(fpOp("replace", "Patient.contained.resolve()", fpValue("valueString", `"x"`))),
		fpParams(fpOp("add", "%resource", fpName("gender"), fpValue("valueCode", `"male"`))),
	} {
		f.Add(doc, p)
	}
	f.Fuzz(func(t *testing.T, docJSON, params string) {
		d, err := DecodeResource([]byte(docJSON))
		if err != nil {
			return
		}
		patch, err := ParsePatch("application/fhir+json", []byte(params))
		if err != nil {
			if AsError(err).Status >= 500 {
				t.Fatalf("parse: %v", err)
			}
			return
		}
		before, _ := json.Marshal(d)
		got, err := patch.Apply(d)
		if after, _ := json.Marshal(d); string(after) != string(before) {
			t.Fatalf("the input changed: %s → %s", before, after)
		}
		if err != nil {
			var fe *Error
			if !errors.As(err, &fe) || fe.Status >= 500 {
				t.Fatalf("apply: %v", err)
			}
			return
		}
		if got["resourceType"] != d["resourceType"] || got["id"] != d["id"] {
			t.Fatalf("type or id changed: %v", got)
		}
		if _, err := json.Marshal(got); err != nil {
			t.Fatalf("the result does not encode: %v", err)
		}
	})
}
