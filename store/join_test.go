package store

import (
	"net/http"
	"net/url"
	"testing"
)

// byFullURL indexes a source Bundle's resources by fullUrl.
func byFullURL(src map[string]any) map[string]map[string]any {
	out := map[string]map[string]any{}
	for _, e := range src["entry"].([]any) {
		out[str(e, "fullUrl")] = e.(map[string]any)["resource"].(map[string]any)
	}
	return out
}

// firstCode is the first coding code of a CodeableConcept element.
func firstCode(res map[string]any, element string) string {
	return str(res, element, "coding", 0, "code")
}

// Chained parameters (typed, untyped, two levels) and _has (nested too),
// counted against what the Synthea Bundles say, in one partition while
// another partition holds another patient.
func TestSearchChainsAndHas(t *testing.T) {
	s := newTestServer(t)
	files := syntheaFiles(t)
	s.createPartition(1)
	s.createPartition(2)
	src, _ := loadSynthea(t, s, files[0], "1")
	other, _ := loadSynthea(t, s, files[1], "2")
	all := byFullURL(src)
	patient := all[patientOf(t, src)]
	family := str(patient, "name", 0, "family")
	otherFamily := str(byFullURL(other)[patientOf(t, other)], "name", 0, "family")

	count := func(query string) int {
		t.Helper()
		b := s.must(http.StatusOK, "GET", "/fhir/"+query+"&_summary=count", "1", nil).JSON(t)
		return int(b["total"].(float64))
	}
	nObs := len(resourcesOf(src, "Observation"))
	for _, q := range []string{
		"Observation?subject:Patient.name=" + family,
		"Observation?subject.family=" + family,
		"Observation?patient.name=" + family,
		"Observation?patient:Patient.family:exact=" + family,
		"Observation?subject.name=" + family + ",nobody",
	} {
		if got := count(q); got != nObs || nObs == 0 {
			t.Errorf("%s: %d, want %d", q, got, nObs)
		}
	}
	for _, q := range []string{
		"Observation?subject:Patient.name=" + otherFamily, // another partition's patient
		"Observation?subject:Patient.name=nobody",
		"Observation?subject:Device.type=x",
	} {
		if got := count(q); got != 0 {
			t.Errorf("%s: %d, want 0", q, got)
		}
	}

	// Two levels: Observation → Encounter → Organization, and a chain
	// through an identifier.
	enc := resourcesOf(src, "Encounter")[0]
	org := all[str(enc, "serviceProvider", "reference")]
	orgName := str(org, "name")
	want := 0
	for _, o := range resourcesOf(src, "Observation") {
		if e := all[str(o, "encounter", "reference")]; e != nil && all[str(e, "serviceProvider", "reference")] != nil &&
			str(all[str(e, "serviceProvider", "reference")], "name") == orgName {
			want++
		}
	}
	if got := count("Observation?encounter.service-provider.name:exact=" + url.QueryEscape(orgName)); got != want || want == 0 {
		t.Errorf("two-level chain: %d, want %d", got, want)
	}
	if got := count("Observation?encounter:Encounter.service-provider:Organization.name:exact=" + url.QueryEscape(orgName+"x")); got != 0 {
		t.Errorf("two-level chain on a name nobody has: %d", got)
	}

	// _has: the patient has Observations of this code, not of a made-up one.
	code := firstCode(resourcesOf(src, "Observation")[0], "code")
	if got := count("Patient?_has:Observation:patient:code=" + code); got != 1 {
		t.Errorf("_has: %d patients, want 1", got)
	}
	if got := count("Patient?_has:Observation:patient:code=no-such-code"); got != 0 {
		t.Errorf("_has with no referrer: %d", got)
	}
	// Nested _has: Encounters that have an Observation of the code, then
	// Patients with such an Encounter.
	wantEnc := map[string]bool{}
	for _, o := range resourcesOf(src, "Observation") {
		if firstCode(o, "code") == code {
			wantEnc[str(o, "encounter", "reference")] = true
		}
	}
	if got := count("Encounter?_has:Observation:encounter:code=" + code); got != len(wantEnc) {
		t.Errorf("Encounter?_has: %d, want %d", got, len(wantEnc))
	}
	if got := count("Patient?_has:Encounter:patient:_has:Observation:encounter:code=" + code); got != 1 {
		t.Errorf("nested _has: %d patients, want 1", got)
	}
	// A chain inside _has.
	if got := count("Patient?_has:Observation:patient:encounter.service-provider.name:exact=" + url.QueryEscape(orgName)); got != 1 {
		t.Errorf("chain inside _has: %d", got)
	}

	// Applied, so in self; an unsupported chain is reported and refused
	// under strict handling.
	b := s.must(http.StatusOK, "GET", "/fhir/Observation?subject:Patient.name="+family+"&subject.nope=1", "1", nil).JSON(t)
	self := str(b, "link", 0, "url")
	u, _ := url.Parse(self)
	if u.Query().Get("subject:Patient.name") != family || u.Query().Has("subject.nope") {
		t.Errorf("self %s", self)
	}
	expectOutcome(t, s.do("GET", "/fhir/Observation?subject.nope=1", "1", nil, "Prefer", "handling=strict"), 400, "subject.nope")
	expectOutcome(t, s.do("GET", "/fhir/Observation?subject:Medication.code=1", "1", nil), 400, "Medication")
	expectOutcome(t, s.do("GET", "/fhir/Observation?subject:Patient.birthdate=notadate", "1", nil), 400, "birthdate")
}
