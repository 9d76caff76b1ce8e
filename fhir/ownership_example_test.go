package fhir_test

import (
	"errors"
	"fmt"

	"github.com/pfrgateway/caddy-pfr/fhir"
)

// The gateway decodes a transaction strictly, checks it against the PFR
// and answers 422 with the issues when anything in it belongs to someone
// else.
func ExampleOwner_CheckBundle() {
	owner := fhir.Owner{PatientID: "p1", Bases: []string{"https://john.pfr.example.com/fhir"}}
	body := []byte(`{"resourceType":"Bundle","type":"transaction","entry":[
	  {"fullUrl":"urn:uuid:0b6a8e2c-1f3d-4c5e-9a7b-2d4f6e8a0c1e",
	   "resource":{"resourceType":"Patient","id":"p1"},
	   "request":{"method":"PUT","url":"Patient/p1"}},
	  {"resource":{"resourceType":"Observation","status":"final","code":{"text":"weight"},
	     "subject":{"reference":"urn:uuid:0b6a8e2c-1f3d-4c5e-9a7b-2d4f6e8a0c1e"}},
	   "request":{"method":"POST","url":"Observation"}},
	  {"resource":{"resourceType":"Observation","status":"final","code":{"text":"weight"},
	     "subject":{"reference":"Patient/p1"},"performer":[{"reference":"Patient/p2"}]},
	   "request":{"method":"POST","url":"Observation"}}]}`)
	bundle, err := fhir.DecodeResource(body)
	if err != nil {
		fmt.Println(err)
		return
	}
	err = fhir.OwnershipError(owner.CheckBundle(bundle, fhir.DefaultOwnershipPolicy()))
	var fe *fhir.Error
	if errors.As(err, &fe) {
		for _, is := range fe.Issues {
			fmt.Println(fe.Status, is.Expression, is.Diagnostics)
		}
	}
	// Output:
	// 422 [Bundle.entry[2].resource.performer[0]] reference "Patient/p2": Patient/p2 is not this record's Patient (Patient/p1)
}

// A direct PATCH is applied to the stored resource and the result checked
// as the update it becomes.
func ExampleApplyJSONPatch() {
	owner := fhir.Owner{PatientID: "p1"}
	stored := map[string]any{
		"resourceType": "Observation", "id": "o1", "status": "final",
		"code": map[string]any{"text": "weight"}, "subject": map[string]any{"reference": "Patient/p1"},
	}
	patched, err := fhir.ApplyJSONPatch(stored, []byte(`[{"op":"replace","path":"/subject/reference","value":"Patient/p2"}]`))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, is := range owner.CheckWrite("PATCH", "Observation/o1", "", patched, fhir.DefaultOwnershipPolicy()) {
		fmt.Println(is.Expression, is.Diagnostics)
	}
	// Output:
	// [Observation.subject] reference "Patient/p2": Patient/p2 is not this record's Patient (Patient/p1)
	// [Observation] this Observation does not reference this record's Patient (Patient/p1) in any of subject, performer; references by identifier, to contained resources or to Groups do not count
}
