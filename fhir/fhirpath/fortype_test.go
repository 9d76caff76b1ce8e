package fhirpath

import "testing"

// ForType leaves out only the union operands that surely give nothing on
// a resource of the type.
func TestForType(t *testing.T) {
	obs := map[string]any{"resourceType": "Observation", "status": "final", "code": map[string]any{"text": "x"}}
	for _, c := range []struct{ expr, want string }{
		{"Patient.name | Observation.code", "Observation.code|"},
		{"Patient.name | Practitioner.name", "empty"},
		{"Observation.code | Patient.name | Observation.status", "Observation.code|Observation.status"},
		{"(Patient.deceased as dateTime) | Observation.status", "Observation.status|"},
		{"Patient.link.other.where(resolve() is Patient) | Observation.status", "Observation.status|"},
		{"Resource.id | Patient.id", "Resource.id|"},
		{"DomainResource.text | Patient.id", "DomainResource.text|"},
		{"Observation.code", "same"},
		{"Patient.name", "empty"},
		{"Patient.name.exists() | Observation.status", "same"},
		{"Patient.name.empty() | Observation.status", "same"},
		{"Patient.extension('u') | Observation.status", "same"},
		{"Patient.name.count() | Observation.status", "same"},
		{"name | Observation.status", "same"},
		{"%resource.id | Patient.id", "%resource.id|"},
	} {
		e := MustCompile(c.expr)
		got := e.ForType("Observation")
		switch c.want {
		case "same":
			if got != e {
				t.Errorf("%s: pruned, must be kept whole", c.expr)
			}
			continue
		case "empty":
			if _, ok := got.root.(emptyNode); !ok {
				t.Errorf("%s: got %#v, want nothing", c.expr, got.root)
			}
		}
		if got == e {
			t.Errorf("%s: not pruned", c.expr)
		}
		// What it gives on an Observation is unchanged.
		want, werr := e.Evaluate(obs)
		have, herr := got.Evaluate(obs)
		if len(want) != len(have) || (werr == nil) != (herr == nil) {
			t.Errorf("%s: %v (%v), whole: %v (%v)", c.expr, have, herr, want, werr)
		}
	}
}
