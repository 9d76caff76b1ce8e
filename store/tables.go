package store

import (
	"github.com/pfrgateway/caddy-pfr/fhir"
)

// patientCompartmentParams maps a resource type to the search parameters
// that put it in a Patient's compartment (generated in package fhir from
// the official CompartmentDefinition).
var patientCompartmentParams = fhir.PatientCompartment
