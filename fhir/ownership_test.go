package fhir

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// obs returns an Observation JSON with the given extra members.
func obs(members string) string {
	if members != "" {
		members = "," + members
	}
	return `{"resourceType":"Observation","status":"final","code":{"text":"x"}` + members + `}`
}

// subj returns an Observation whose subject is ref.
func subj(ref string) string { return obs(`"subject":{"reference":"` + ref + `"}`) }

const self = `"subject":{"reference":"Patient/pfr-john"}`

func TestCheckResource(t *testing.T) {
	withBundle := DefaultOwnershipPolicy()
	withBundle.AllowedTypes["Bundle"] = true
	external := DefaultOwnershipPolicy()
	external.ExternalReferences = true
	uuids := map[string]string{
		"urn:uuid:11111111-1111-1111-1111-111111111111": "Patient/pfr-john",
		"urn:uuid:22222222-2222-2222-2222-222222222222": "Patient/other",
		"urn:uuid:33333333-3333-3333-3333-333333333333": "Patient",
		"urn:uuid:44444444-4444-4444-4444-444444444444": "Practitioner",
	}
	tests := []struct {
		name   string
		res    string
		policy *OwnershipPolicy
		ok     bool
		expr   string // when refused, an expression one issue must carry
	}{
		// References to the PFR's Patient, in every accepted spelling.
		{"relative", subj("Patient/pfr-john"), nil, true, ""},
		{"absolute with own base", subj("https://john.pfr.localhost:8443/fhir/Patient/pfr-john"), nil, true, ""},
		{"versioned", subj("Patient/pfr-john/_history/2"), nil, true, ""},
		{"urn of own Patient", subj("urn:uuid:11111111-1111-1111-1111-111111111111"), nil, true, ""},
		{"performer Practitioner", obs(self + `,"performer":[{"reference":"Practitioner/1"}]`), nil, true, ""},
		{"performer urn Practitioner", obs(self + `,"performer":[{"reference":"urn:uuid:44444444-4444-4444-4444-444444444444"}]`), nil, true, ""},
		{"hasMember Observation", obs(self + `,"hasMember":[{"reference":"Observation/o1"}]`), nil, true, ""},
		{"contained Practitioner", obs(self + `,"contained":[{"resourceType":"Practitioner","id":"pr"}],"performer":[{"reference":"#pr"}]`), nil, true, ""},

		// Sneaky spellings that must not pass as the PFR's Patient.
		{"trailing slash", subj("Patient/pfr-john/"), nil, false, "Observation.subject"},
		{"double slash", subj("Patient//pfr-john"), nil, false, "Observation.subject"},
		{"lower-case type", subj("patient/pfr-john"), nil, false, "Observation.subject"},
		{"id of other case", subj("Patient/PFR-JOHN"), nil, false, "Observation.subject"},
		{"query", subj("Patient/pfr-john?x"), nil, false, "Observation.subject"},
		{"fragment", subj("Patient/pfr-john#x"), nil, false, "Observation.subject"},
		{"conditional reference", subj("Patient?identifier=http://x|1"), nil, false, "Observation.subject"},
		{"dot dot", subj("Patient/.."), nil, false, "Observation.subject"},
		{"traversal after own base", subj("https://john.pfr.localhost:8443/fhir/../fhir/Patient/pfr-john"), nil, false, "Observation.subject"},
		{"own base other port", subj("https://john.pfr.localhost:9443/fhir/Patient/pfr-john"), nil, false, "Observation.subject"},
		{"own base other scheme", subj("http://john.pfr.localhost:8443/fhir/Patient/pfr-john"), nil, false, "Observation.subject"},
		{"own base longer path", subj("https://john.pfr.localhost:8443/fhirx/Patient/pfr-john"), nil, false, "Observation.subject"},
		{"own host with userinfo", subj("https://x@john.pfr.localhost:8443/fhir/Patient/pfr-john"), nil, false, "Observation.subject"},
		{"other server", subj("http://elsewhere/fhir/Patient/1"), nil, false, "Observation.subject"},
		{"other server, external allowed", subj("http://elsewhere/fhir/Patient/1"), &external, false, "Observation.subject"},
		{"Cyrillic a in type", subj("P\u0430tient/pfr-john"), nil, false, "Observation.subject"},
		{"Cyrillic o in id", subj("Patient/pfr-j\u043ehn"), nil, false, "Observation.subject"},
		{"fullwidth solidus", subj("Patient\uff0fpfr-john"), nil, false, "Observation.subject"},
		{"leading space", subj(" Patient/pfr-john"), nil, false, "Observation.subject"},
		{"trailing space", subj("Patient/pfr-john "), nil, false, "Observation.subject"},
		{"empty reference", subj(""), nil, false, "Observation.subject"},
		{"unknown urn", subj("urn:uuid:55555555-5555-5555-5555-555555555555"), nil, false, "Observation.subject"},
		{"urn of another Patient", subj("urn:uuid:22222222-2222-2222-2222-222222222222"), nil, false, "Observation.subject"},
		{"urn of a created Patient", subj("urn:uuid:33333333-3333-3333-3333-333333333333"), nil, false, "Observation.subject"},
		{"urn:oid not in Bundle", subj("urn:oid:1.2.3"), nil, false, "Observation.subject"},

		// Another Patient anywhere.
		{"other Patient", subj("Patient/other"), nil, false, "Observation.subject"},
		{"other Patient versioned", subj("Patient/other/_history/2"), nil, false, "Observation.subject"},
		{"performer other Patient", obs(self + `,"performer":[{"reference":"Patient/other"}]`), nil, false, "Observation.performer[0]"},
		{"focus other Patient", obs(self + `,"focus":[{"reference":"Patient/other"}]`), nil, false, "Observation.focus[0]"},
		{"extension valueReference", obs(self + `,"extension":[{"url":"http://x","valueReference":{"reference":"Patient/other"}}]`), nil, false, "Observation.extension[0].valueReference"},
		{"nested extension", obs(self + `,"extension":[{"url":"http://x","extension":[{"url":"y","valueReference":{"reference":"Patient/other"}}]}]`), nil, false, "Observation.extension[0].extension[0].valueReference"},
		{"modifierExtension", obs(self + `,"modifierExtension":[{"url":"http://x","valueReference":{"reference":"http://elsewhere/Patient/1"}}]`), nil, false, "Observation.modifierExtension[0].valueReference"},
		{"contained Observation of other", obs(self + `,"contained":[` + subj("Patient/other") + `]`), nil, false, "Observation.contained[0].subject"},
		{"contained Patient", obs(self + `,"contained":[{"resourceType":"Patient","id":"p1"}]`), nil, false, "Observation.contained[0]"},
		{"subject contained Patient", obs(`"contained":[{"resourceType":"Patient","id":"p1"}],"subject":{"reference":"#p1"}`), nil, false, "Observation.subject"},
		{"missing contained", obs(self + `,"performer":[{"reference":"#nothere"}]`), nil, false, "Observation.performer[0]"},
		{"reference inside reference", obs(self + `,"note":[{"text":"x","reference":{"reference":"Patient/other"}}]`), nil, false, "Observation.note[0].reference"},

		// Proof of ownership.
		{"no subject", obs(""), nil, false, "Observation"},
		{"identifier only", obs(`"subject":{"identifier":{"system":"http://x","value":"pfr-john"}}`), nil, false, "Observation"},
		{"Group subject", subj("Group/g1"), nil, false, "Observation.subject"},
		{"Group subject, Patient performer", obs(`"subject":{"reference":"Group/g1"},"performer":[{"reference":"Patient/pfr-john"}]`), nil, false, "Observation.subject"},
		{"focus self only", obs(`"focus":[{"reference":"Patient/pfr-john"}]`), nil, false, "Observation"},
		{"Practitioner subject", subj("Practitioner/1"), nil, false, "Observation"},
		{"AllergyIntolerance recorder other", `{"resourceType":"AllergyIntolerance","patient":{"reference":"Patient/pfr-john"},"recorder":{"reference":"Patient/other"}}`, nil, false, "AllergyIntolerance.recorder"},
		{"RelatedPerson of self", `{"resourceType":"RelatedPerson","patient":{"reference":"Patient/pfr-john"}}`, nil, true, ""},
		{"Group of self", `{"resourceType":"Group","type":"person","actual":true,"member":[{"entity":{"reference":"Patient/pfr-john"}}]}`, nil, true, ""},
		{"Group with other", `{"resourceType":"Group","type":"person","actual":true,"member":[{"entity":{"reference":"Patient/pfr-john"}},{"entity":{"reference":"Patient/other"}}]}`, nil, false, "Group.member[1].entity"},

		// The PFR's Patient.
		{"own Patient", `{"resourceType":"Patient","id":"pfr-john"}`, nil, true, ""},
		{"other Patient resource", `{"resourceType":"Patient","id":"other"}`, nil, false, "Patient.id"},
		{"Patient without id", `{"resourceType":"Patient"}`, nil, false, "Patient"},
		{"Patient linked to other", `{"resourceType":"Patient","id":"pfr-john","link":[{"type":"seealso","other":{"reference":"Patient/other"}}]}`, nil, false, "Patient.link[0].other"},

		// Types outside every compartment.
		{"Practitioner", `{"resourceType":"Practitioner","name":[{"family":"X"}]}`, nil, true, ""},
		{"Organization", `{"resourceType":"Organization","partOf":{"reference":"Organization/1"}}`, nil, true, ""},
		{"Practitioner with other Patient", `{"resourceType":"Practitioner","extension":[{"url":"x","valueReference":{"reference":"Patient/other"}}]}`, nil, false, "Practitioner.extension[0].valueReference"},
		{"Device unattached", `{"resourceType":"Device"}`, nil, true, ""},
		{"Device of self", `{"resourceType":"Device","patient":{"reference":"Patient/pfr-john"}}`, nil, true, ""},
		{"Device of other", `{"resourceType":"Device","patient":{"reference":"Patient/other"}}`, nil, false, "Device.patient"},
		{"SearchParameter", `{"resourceType":"SearchParameter"}`, nil, false, "SearchParameter"},
		{"Subscription", `{"resourceType":"Subscription"}`, nil, false, "Subscription"},
		{"Binary", `{"resourceType":"Binary","contentType":"text/plain"}`, nil, false, "Binary"},
		{"Person of self", `{"resourceType":"Person","link":[{"target":{"reference":"Patient/pfr-john"}}]}`, nil, true, ""},
		{"Person linking other", `{"resourceType":"Person","link":[{"target":{"reference":"Patient/pfr-john"}},{"target":{"reference":"Patient/other"}}]}`, nil, false, "Person.link[1].target"},
		{"Provenance of other", `{"resourceType":"Provenance","target":[{"reference":"Patient/other"}]}`, nil, false, "Provenance.target[0]"},
		{"unknown type", `{"resourceType":"Observatoin"}`, nil, false, "Observatoin.resourceType"},
		{"no type", `{"id":"x"}`, nil, false, "resourceType"},
		{"external Practitioner, default", obs(self + `,"performer":[{"reference":"https://hospital.example/fhir/Practitioner/7"}]`), nil, false, "Observation.performer[0]"},
		{"external Practitioner, allowed", obs(self + `,"performer":[{"reference":"https://hospital.example/fhir/Practitioner/7"}]`), &external, true, ""},
		{"external Group, allowed", obs(self + `,"focus":[{"reference":"https://hospital.example/fhir/Group/7"}]`), &external, false, "Observation.focus[0]"},

		// Bundles nested in what is written: a collection holding another
		// person's Observation is refused even where Bundles are allowed,
		// because the walk reaches every nested resource.
		{"collection Bundle, default policy", `{"resourceType":"Bundle","type":"collection","entry":[{"resource":` + subj("Patient/pfr-john") + `}]}`, nil, false, "Bundle"},
		{"collection Bundle of own data, Bundle allowed", `{"resourceType":"Bundle","type":"collection","entry":[{"resource":` + subj("Patient/pfr-john") + `}]}`, &withBundle, true, ""},
		{"collection Bundle with other's Observation", `{"resourceType":"Bundle","type":"collection","entry":[{"resource":` + subj("Patient/other") + `}]}`, &withBundle, false, "Bundle.entry[0].resource.subject"},
		{"collection Bundle with a Patient", `{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Patient","id":"pfr-john"}}]}`, &withBundle, false, "Bundle.entry[0].resource"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := DefaultOwnershipPolicy()
			if tc.policy != nil {
				p = *tc.policy
			}
			res := testkit.DecodeFHIR(t, []byte(tc.res))
			loc, _ := res["resourceType"].(string)
			issues := testOwner.CheckResource(res, loc, p, uuids)
			if tc.ok {
				if len(issues) != 0 {
					t.Fatalf("refused: %+v", issues)
				}
				return
			}
			if len(issues) == 0 {
				t.Fatal("accepted")
			}
			if !slices.ContainsFunc(issues, func(is Issue) bool { return slices.Contains(is.Expression, tc.expr) }) {
				t.Errorf("no issue at %q: %+v", tc.expr, issues)
			}
			for _, is := range issues {
				if is.Severity != SeverityError || is.Code == "" || is.Diagnostics == "" {
					t.Errorf("incomplete issue %+v", is)
				}
			}
		})
	}
}

func TestCheckResourceWithoutOwnerPatient(t *testing.T) {
	for _, o := range []Owner{{}, {PatientID: "../x"}} {
		res := testkit.DecodeFHIR(t, []byte(subj("Patient/pfr-john")))
		if len(o.CheckResource(res, "Observation", DefaultOwnershipPolicy(), nil)) == 0 {
			t.Errorf("%+v accepted a write", o)
		}
	}
}

// TestCheckResourceTrailingSlashBase: a base configured with a trailing
// slash behaves like the same base without it.
func TestCheckResourceTrailingSlashBase(t *testing.T) {
	o := Owner{PatientID: "pfr-john", Bases: []string{"https://john.pfr.localhost:8443/fhir/", ""}}
	res := testkit.DecodeFHIR(t, []byte(subj("https://john.pfr.localhost:8443/fhir/Patient/pfr-john")))
	if issues := o.CheckResource(res, "Observation", DefaultOwnershipPolicy(), nil); len(issues) != 0 {
		t.Fatalf("refused: %+v", issues)
	}
	res = testkit.DecodeFHIR(t, []byte(subj("/Patient/pfr-john")))
	if len(o.CheckResource(res, "Observation", DefaultOwnershipPolicy(), nil)) == 0 {
		t.Fatal("an empty base made a leading slash local")
	}
}

func TestBelongs(t *testing.T) {
	p := DefaultOwnershipPolicy()
	for _, tc := range []struct {
		res  string
		want bool
	}{
		{subj("Patient/pfr-john"), true},
		{subj("Patient/other"), false},
		{`{"resourceType":"Patient","id":"pfr-john"}`, true},
		{`{"resourceType":"Patient","id":"other"}`, false},
		{`{"resourceType":"Organization","id":"o"}`, true},
		{`{"resourceType":"OperationOutcome","issue":[]}`, true},
		{`{"resourceType":"SearchParameter"}`, false},
		{obs(""), false},
		{`{}`, false},
	} {
		if got := testOwner.Belongs(testkit.DecodeFHIR(t, []byte(tc.res)), p); got != tc.want {
			t.Errorf("Belongs(%s) = %v", tc.res, got)
		}
	}
}

func TestOwnershipError(t *testing.T) {
	if OwnershipError(nil) != nil {
		t.Fatal("error without issues")
	}
	issues := make([]Issue, MaxOutcomeIssues+5)
	for i := range issues {
		issues[i] = ownershipIssue(CodeBusinessRule, entryLoc(i), "x")
	}
	var fe *Error
	if !errors.As(OwnershipError(issues), &fe) || fe.Status != http.StatusUnprocessableEntity {
		t.Fatalf("got %v", fe)
	}
	if len(fe.Issues) != MaxOutcomeIssues+1 || !strings.Contains(fe.Issues[MaxOutcomeIssues].Diagnostics, "5 more") {
		t.Errorf("issues %d, last %+v", len(fe.Issues), fe.Issues[len(fe.Issues)-1])
	}
	if len(issues) != MaxOutcomeIssues+5 || issues[MaxOutcomeIssues].Diagnostics != "x" {
		t.Error("OwnershipError modified its argument")
	}
}
