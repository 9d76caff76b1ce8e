package dopu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

const (
	synthea = "synthea/Ned_Hintz_e4b9259d-0f54-48d1-a35d-b526729a4dfe.json"
	father  = "documents/Bundle-father.json"
	pfrID   = "pfr-patient-1"
)

// The record's own Patients, as the PFR holds them.
var (
	martha = map[string]any{"resourceType": "Patient", "id": pfrID, "gender": "female", "birthDate": "1972-05-01",
		"name": []any{map[string]any{"family": "de Larosa", "given": []any{"Márthá"}}}}
	stranger = patient("Everywoman", "Eve", "1955-01-06", "female")
)

// nedPatient returns the Synthea Bundle's own Patient resource.
func nedPatient(t *testing.T) map[string]any {
	var b decodedBundle
	if err := json.Unmarshal(testkit.ReadFHIR(t, synthea), &b); err != nil {
		t.Fatal(err)
	}
	p := b.Entry[0].Resource
	p["id"] = pfrID
	delete(p, "identifier")
	return p
}

// prepare drops body off and prepares its pick-up for the record patient.
func prepare(t *testing.T, body []byte, pfrPatient map[string]any, force bool) (*Import, error) {
	t.Helper()
	f := newFixture(t, Limits{}, Options{})
	r := f.mustDrop("rec1", body, "192.0.2.1")
	p, err := f.svc.BeginPickup(context.Background(), "rec1", r.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Abort()
	return p.Prepare(pfrPatient, pfrID, PrepareOptions{Force: force})
}

type outBundle struct {
	ResourceType string `json:"resourceType"`
	Type         string `json:"type"`
	Entry        []struct {
		FullURL  string           `json:"fullUrl"`
		Resource map[string]any   `json:"resource"`
		Request  entryRequest     `json:"request"`
		Response *json.RawMessage `json:"response"`
	} `json:"entry"`
}

// checkImport asserts what every import must be, against the Bundle in.
func checkImport(t *testing.T, in []byte, imp *Import) outBundle {
	t.Helper()
	var out outBundle
	dec := json.NewDecoder(bytes.NewReader(imp.Transaction))
	dec.UseNumber()
	if err := dec.Decode(&out); err != nil {
		t.Fatal(err)
	}
	if out.ResourceType != "Bundle" || out.Type != "transaction" || imp.Entries != len(out.Entry) {
		t.Fatalf("not a transaction of %d entries: %s %s %d", imp.Entries, out.ResourceType, out.Type, len(out.Entry))
	}
	// The gateway's ownership check, as it will run on the pick-up.
	var generic map[string]any
	if err := json.Unmarshal(imp.Transaction, &generic); err != nil {
		t.Fatal(err)
	}
	for _, issue := range (fhir.Owner{PatientID: pfrID}).CheckBundle(generic, fhir.DefaultOwnershipPolicy()) {
		t.Errorf("ownership: %+v", issue)
	}
	var src decodedBundle
	if err := json.Unmarshal(in, &src); err != nil {
		t.Fatal(err)
	}
	// Every resource but the sender's Patient is kept.
	want, got := map[string]int{}, map[string]int{}
	for _, e := range src.Entry {
		want[e.Resource["resourceType"].(string)]++
	}
	want["Patient"]--
	if want["Patient"] == 0 {
		delete(want, "Patient")
	}
	fullURLs := map[string]bool{}
	for i, e := range out.Entry {
		rt, _ := e.Resource["resourceType"].(string)
		got[rt]++
		if !strings.HasPrefix(e.FullURL, "urn:uuid:") || fullURLs[e.FullURL] {
			t.Errorf("entry %d fullUrl %q: not a fresh urn:uuid", i, e.FullURL)
		}
		fullURLs[e.FullURL] = true
		if e.Request.Method != "POST" || e.Request.URL != rt {
			t.Errorf("entry %d request %+v, want POST %s", i, e.Request, rt)
		}
		if _, ok := e.Resource["id"]; ok {
			t.Errorf("entry %d keeps its id", i)
		}
		tags, _ := e.Resource["meta"].(map[string]any)["tag"].([]any)
		last, _ := tags[len(tags)-1].(map[string]any)
		if last["system"] != TagSystem || last["code"] == "" {
			t.Errorf("entry %d tags %v", i, tags)
		}
	}
	if len(want) != len(got) {
		t.Errorf("resource types in %v, out %v", want, got)
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%s: %d in, %d out", k, n, got[k])
		}
	}
	// Every reference to a Patient is the record's; every urn:uuid
	// reference points to an entry of the transaction.
	for i, e := range out.Entry {
		fhir.EachReference(e.Resource, func(_ map[string]any, ref string) {
			switch {
			case strings.HasPrefix(ref, "urn:uuid:"):
				if !fullURLs[ref] {
					t.Errorf("entry %d: %q points to no entry", i, ref)
				}
			case strings.HasPrefix(ref, "Patient") || strings.Contains(ref, "/Patient/"):
				if ref != "Patient/"+pfrID {
					t.Errorf("entry %d: reference %q to another Patient", i, ref)
				}
			}
		})
		refs, err := fhir.CompartmentReferencesResolving(e.Resource, func(ref string) (map[string]any, bool) {
			for _, o := range out.Entry {
				if o.FullURL == ref {
					return o.Resource, true
				}
			}
			return nil, false
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, ref := range refs {
			if !strings.HasPrefix(ref, "urn:") {
				continue
			}
			for _, o := range out.Entry {
				if o.FullURL == ref && o.Resource["resourceType"] == "Patient" {
					t.Errorf("entry %d: compartment reference %q is another Patient", i, ref)
				}
			}
		}
	}
	return out
}

func TestPrepareIPSDocument(t *testing.T) {
	in := testkit.ReadFHIR(t, ipsPath)
	imp, err := prepare(t, in, martha, false)
	if err != nil {
		t.Fatal(err)
	}
	if !imp.Match.Accepted || imp.Match.Score < 0.8 {
		t.Errorf("match %+v", imp.Match)
	}
	checkImport(t, in, imp)
	if bytes.Contains(imp.Transaction, []byte("urn:uuid:2b90dd2b-2dab-4c75-9bb9-a355e07401e8")) {
		t.Error("the transaction still references the sender's Patient")
	}
	// Every entry gets a fresh fullUrl: the sender's are not reused.
	if bytes.Contains(imp.Transaction, []byte(`"fullUrl":"urn:uuid:30551ce1-5a28-4356-b684-1e639094ad4d"`)) {
		t.Error("the Composition kept the sender's fullUrl")
	}
	if len(imp.SenderIdentifiers) != 1 || !strings.Contains(testkit.JSONString(t, imp.SenderIdentifiers), "574687583") {
		t.Errorf("sender identifiers %v", imp.SenderIdentifiers)
	}
	if len(imp.Report.Logical) != 0 {
		t.Errorf("logical %+v", imp.Report.Logical)
	}
}

func TestPrepareSyntheaTransaction(t *testing.T) {
	in := testkit.ReadFHIR(t, synthea)
	imp, err := prepare(t, in, nedPatient(t), false)
	if err != nil {
		t.Fatal(err)
	}
	if imp.Match.Score != 0.85 || !imp.Match.Accepted {
		t.Errorf("match %+v, want 0.85 (all but identifiers)", imp.Match)
	}
	out := checkImport(t, in, imp)
	if bytes.Contains(imp.Transaction, []byte("616eaeb2-a67a-44e5-a7e6-9bbd85e47c5c")) {
		t.Error("the transaction still names the sender's Patient")
	}
	// Decimals survive exactly: compare every Observation's value.
	var src decodedBundle
	dec := json.NewDecoder(bytes.NewReader(in))
	dec.UseNumber()
	if err := dec.Decode(&src); err != nil {
		t.Fatal(err)
	}
	var before, after []string
	for _, e := range src.Entry {
		if vq, ok := e.Resource["valueQuantity"].(map[string]any); ok {
			before = append(before, string(vq["value"].(json.Number)))
		}
	}
	for _, e := range out.Entry {
		if vq, ok := e.Resource["valueQuantity"].(map[string]any); ok {
			after = append(after, string(vq["value"].(json.Number)))
		}
	}
	if len(before) == 0 || strings.Join(before, ",") != strings.Join(after, ",") {
		t.Errorf("values changed:\n%v\n%v", before, after)
	}
}

func TestPrepareAbsoluteFullURLs(t *testing.T) {
	in := testkit.ReadFHIR(t, father)
	eve := patient("Everywoman1", "Eve", "1955-01-06", "female")
	imp, err := prepare(t, in, eve, false)
	if err != nil {
		t.Fatal(err)
	}
	out := checkImport(t, in, imp)
	if bytes.Contains(imp.Transaction, []byte("healthintersections.com.au/open/Patient")) ||
		bytes.Contains(imp.Transaction, []byte(`"Patient/d1"`)) {
		t.Error("a reference to the sender's Patient remains")
	}
	// Practitioner/example and the absolute Encounter reference resolve to
	// the new fullUrls of their entries.
	if bytes.Contains(imp.Transaction, []byte(`"Practitioner/example"`)) || bytes.Contains(imp.Transaction, []byte(`/open/Encounter/doc-example"`)) {
		t.Errorf("references to entries were not rewritten")
	}
	// Device/software and Organization/example are in Bundle.signature,
	// which is not imported; every entry's references resolve.
	if len(imp.Report.Logical) != 0 {
		t.Errorf("logical %+v", imp.Report.Logical)
	}
	if len(out.Entry) != 7 {
		t.Errorf("%d entries, want 7", len(out.Entry))
	}
}

func TestPrepareRefusesAnotherPerson(t *testing.T) {
	in := testkit.ReadFHIR(t, ipsPath)
	imp, err := prepare(t, in, stranger, false)
	if !errors.Is(err, ErrMismatch) {
		t.Fatalf("error %v, want ErrMismatch", err)
	}
	fe := wantFHIRError(t, err, http.StatusUnprocessableEntity, "does not match")
	if imp == nil || imp.Match.Accepted || imp.Transaction != nil || imp.Match.Score >= imp.Match.Threshold {
		t.Fatalf("import %+v", imp)
	}
	all := testkit.JSONString(t, fe.Outcome())
	for _, want := range []string{"family name", "given names", "birth date"} {
		if !strings.Contains(all, want) {
			t.Errorf("reasons %v do not mention %s", imp.Match.Reasons, want)
		}
	}
	// Forced, it imports.
	imp, err = prepare(t, in, stranger, true)
	if err != nil {
		t.Fatal(err)
	}
	if imp.Match.Accepted || len(imp.Match.Reasons) == 0 {
		t.Errorf("forced match %+v should still show the mismatch", imp.Match)
	}
	checkImport(t, in, imp)
}

func TestPrepareRules(t *testing.T) {
	obs := func(ref string) map[string]any {
		return map[string]any{"resourceType": "Observation", "subject": map[string]any{"reference": ref},
			"valueQuantity": map[string]any{"value": json.Number("1.50")}}
	}
	carol := patient("Smith", "Carol", "1990-02-03", "female")
	carol["identifier"] = []any{map[string]any{"system": "urn:ssn", "value": "123"}}
	baby := patient("Smith", "Baby", "2020-01-01", "male")

	t.Run("subject is the most referenced Patient", func(t *testing.T) {
		// baby comes first, but three entries are about Carol.
		in := bundleJSON(t, "collection", baby, carol, obs("urn:uuid:00000000-0000-4000-8000-000000000001"),
			obs("urn:uuid:00000000-0000-4000-8000-000000000001"), obs("urn:uuid:00000000-0000-4000-8000-000000000000"),
			obs("urn:uuid:00000000-0000-4000-8000-000000000001"))
		imp, err := prepare(t, in, patient("Smith", "Carol", "1990-02-03", "female"), false)
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(string(imp.Transaction), `"Patient/`+pfrID+`"`); n != 3 {
			t.Errorf("%d references to the record's Patient, want 3:\n%s", n, imp.Transaction)
		}
		if !bytes.Contains(imp.Transaction, []byte(`"value":1.50`)) {
			t.Error("decimal 1.50 was reformatted")
		}
	})
	t.Run("conditional reference to the sender's Patient", func(t *testing.T) {
		dangling := obs("Patient?identifier=urn:ssn|123")
		dangling["performer"] = []any{map[string]any{"reference": "Practitioner/nowhere"}}
		in := bundleJSON(t, "transaction", carol, obs("Patient?identifier=urn:ssn|123"), obs("Patient?identifier=urn:ssn|999"),
			obs("Practitioner?name=x"), dangling)
		imp, err := prepare(t, in, patient("Smith", "Carol", "1990-02-03", "female"), false)
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(string(imp.Transaction), `"Patient/`+pfrID+`"`); n != 2 {
			t.Errorf("%d references rewritten, want 2", n)
		}
		// The Observation about urn:ssn|999 is another person's: left out.
		if len(imp.Report.OtherPatients) != 1 || imp.Report.OtherPatients[0].Reference != "Patient?identifier=urn:ssn|999" ||
			imp.Entries != 3 || len(imp.Report.Skipped) != 1 || imp.Report.Skipped[0].Reason != SkipAnotherPerson {
			t.Errorf("report %+v, %d entries", imp.Report, imp.Entries)
		}
		// The conditional reference that matches nothing and the one to
		// a resource not in the Bundle become logical.
		got := testkit.JSONString(t, imp.Report.Logical)
		if len(imp.Report.Logical) != 2 || !strings.Contains(got, "Practitioner?name=x") || !strings.Contains(got, "Practitioner/nowhere") {
			t.Errorf("logical %s", got)
		}
		if bytes.Contains(imp.Transaction, []byte(`"reference":"Practitioner`)) ||
			!bytes.Contains(imp.Transaction, []byte(`{"display":"Practitioner?name=x","type":"Practitioner"}`)) {
			t.Errorf("transaction %s", imp.Transaction)
		}
	})
	t.Run("transaction requests", func(t *testing.T) {
		data := `{"resourceType":"Bundle","type":"transaction","entry":[
			{"fullUrl":"urn:uuid:a","resource":{"resourceType":"Patient","id":"p","name":[{"family":"Smith","given":["Carol"]}],"birthDate":"1990-02-03","gender":"female"},"request":{"method":"PUT","url":"Patient/p"}},
			{"resource":{"resourceType":"Observation","id":"o1","subject":{"reference":"Patient/p"}},"request":{"method":"PUT","url":"Observation/o1"}},
			{"resource":{"resourceType":"Observation","subject":{"reference":"Patient/p"},"hasMember":[{"reference":"Observation/o1"}]},"request":{"method":"PUT","url":"Observation?identifier=x|1"}},
			{"resource":{"resourceType":"Practitioner","identifier":[{"system":"npi","value":"7"}]},"request":{"method":"POST","url":"Practitioner","ifNoneExist":"identifier=npi|7"}},
			{"resource":{"resourceType":"Encounter","subject":{"reference":"Patient/p"},"participant":[{"individual":{"reference":"Practitioner?identifier=npi|7"}}]},"request":{"method":"POST","url":"Encounter"}}]}`
		imp, err := prepare(t, []byte(data), patient("Smith", "Carol", "1990-02-03", "female"), false)
		if err != nil {
			t.Fatal(err)
		}
		out := checkImport(t, []byte(data), imp)
		// ifNoneExist is answered inside the record (empty here): the
		// upstream never evaluates it across records.
		for i, e := range out.Entry {
			if e.Request.IfNoneExist != "" {
				t.Errorf("entry %d request %+v", i, e.Request)
			}
		}
		// Observation/o1 and the conditional Practitioner resolve inside the Bundle.
		if member := out.Entry[1].Resource["hasMember"].([]any)[0].(map[string]any)["reference"]; member != out.Entry[0].FullURL {
			t.Errorf("hasMember %v, want %s", member, out.Entry[0].FullURL)
		}
		part := out.Entry[3].Resource["participant"].([]any)[0].(map[string]any)["individual"].(map[string]any)["reference"]
		if part != out.Entry[2].FullURL {
			t.Errorf("participant %v, want %s", part, out.Entry[2].FullURL)
		}
		if len(imp.Report.Logical) != 0 {
			t.Errorf("logical %+v", imp.Report.Logical)
		}
	})
	t.Run("subject outside the Bundle", func(t *testing.T) {
		in := bundleJSON(t, "collection", obs("Patient/elsewhere"), obs("Patient/elsewhere"))
		imp, err := prepare(t, in, carol, false)
		if !errors.Is(err, ErrMismatch) || !strings.Contains(strings.Join(imp.Match.Reasons, ";"), "Patient/elsewhere is not included") {
			t.Fatalf("%v %+v", err, imp)
		}
		imp, err = prepare(t, in, carol, true)
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(string(imp.Transaction), `"Patient/`+pfrID+`"`); n != 2 {
			t.Errorf("forced: %d references rewritten, want 2", n)
		}
	})
	t.Run("forged tags and local assigners", func(t *testing.T) {
		p := patient("Smith", "Carol", "1990-02-03", "female")
		p["identifier"] = []any{
			map[string]any{"system": "urn:mrn", "value": "1", "assigner": map[string]any{"reference": "urn:uuid:00000000-0000-4000-8000-000000000001", "display": "Clinic"}},
			map[string]any{"system": "urn:mrn2", "value": "2", "assigner": map[string]any{"reference": "https://example.org/Organization/1"}},
			map[string]any{"system": "urn:mrn3", "value": "3", "assigner": map[string]any{"reference": "Organization/1"}},
		}
		o := obs("urn:uuid:00000000-0000-4000-8000-000000000000")
		o["meta"] = map[string]any{"versionId": "7", "tag": []any{
			map[string]any{"system": TagSystem, "code": "someone-elses-dropoff"},
			map[string]any{"system": "urn:other", "code": "keep"},
		}}
		in := bundleJSON(t, "collection", p, map[string]any{"resourceType": "Organization", "name": "Clinic"}, o)
		imp, err := prepare(t, in, patient("Smith", "Carol", "1990-02-03", "female"), false)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(imp.Transaction, []byte("someone-elses-dropoff")) || !bytes.Contains(imp.Transaction, []byte(`"keep"`)) ||
			bytes.Contains(imp.Transaction, []byte(`"versionId"`)) {
			t.Errorf("tags: %s", imp.Transaction)
		}
		ids := testkit.JSONString(t, imp.SenderIdentifiers)
		if strings.Contains(ids, "urn:uuid") || strings.Contains(ids, `"Organization/1"`) || !strings.Contains(ids, "Clinic") ||
			!strings.Contains(ids, "https://example.org/Organization/1") || len(imp.SenderIdentifiers) != 3 {
			t.Errorf("sender identifiers %s", ids)
		}
	})
	t.Run("bad patient id", func(t *testing.T) {
		in := bundleJSON(t, "collection", carol)
		if _, err := prepare(t, in, carol, true); err != nil {
			t.Fatal(err)
		}
		f := newFixture(t, Limits{}, Options{})
		r := f.mustDrop("rec1", in, "")
		p, _ := f.svc.BeginPickup(context.Background(), "rec1", r.ID)
		defer p.Abort()
		if _, err := p.Prepare(carol, "../x", PrepareOptions{Force: true}); err == nil {
			t.Error("a Patient id with a slash was accepted")
		}
	})
}

// Intake (from raw JSON) and Prepare (from decoded maps) must read the
// same heads, or they would disagree on the subject Patient.
func TestEntryHeadsAgree(t *testing.T) {
	for _, path := range []string{ipsPath, father, synthea, "spec/Bundle-bundle-transaction.json", "spec/Bundle-bundle-request-medsallergies.json"} {
		data := testkit.ReadFHIR(t, path)
		var raw rawBundle
		var decoded decodedBundle
		if err := json.Unmarshal(data, &raw); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(data, &decoded); err != nil {
			t.Fatal(err)
		}
		for i, e := range raw.Entry {
			if len(e.Resource) == 0 {
				continue
			}
			fromRaw, err := checkEntry(i, e, "collection")
			if err != nil {
				t.Fatal(err)
			}
			fromMap := headOf(decoded.Entry[i].FullURL, decoded.Entry[i].Resource)
			if testkit.JSONString(t, fromRaw) != testkit.JSONString(t, fromMap) {
				t.Errorf("%s entry %d:\n%s\n%s", path, i, testkit.JSONString(t, fromRaw), testkit.JSONString(t, fromMap))
			}
		}
	}
}
