package store

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
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
	files := testkit.SyntheaPaths(t)
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

// _include:iterate, _revinclude:iterate, _include=* and _revinclude=* on a
// Synthea record.
func TestSearchIncludeIterateAndWildcard(t *testing.T) {
	s := newTestServer(t)
	files := testkit.SyntheaPaths(t)
	s.createPartition(1)
	s.createPartition(2)
	src, ids := loadSynthea(t, s, files[0], "1")
	loadSynthea(t, s, files[1], "2")
	all := byFullURL(src)
	modes := func(query string) map[string]int {
		t.Helper()
		b := s.must(http.StatusOK, "GET", "/fhir/"+query, "1", nil).JSON(t)
		out := map[string]int{}
		for _, e := range b["entry"].([]any) {
			out[str(e, "search", "mode")+"/"+str(e, "resource", "resourceType")]++
		}
		return out
	}
	var obsFull string
	for full, r := range all {
		if r["resourceType"] == "Observation" && str(r, "encounter", "reference") != "" {
			obsFull = full
			break
		}
	}
	obsID := ids[obsFull][len("Observation/"):]
	encFull := str(all[obsFull], "encounter", "reference")
	encID := ids[encFull][len("Encounter/"):]
	orgFull := str(all[encFull], "serviceProvider", "reference")
	orgID := ids[orgFull][len("Organization/"):]

	// Observation → Encounter, then (iterating) Encounter → Organization.
	got := modes("Observation?_id=" + obsID + "&_include=Observation:encounter&_include:iterate=Encounter:service-provider")
	if got["match/Observation"] != 1 || got["include/Encounter"] != 1 || got["include/Organization"] != 1 {
		t.Errorf("_include:iterate: %v", got)
	}
	// Without :iterate the Encounter's include is refused: its source is
	// not the searched type.
	expectOutcome(t, s.do("GET", "/fhir/Observation?_id="+obsID+"&_include=Encounter:service-provider", "1", nil), 400, "Encounter")

	// _include=*: the patient and the encounter (every reference the
	// Observation has).
	got = modes("Observation?_id=" + obsID + "&_include=*")
	if got["include/Patient"] != 1 || got["include/Encounter"] != 1 || got["include/Organization"] != 0 {
		t.Errorf("_include=*: %v", got)
	}

	// Organization ← Encounters ← (iterating) their Observations.
	wantEnc, wantObs := 0, 0
	for _, r := range all {
		if r["resourceType"] == "Encounter" && str(r, "serviceProvider", "reference") == orgFull {
			wantEnc++
		}
	}
	for _, r := range all {
		if r["resourceType"] == "Observation" {
			if e := all[str(r, "encounter", "reference")]; e != nil && str(e, "serviceProvider", "reference") == orgFull {
				wantObs++
			}
		}
	}
	got = modes("Organization?_id=" + orgID + "&_revinclude=Encounter:service-provider&_revinclude:iterate=Observation:encounter")
	if got["include/Encounter"] != wantEnc || got["include/Observation"] != wantObs || wantObs == 0 {
		t.Errorf("_revinclude:iterate: %v, want %d Encounters, %d Observations", got, wantEnc, wantObs)
	}
	got = modes("Organization?_id=" + orgID + "&_revinclude=Encounter:service-provider&_revinclude=Observation:encounter")
	if got["include/Encounter"] != wantEnc || got["include/Observation"] != 0 {
		t.Errorf("_revinclude without :iterate follows included resources: %v", got)
	}

	// _revinclude=*: everything of the record that refers to the Encounter
	// (its Observations, Claims, …), nothing from the other partition.
	want := map[string]int{}
	for _, r := range all {
		for _, v := range []string{str(r, "encounter", "reference"), str(r, "context", "reference"),
			str(r, "item", 0, "encounter", 0, "reference")} {
			if v == encFull {
				want["include/"+r["resourceType"].(string)]++
				break
			}
		}
	}
	got = modes("Encounter?_id=" + encID + "&_revinclude=*")
	for k, n := range want {
		if k == "include/Observation" && got[k] != n {
			t.Errorf("_revinclude=*: %s %d, want %d (%v)", k, got[k], n, got)
		}
	}
	if got["include/Observation"] == 0 {
		t.Errorf("_revinclude=*: %v", got)
	}
	b := s.must(http.StatusOK, "GET", "/fhir/Encounter?_id="+encID+"&_revinclude:iterate=*", "1", nil).JSON(t)
	if self := str(b, "link", 0, "url"); !strings.Contains(self, "_revinclude%3Aiterate=%2A") {
		t.Errorf("self %s", self)
	}
}

// Compartment search: Patient/{id}/{Type} is the search of Type within the
// Patient's compartment, in the partition of the request only.
func TestCompartmentSearch(t *testing.T) {
	s := newTestServer(t)
	files := testkit.SyntheaPaths(t)
	s.createPartition(1)
	s.createPartition(2)
	src, ids := loadSynthea(t, s, files[0], "1")
	other, otherIDs := loadSynthea(t, s, files[1], "2")
	pid := ids[patientOf(t, src)]
	otherPid := otherIDs[patientOf(t, other)]
	// A second patient in partition 1 with an Observation of its own.
	p2 := str(s.must(http.StatusCreated, "POST", "/fhir/Patient", "1", patient("Second")).JSON(t), "id")
	s.must(http.StatusCreated, "POST", "/fhir/Observation", "1", map[string]any{"resourceType": "Observation", "status": "final",
		"code": map[string]any{"text": "x"}, "subject": map[string]any{"reference": "Patient/" + p2}})

	total := func(path, part string) int {
		t.Helper()
		b := s.must(http.StatusOK, "GET", path, part, nil).JSON(t)
		return int(b["total"].(float64))
	}
	nObs := len(resourcesOf(src, "Observation"))
	if got := total("/fhir/"+pid+"/Observation", "1"); got != nObs {
		t.Errorf("%s/Observation: %d, want %d", pid, got, nObs)
	}
	if got := total("/fhir/Patient/"+p2+"/Observation", "1"); got != 1 {
		t.Errorf("second patient's compartment: %d", got)
	}
	if got := total("/fhir/"+otherPid+"/Observation", "1"); got != 0 {
		t.Errorf("another partition's patient: %d", got)
	}
	if got := total("/fhir/"+pid+"/Patient", "1"); got != 1 {
		t.Errorf("%s/Patient: %d", pid, got)
	}
	code := firstCode(resourcesOf(src, "Observation")[0], "code")
	want := 0
	for _, o := range resourcesOf(src, "Observation") {
		if firstCode(o, "code") == code {
			want++
		}
	}
	b := s.must(http.StatusOK, "GET", "/fhir/"+pid+"/Observation?code="+code+"&bogus=1", "1", nil).JSON(t)
	if int(b["total"].(float64)) != want {
		t.Errorf("compartment search with code: %v, want %d", b["total"], want)
	}
	if self := str(b, "link", 0, "url"); !strings.HasSuffix(self, "/fhir/"+pid+"/Observation?code="+code) {
		t.Errorf("self %s", self)
	}
	obs, n := pageAll(t, s, "/fhir/"+pid+"/Observation?_count=10", "1", 20, nil)
	if len(obs) != nObs || int(n) != nObs {
		t.Errorf("paged %d of %v, want %d", len(obs), n, nObs)
	}
	expectOutcome(t, s.do("GET", "/fhir/"+pid+"/Organization", "1", nil), 400, "Organization")
	expectOutcome(t, s.do("GET", "/fhir/Encounter/1/Observation", "1", nil), 400, "Patient compartment")
	expectOutcome(t, s.do("GET", "/fhir/"+pid+"/Nope", "1", nil), 404, "Nope")
	if r := s.do("POST", "/fhir/"+pid+"/Observation", "1", nil); r.Status != http.StatusMethodNotAllowed {
		t.Errorf("POST to a compartment: %d", r.Status)
	}
}

// _contained and _containedType: contained resources are searched, the
// containers (or the contained resources) returned, in the partition only.
func TestSearchContained(t *testing.T) {
	s := newTestServer(t)
	s.createPartition(1)
	s.createPartition(2)
	med := func(code string) map[string]any {
		return map[string]any{"resourceType": "Medication", "code": map[string]any{"coding": []any{map[string]any{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": code}}}}
	}
	inner := med("111")
	inner["id"] = "m1"
	mr := map[string]any{"resourceType": "MedicationRequest", "status": "active", "intent": "order",
		"contained": []any{inner}, "medicationReference": map[string]any{"reference": "#m1"},
		"subject": map[string]any{"reference": "Patient/x"}}
	mrID := str(s.must(http.StatusCreated, "POST", "/fhir/MedicationRequest", "1", mr).JSON(t), "id")
	s.must(http.StatusCreated, "POST", "/fhir/MedicationRequest", "2", mr) // the other partition's
	s.must(http.StatusCreated, "POST", "/fhir/Medication", "1", med("111"))
	s.must(http.StatusCreated, "POST", "/fhir/Medication", "1", med("222"))

	search := func(query string) (int, []string) {
		t.Helper()
		b := s.must(http.StatusOK, "GET", "/fhir/Medication?"+query, "1", nil).JSON(t)
		var urls []string
		entries, _ := b["entry"].([]any)
		for _, e := range entries {
			if str(e, "search", "mode") == "match" {
				urls = append(urls, str(e, "resource", "resourceType")+" "+str(e, "fullUrl"))
			}
		}
		return int(b["total"].(float64)), urls
	}
	if n, urls := search("code=111"); n != 1 || !strings.HasPrefix(urls[0], "Medication ") {
		t.Errorf("without _contained: %d %v", n, urls)
	}
	if n, urls := search("code=111&_contained=true"); n != 1 || !strings.HasPrefix(urls[0], "MedicationRequest ") || !strings.HasSuffix(urls[0], "/MedicationRequest/"+mrID) {
		t.Errorf("_contained=true: %d %v", n, urls)
	}
	if n, urls := search("code=111&_contained=true&_containedType=contained"); n != 1 || !strings.HasPrefix(urls[0], "Medication ") || !strings.HasSuffix(urls[0], "/MedicationRequest/"+mrID+"#m1") {
		t.Errorf("_containedType=contained: %d %v", n, urls)
	}
	if n, urls := search("code=111&_contained=both"); n != 2 || !strings.HasPrefix(urls[0], "Medication ") || !strings.HasPrefix(urls[1], "MedicationRequest ") {
		t.Errorf("_contained=both: %d %v", n, urls)
	}
	if n, _ := search("code=222&_contained=true"); n != 0 {
		t.Errorf("_contained=true, no contained match: %d", n)
	}
	if n, _ := search("code=111&_contained=false"); n != 1 {
		t.Errorf("_contained=false: %d", n)
	}
	// _sort orders the contained matches (their containers follow).
	inner3 := med("333")
	inner3["id"] = "m3"
	mr3 := map[string]any{"resourceType": "MedicationRequest", "status": "active", "intent": "order",
		"contained": []any{inner3}, "medicationReference": map[string]any{"reference": "#m3"},
		"subject": map[string]any{"reference": "Patient/x"}}
	mr3ID := str(s.must(http.StatusCreated, "POST", "/fhir/MedicationRequest", "1", mr3).JSON(t), "id")
	for sort, first := range map[string]string{"code": mrID + "#m1", "-code": mr3ID + "#m3"} {
		if n, urls := search("code=111,333&_contained=true&_containedType=contained&_sort=" + sort); n != 2 || !strings.HasSuffix(urls[0], first) {
			t.Errorf("_sort=%s: %d %v, want %s first", sort, n, urls, first)
		}
	}
	expectOutcome(t, s.do("GET", "/fhir/Medication?_contained=maybe", "1", nil), 400, "_contained")
	expectOutcome(t, s.do("PUT", "/fhir/Medication?code=111&_contained=true", "1", med("111")), 400, "_contained")
}
