package fhir

import (
	"strings"
	"testing"
)

func TestCheckNewPatient(t *testing.T) {
	o := Owner{Bases: []string{"https://alice.pfr.example/fhir"}}
	p := DefaultOwnershipPolicy()
	ok := []map[string]any{
		{"resourceType": "Patient", "name": []any{map[string]any{"family": "Smith"}}},
		{"resourceType": "Patient", "contained": []any{map[string]any{"resourceType": "Organization", "id": "o"}},
			"managingOrganization": map[string]any{"reference": "#o"}},
		{"resourceType": "Patient", "generalPractitioner": []any{map[string]any{"identifier": map[string]any{"value": "123"}, "display": "Dr X"}}},
	}
	for i, res := range ok {
		if issues := o.CheckNewPatient(res, "patient", p); len(issues) != 0 {
			t.Errorf("ok %d refused: %v", i, issues)
		}
		if _, has := res["id"]; has {
			t.Errorf("ok %d: CheckNewPatient changed its argument", i)
		}
	}
	bad := map[string]map[string]any{
		"link to another Patient": {"resourceType": "Patient", "link": []any{map[string]any{"other": map[string]any{"reference": "Patient/bob"}, "type": "seealso"}}},
		"absolute link":           {"resourceType": "Patient", "link": []any{map[string]any{"other": map[string]any{"reference": "https://alice.pfr.example/fhir/Patient/bob"}}}},
		"another record's doctor": {"resourceType": "Patient", "generalPractitioner": []any{map[string]any{"reference": "Practitioner/bobs-doctor"}}},
		"organization":            {"resourceType": "Patient", "managingOrganization": map[string]any{"reference": "Organization/1"}},
		"contained Patient":       {"resourceType": "Patient", "contained": []any{map[string]any{"resourceType": "Patient", "id": "p"}}},
		"conditional":             {"resourceType": "Patient", "generalPractitioner": []any{map[string]any{"reference": "Practitioner?identifier=x"}}},
		"external":                {"resourceType": "Patient", "generalPractitioner": []any{map[string]any{"reference": "https://evil.example/fhir/Practitioner/1"}}},
		"in an extension":         {"resourceType": "Patient", "extension": []any{map[string]any{"url": "x", "valueReference": map[string]any{"reference": "Condition/c"}}}},
	}
	for name, res := range bad {
		issues := o.CheckNewPatient(res, "patient", p)
		if len(issues) == 0 {
			t.Errorf("%s: accepted", name)
			continue
		}
		if !strings.HasPrefix(strings.Join(issues[0].Expression, ""), "patient") {
			t.Errorf("%s: issue without its path: %+v", name, issues[0])
		}
	}
}
