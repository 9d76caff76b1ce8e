package store

import (
	"net/http"
	"net/url"

	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/fhir/fhirpath"
	"github.com/pfrgateway/caddy-pfr/fhir/search"
)

// compartmentSearch answers GET Patient/{id}/{Type}: the search of Type
// among the resources of the Patient's compartment, as the R4
// CompartmentDefinition puts them there (the Patient itself for
// Patient/{id}/Patient, with the Patients that link to it). Only the
// Patient compartment is supported.
func (q *request) compartmentSearch(compartment, id, typ string, params url.Values) error {
	if compartment != "Patient" {
		return fhir.Errorf(http.StatusBadRequest, fhir.CodeNotSupported,
			"compartment search is supported in the Patient compartment only, not %s", compartment)
	}
	if typ != "Patient" && !fhir.InPatientCompartment(typ) {
		return fhir.Errorf(http.StatusBadRequest, fhir.CodeNotSupported,
			"%s is never in a Patient compartment", typ)
	}
	return q.searchWithin(typ, "/Patient/"+id+"/"+typ, params, inPatientCompartment(id), patientCompartmentFilters(typ, id))
}

// patientCompartmentFilters are the index filters one of which every
// resource of typ in the compartment of Patient/id has a key in: its
// compartment parameters pointing at the patient (and for Patient, the
// patient itself by id).
func patientCompartmentFilters(typ, id string) []search.IndexFilter {
	var out []search.IndexFilter
	if typ == "Patient" {
		out = append(out, search.IndexFilter{Param: "_id", Ranges: []search.KeyRange{search.IDRange(id)}})
	}
	for _, code := range fhir.PatientCompartment[typ] {
		out = append(out, search.ReferenceFilter(code, "Patient", id))
	}
	return out
}

// inPatientCompartment reports whether a resource is in the compartment of
// Patient/id: the Patient itself, or a resource whose compartment
// parameters refer to it.
func inPatientCompartment(id string) func(res map[string]any) bool {
	return func(res map[string]any) bool {
		if res["resourceType"] == "Patient" && res["id"] == id {
			return true
		}
		refs, err := fhir.CompartmentReferences(res)
		if err != nil {
			return false
		}
		for _, ref := range refs {
			if typ, rid, ok := fhirpath.SplitReference(ref); ok && typ == "Patient" && rid == id {
				return true
			}
		}
		return false
	}
}
