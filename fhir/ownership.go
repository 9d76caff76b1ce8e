package fhir

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// Owner describes the Personal FHIR Record a write must belong to.
type Owner struct {
	// PatientID is the id of the PFR's own Patient. An Owner without one
	// accepts nothing.
	PatientID string
	// Bases are the PFR's own absolute FHIR bases, such as
	// "https://john.pfr.localhost:8443/fhir" (a trailing slash is ignored).
	// An absolute reference counts as local only when it starts with one of
	// them exactly: another scheme, port, host or path is another server.
	Bases []string
}

// OwnershipPolicy says what may be written besides the PFR's own Patient
// and the resources of that Patient's compartment.
type OwnershipPolicy struct {
	// AllowedTypes are the resource types outside every Patient
	// compartment that may be written. They must still not reference a
	// Patient other than the PFR's.
	AllowedTypes map[string]bool
	// ExternalReferences allows absolute references to other servers when
	// their target type can be read from the URL and is neither Patient
	// nor Group (a drop-off from a hospital may name its Practitioner on
	// the hospital's server). Off by default: such a reference cannot be
	// checked.
	ExternalReferences bool
}

// DefaultOwnershipPolicy returns the policy the gateway uses unless
// configured otherwise. Its allowed types hold no data about a person and
// can reference no Patient except through elements the reference check
// covers:
//
//   - Practitioner, PractitionerRole, Organization, Location,
//     HealthcareService, Endpoint: directory entries for the people and
//     places that gave care, which Synthea and most documents carry along;
//     they reference only each other.
//   - Medication, Substance: product descriptions referenced by
//     MedicationRequest, AllergyIntolerance and the like.
//   - Device: the device a measurement came from or an implant. R4 puts it
//     in no compartment although Device.patient exists; the reference check
//     refuses any Patient there other than the PFR's, so a Device is either
//     unattached or this person's.
//
// Deliberately absent: Bundle (its entries cannot be proved to be this
// person's: a transaction or batch is checked entry by entry, a document is
// picked up through the drop-off), Binary (opaque content), conformance and
// infrastructure resources such as SearchParameter, StructureDefinition or
// Subscription (they change how the upstream behaves or send data
// elsewhere).
func DefaultOwnershipPolicy() OwnershipPolicy {
	allowed := map[string]bool{}
	for _, t := range []string{
		"Practitioner", "PractitionerRole", "Organization", "Location",
		"HealthcareService", "Endpoint", "Medication", "Substance", "Device",
	} {
		allowed[t] = true
	}
	return OwnershipPolicy{AllowedTypes: allowed}
}

// selfReference returns "Patient/{id}" of the PFR's Patient.
func (o Owner) selfReference() string { return "Patient/" + o.PatientID }

// CheckResource checks one resource about to be written and returns what
// is wrong with it, or nil when it belongs to the PFR. loc is the FHIRPath
// location of res used in the issues' expressions, such as "Observation" for
// a direct write or "Bundle.entry[3].resource" inside a Bundle. uuids maps
// the fullUrls ("urn:uuid:…", "urn:oid:…") of the Bundle being written to
// the "Type/id" (or just "Type" for a create) they stand for; it is nil
// outside a Bundle.
//
// The rules:
//   - a Patient must be the PFR's own, by id. CheckResource cannot tell a
//     create from an update: the caller refuses a create of a Patient
//     (CheckWrite and CheckBundle do), since the server would give it a new
//     id;
//   - a resource of a Patient-compartment type must reference the PFR's
//     Patient in at least one of its compartment elements (an Observation
//     without subject belongs to nobody); a reference by identifier alone, to
//     a contained resource or to a Group proves nothing, and a Group there is
//     refused because it stands for other people;
//   - a resource of a type in no Patient compartment must be in
//     p.AllowedTypes;
//   - everywhere in the resource (contained resources, extensions, nested
//     resources included) every reference must be one of: the PFR's Patient
//     ("Patient/{id}", optionally with /_history/{vid}, relative or behind
//     one of the Owner's bases), another local resource that is not a
//     Patient ("Type/id"), a fullUrl of the same Bundle listed in uuids, or a
//     contained resource that is not a Patient. A reference to any other
//     Patient, to a contained Patient, to another server (unless
//     p.ExternalReferences), a conditional reference ("Patient?identifier=…"),
//     or anything that does not parse strictly ("patient/1", "Patient/1/",
//     look-alike letters) is refused. A Patient embedded in the resource
//     (contained, or inside a nested Bundle) is refused: it is another
//     person's record inside this one.
func (o Owner) CheckResource(res map[string]any, loc string, p OwnershipPolicy, uuids map[string]string) []Issue {
	if o.PatientID == "" || !IsID(o.PatientID) {
		return []Issue{ownershipIssue(CodeException, loc, "this record has no valid Patient id; nothing can be written")}
	}
	typ, _ := res["resourceType"].(string)
	if typ == "" || !IsResourceType(typ) {
		return []Issue{ownershipIssue(CodeInvalid, joinPath(loc, "resourceType"), fmt.Sprintf("unknown resourceType %q", typ))}
	}
	c := o.newRefChecker(res, p, uuids)
	c.walk(res, loc, true)
	issues := c.issues
	switch {
	case typ == "Patient":
		id, _ := res["id"].(string)
		switch {
		case id == "":
			issues = append(issues, ownershipIssue(CodeBusinessRule, loc,
				"a Patient without id would be a new Patient: this record holds only its own Patient "+o.selfReference()))
		case id != o.PatientID:
			issues = append(issues, ownershipIssue(CodeBusinessRule, joinPath(loc, "id"),
				fmt.Sprintf("Patient/%s is not this record's Patient (%s)", id, o.selfReference())))
		}
	case InPatientCompartment(typ):
		issues = append(issues, o.checkCompartment(res, typ, loc, c)...)
	case !p.AllowedTypes[typ]:
		issues = append(issues, ownershipIssue(CodeBusinessRule, loc,
			fmt.Sprintf("a %s is neither in a Patient compartment nor of a type this record accepts", typ)))
	}
	return issues
}

// checkCompartment applies the compartment rule to a resource of a
// Patient-compartment type other than Patient: at least one compartment
// reference is the PFR's Patient, and none is a Group. The other
// references were already judged by the walk.
func (o Owner) checkCompartment(res map[string]any, typ, loc string, c *refChecker) []Issue {
	refs, err := CompartmentReferencesResolving(res, c.resolveLocal)
	if err != nil {
		return []Issue{ownershipIssue(CodeProcessing, loc, fmt.Sprintf("cannot evaluate the Patient compartment of %s: %v", typ, err))}
	}
	var issues []Issue
	self := false
	for _, ref := range refs {
		t := c.classify(ref)
		switch {
		case t.kind == refSelf:
			self = true
		case t.kind == refLocal && t.typ == "Group":
			issues = append(issues, ownershipIssue(CodeBusinessRule, c.pathOf(ref, loc),
				fmt.Sprintf("reference %q: a Group stands for other people and cannot be what a %s of this record is about", ref, typ)))
		}
	}
	if !self {
		issues = append(issues, ownershipIssue(CodeBusinessRule, loc, fmt.Sprintf(
			"this %s does not reference this record's Patient (%s) in any of %s; references by identifier, to contained resources or to Groups do not count",
			typ, o.selfReference(), strings.Join(PatientCompartment[typ], ", "))))
	}
	return issues
}

// Belongs reports whether res may be shown as part of this PFR: its own
// Patient, a compartment resource that references only its Patient, a
// resource of an allowed type that references no other Patient, or an
// OperationOutcome. It is the keep callback of FilterSearchset. Absolute
// references are judged against o.Bases, so filter after the upstream's
// URLs were rewritten to the PFR's address.
func (o Owner) Belongs(res map[string]any, p OwnershipPolicy) bool {
	if res["resourceType"] == "OperationOutcome" {
		return true
	}
	typ, _ := res["resourceType"].(string)
	return len(o.CheckResource(res, typ, p, nil)) == 0
}

// MaxOutcomeIssues bounds the issues OwnershipError puts in one
// OperationOutcome, so that a refused Bundle of thousands of entries gives
// a readable answer of bounded size.
const MaxOutcomeIssues = 100

// OwnershipError turns the issues of CheckResource, CheckWrite or
// CheckBundle into the 422 error the gateway answers with, or nil when
// there are none. Past MaxOutcomeIssues the rest is summarised in one
// last issue.
func OwnershipError(issues []Issue) error {
	if len(issues) == 0 {
		return nil
	}
	if len(issues) > MaxOutcomeIssues {
		more := len(issues) - MaxOutcomeIssues
		issues = append(slices.Clone(issues[:MaxOutcomeIssues]), Issue{
			Severity: SeverityError, Code: CodeTooCostly,
			Diagnostics: fmt.Sprintf("%d more issues not listed", more),
		})
	}
	return &Error{Status: http.StatusUnprocessableEntity, Issues: issues}
}

// ownershipIssue returns an error issue at the expression loc.
func ownershipIssue(code, loc, diagnostics string) Issue {
	is := Issue{Severity: SeverityError, Code: code, Diagnostics: diagnostics}
	if loc != "" {
		is.Expression = []string{loc}
	}
	return is
}

// joinPath appends a FHIRPath element name to loc.
func joinPath(loc, name string) string {
	if loc == "" {
		return name
	}
	return loc + "." + name
}

// newPatientID stands for the id the upstream will give a record's first
// Patient while CheckNewPatient judges it.
const newPatientID = "pfr-new-record-patient"

// CheckNewPatient checks the Patient a new record is created with, under
// the rules of any write (CheckResource, as the record's own Patient) and
// one more that only a new record has: its partition is empty, so a
// literal reference to any other resource ("Practitioner/1",
// "Organization/2", "Patient/3") can only point at someone else's data on an
// upstream that does not isolate partitions. Contained resources
// ("#org"), references by identifier or display, and external references
// the policy allows remain possible; the rest can be added once the
// referenced resources are in the record. res must have no id (the caller
// removes it); loc names it in the issues.
func (o Owner) CheckNewPatient(res map[string]any, loc string, p OwnershipPolicy) []Issue {
	o.PatientID = newPatientID
	probe := make(map[string]any, len(res)+1)
	for k, v := range res {
		probe[k] = v
	}
	probe["id"] = newPatientID
	issues := o.CheckResource(probe, loc, p, nil)
	c := o.newRefChecker(probe, p, nil)
	c.walk(probe, loc, true)
	for ref, at := range c.paths {
		if t := c.classify(ref); (t.kind == refLocal || t.kind == refSelf) && !strings.HasPrefix(ref, "#") {
			issues = append(issues, ownershipIssue(CodeBusinessRule, at, fmt.Sprintf(
				"reference %q: a new record holds nothing yet, so this can only point at another record's data; add it once the resource is in the record", ref)))
		}
	}
	slices.SortFunc(issues, func(a, b Issue) int {
		return strings.Compare(strings.Join(a.Expression, ","), strings.Join(b.Expression, ","))
	})
	return issues
}
