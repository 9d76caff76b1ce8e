package fhir

import (
	"bytes"
	"encoding/json"
	"os"
	"slices"
	"testing"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// syntheaBundle is one decoded Synthea transaction Bundle.
type syntheaBundle struct {
	Entry []struct {
		FullURL  string         `json:"fullUrl"`
		Resource map[string]any `json:"resource"`
	} `json:"entry"`
}

func loadSynthea(t *testing.T) map[string]syntheaBundle {
	t.Helper()
	out := map[string]syntheaBundle{}
	for name, data := range testkit.Synthea(t) {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		var b syntheaBundle
		if err := dec.Decode(&b); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out[name] = b
	}
	return out
}

func TestPatientCompartmentTable(t *testing.T) {
	data, err := os.ReadFile(testkit.FHIRPath(t, "compartmentdefinition-patient.r4.json"))
	if err != nil {
		t.Fatal(err)
	}
	var def struct {
		Resource []struct {
			Code  string
			Param []string
		}
	}
	if err := json.Unmarshal(data, &def); err != nil {
		t.Fatal(err)
	}
	in := 0
	for _, r := range def.Resource {
		if got := PatientCompartment[r.Code]; !slices.Equal(got, r.Param) {
			t.Errorf("%s: table %v, definition %v", r.Code, got, r.Param)
		}
		if InPatientCompartment(r.Code) != (len(r.Param) > 0) {
			t.Errorf("InPatientCompartment(%s) wrong", r.Code)
		}
		if len(r.Param) > 0 {
			in++
		}
	}
	if in != len(PatientCompartment) || in < 60 {
		t.Errorf("table has %d types, definition %d", len(PatientCompartment), in)
	}
	for typ, want := range map[string]bool{
		"Patient": true, "Observation": true, "Claim": true, "Encounter": true,
		"Practitioner": false, "Organization": false, "Medication": false, "Location": false,
		"Device": false, "Bundle": false, "": false, "NotAType": false,
	} {
		if InPatientCompartment(typ) != want {
			t.Errorf("InPatientCompartment(%q) != %v", typ, want)
		}
	}
	if !slices.Equal(PatientCompartment["Patient"], []string{"link"}) {
		t.Errorf("Patient params = %v", PatientCompartment["Patient"])
	}
}

// TestCompartmentReferencesSynthea checks every resource of the six Synthea
// Bundles: each one of a compartment type other than Patient names the
// Bundle's Patient; the others give nothing.
func TestCompartmentReferencesSynthea(t *testing.T) {
	for name, b := range loadSynthea(t) {
		patientURL := ""
		byURL := map[string]map[string]any{}
		for _, e := range b.Entry {
			byURL[e.FullURL] = e.Resource
			if e.Resource["resourceType"] == "Patient" {
				patientURL = e.FullURL
			}
		}
		if patientURL == "" {
			t.Fatalf("%s: no Patient", name)
		}
		resolver := func(ref string) (map[string]any, bool) {
			r, ok := byURL[ref]
			return r, ok
		}
		checked := 0
		for i, e := range b.Entry {
			typ := e.Resource["resourceType"].(string)
			for _, resolving := range []bool{false, true} {
				var refs []string
				var err error
				if resolving {
					refs, err = CompartmentReferencesResolving(e.Resource, resolver)
				} else {
					refs, err = CompartmentReferences(e.Resource)
				}
				if err != nil {
					t.Fatalf("%s entry %d: %v", name, i, err)
				}
				switch {
				case !InPatientCompartment(typ):
					if refs != nil {
						t.Errorf("%s entry %d %s: refs %v outside the compartment", name, i, typ, refs)
					}
				case typ == "Patient":
					if len(refs) != 0 {
						t.Errorf("%s: Patient refs %v", name, refs)
					}
				default:
					checked++
					if !slices.Contains(refs, patientURL) {
						t.Errorf("%s entry %d %s (resolving=%v): refs %v lack %s", name, i, typ, resolving, refs, patientURL)
					}
					for _, r := range refs {
						if target, ok := byURL[r]; resolving && ok && target["resourceType"] != "Patient" && r != patientURL {
							// Only parameters without a Patient filter may list others.
							if typ == "Encounter" || typ == "Condition" || typ == "Immunization" {
								t.Errorf("%s %s: non-Patient ref %s", name, typ, r)
							}
						}
					}
				}
			}
		}
		if checked < 50 {
			t.Errorf("%s: only %d compartment resources checked", name, checked)
		}
	}
}

func TestCompartmentReferencesCases(t *testing.T) {
	cases := []struct {
		name string
		res  string
		want []string
	}{
		{"relative subject", `{"resourceType":"Observation","subject":{"reference":"Patient/1"}}`, []string{"Patient/1"}},
		{"absolute subject", `{"resourceType":"Condition","subject":{"reference":"https://h/fhir/Patient/1"}}`, []string{"https://h/fhir/Patient/1"}},
		{"no subject", `{"resourceType":"Observation","status":"final"}`, nil},
		{"identifier only", `{"resourceType":"Observation","subject":{"identifier":{"value":"x"}}}`, nil},
		{"group subject on patient-filtered param", `{"resourceType":"Encounter","subject":{"reference":"Group/1"}}`, nil},
		{"performer listed", `{"resourceType":"Observation","subject":{"reference":"Patient/1"},"performer":[{"reference":"Practitioner/2"},{"reference":"Patient/1"}]}`, []string{"Patient/1", "Practitioner/2"}},
		{"contained patient", `{"resourceType":"Encounter","contained":[{"resourceType":"Patient","id":"c"}],"subject":{"reference":"#c"}}`, []string{"#c"}},
		{"urn uuid assumed patient", `{"resourceType":"Encounter","subject":{"reference":"urn:uuid:1"}}`, []string{"urn:uuid:1"}},
		{"patient link", `{"resourceType":"Patient","id":"1","link":[{"other":{"reference":"Patient/2"},"type":"seealso"}]}`, []string{"Patient/2"}},
		{"outside compartment", `{"resourceType":"Practitioner","id":"1"}`, nil},
		{"no resourceType", `{"subject":{"reference":"Patient/1"}}`, nil},
		{"wrong shape ignored", `{"resourceType":"Observation","subject":"Patient/1"}`, nil},
		{"claim patient and payee", `{"resourceType":"Claim","patient":{"reference":"Patient/1"},"payee":{"party":{"reference":"RelatedPerson/3"}}}`, []string{"Patient/1", "RelatedPerson/3"}},
		{"coverage beneficiary", `{"resourceType":"Coverage","beneficiary":{"reference":"Patient/9"}}`, []string{"Patient/9"}},
	}
	for _, c := range cases {
		var res map[string]any
		if err := json.Unmarshal([]byte(c.res), &res); err != nil {
			t.Fatal(err)
		}
		got, err := CompartmentReferences(res)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("%s: got %v, %v; want %v", c.name, got, err, c.want)
		}
	}
}

func TestCompartmentReferencesResolverSaysNotPatient(t *testing.T) {
	res := map[string]any{"resourceType": "Encounter", "subject": map[string]any{"reference": "urn:uuid:g"}}
	got, err := CompartmentReferencesResolving(res, func(string) (map[string]any, bool) {
		return map[string]any{"resourceType": "Group"}, true
	})
	if err != nil || len(got) != 0 {
		t.Fatalf("got %v, %v", got, err)
	}
}
