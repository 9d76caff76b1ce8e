package store

import (
	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/fhir/searchparam"
)

// isResourceType reports whether name is a FHIR R4 resource type.
func isResourceType(name string) bool { return searchparam.IsResourceType(name) }

// patientCompartmentParams maps a resource type to the search parameters
// that put it in a Patient's compartment (generated in package fhir from
// the official CompartmentDefinition).
var patientCompartmentParams = fhir.PatientCompartment
