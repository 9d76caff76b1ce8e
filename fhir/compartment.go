package fhir

//go:generate go run ./internal/gencompartment

import (
	"fmt"
	"strings"

	"github.com/pfrgateway/caddy-pfr/fhir/fhirpath"
	"github.com/pfrgateway/caddy-pfr/fhir/searchparam"
)

// InPatientCompartment reports whether resources of resourceType can belong
// to a Patient compartment (Patient itself included).
func InPatientCompartment(resourceType string) bool {
	return len(PatientCompartment[resourceType]) > 0
}

// CompartmentReferences returns the reference strings, as written
// ("Patient/123", "https://…/Patient/123", "urn:uuid:…", "#p1"), that the
// Patient-compartment search parameters of res's type find in res. These
// are the references that can put res into a Patient's compartment; for a
// Patient they are its link.other references. Duplicates are removed, order
// is kept. A resource of a type outside the compartment gives nil.
//
// Some parameters only count references to Patients
// (subject.where(resolve() is Patient)). A reference whose type cannot be
// read from it, such as "urn:uuid:…", is assumed to point to a Patient and
// is returned, so that a caller checking ownership sees it; use
// CompartmentReferencesResolving to resolve such references instead.
// Compartment parameters such as performer also list non-Patient
// references (Practitioner/1): callers decide what each one means.
// References by identifier alone have no reference string and are not
// returned.
func CompartmentReferences(res map[string]any) ([]string, error) {
	return CompartmentReferencesResolving(res, nil)
}

// CompartmentReferencesResolving is CompartmentReferences with a resolver
// for references whose target type cannot be read from the string, such as
// the "urn:uuid:…" fullUrls of a Bundle's entries. References that resolve
// returns false for are assumed to point to a Patient.
func CompartmentReferencesResolving(res map[string]any, resolve fhirpath.Resolver) ([]string, error) {
	resourceType, _ := res["resourceType"].(string)
	codes := PatientCompartment[resourceType]
	if len(codes) == 0 {
		return nil, nil
	}
	env := &fhirpath.Env{Resolve: func(ref string) (map[string]any, bool) {
		if strings.HasPrefix(ref, "#") {
			return nil, false
		}
		if _, _, ok := fhirpath.SplitReference(ref); ok {
			return nil, false
		}
		if resolve != nil {
			if target, ok := resolve(ref); ok {
				return target, true
			}
		}
		return map[string]any{"resourceType": "Patient"}, true
	}}
	var refs []string
	seen := map[string]bool{}
	for _, code := range codes {
		p, ok := searchparam.Lookup(resourceType, code)
		if !ok {
			return nil, fmt.Errorf("patient compartment of %s: no search parameter %q", resourceType, code)
		}
		expr, err := p.Compiled()
		if err != nil {
			return nil, fmt.Errorf("patient compartment of %s: %w", resourceType, err)
		}
		nodes, err := expr.EvaluateEnv(res, env)
		if err != nil {
			return nil, fmt.Errorf("patient compartment of %s, parameter %s: %w", resourceType, code, err)
		}
		for _, n := range nodes {
			m, _ := n.Value.(map[string]any)
			ref, _ := m["reference"].(string)
			if ref != "" && !seen[ref] {
				seen[ref] = true
				refs = append(refs, ref)
			}
		}
	}
	return refs, nil
}
