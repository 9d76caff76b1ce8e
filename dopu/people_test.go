package dopu

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// recordOf is a record's resources for Search: a fake of the record's
// server, enough to answer identifier, _tag and other criteria by exact
// token (the real servers are in import_store_test.go and e2e/).
type recordOf []map[string]any

func (rec recordOf) search(searches *int) Search {
	return func(typ string, params url.Values) ([]map[string]any, error) {
		*searches++
		var out []map[string]any
		for _, res := range rec {
			if res["resourceType"] != typ {
				continue
			}
			ok := true
			for name, values := range params {
				var have []Identifier
				switch name {
				case "identifier":
					have = resourceIdentifiers(res)
				case "_tag":
					have = resourceTags(res)
				default:
					return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeNotSupported, "unknown parameter %s", name)
				}
				any := false
				for _, tok := range strings.Split(values[0], ",") {
					any = any || hasIdentifiers(have, []string{tok})
				}
				ok = ok && any
			}
			if ok {
				out = append(out, res)
			}
		}
		return out, nil
	}
}

func practitioner(id, npi string) map[string]any {
	return map[string]any{"resourceType": "Practitioner", "id": id, "identifier": []any{map[string]any{"system": "urn:npi", "value": npi}}}
}

func prepareWith(t *testing.T, body []byte, record map[string]any, opts PrepareOptions) (*Import, *Pickup, error) {
	t.Helper()
	f := newFixture(t, Limits{}, Options{})
	r := f.mustDrop("rec1", body, "192.0.2.1")
	p, err := f.svc.BeginPickup(context.Background(), "rec1", r.ID)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Abort)
	imp, err := p.Prepare(record, pfrID, opts)
	return imp, p, err
}

// TestPrepareAgainstTheRecord: conditional references and ifNoneExist are
// answered by the record's search; what the record holds is not written
// again; several matches give a logical reference and a warning.
func TestPrepareAgainstTheRecord(t *testing.T) {
	carol := patient("Smith", "Carol", "1990-02-03", "female")
	record := recordOf{practitioner("p1", "1"), practitioner("p2a", "2"), practitioner("p2b", "2"), practitioner("p4", "4")}
	obs := func(performer string) map[string]any {
		return map[string]any{"resourceType": "Observation", "subject": map[string]any{"reference": "urn:uuid:00000000-0000-4000-8000-000000000000"},
			"performer": []any{map[string]any{"reference": performer, "display": "Dr. " + performer}}}
	}
	body := bundleJSON(t, "transaction", carol,
		obs("Practitioner?identifier=urn:npi|1"), obs("Practitioner?identifier=urn:npi|2"), obs("Practitioner?identifier=urn:npi|3"),
		obs("Practitioner?name=Who"),
		practitioner("sent4", "4"), // the record has npi 4: skipped, references point at p4
		obs("urn:uuid:00000000-0000-4000-8000-000000000005"))
	searches := 0
	imp, p, err := prepareWith(t, body, carol, PrepareOptions{Search: record.search(&searches)})
	if err != nil {
		t.Fatal(err)
	}
	tx := string(imp.Transaction)
	for _, want := range []string{
		`{"display":"Dr. Practitioner?identifier=urn:npi|1","reference":"Practitioner/p1"}`,
		`{"display":"Dr. Practitioner?identifier=urn:npi|2","identifier":{"system":"urn:npi","value":"2"},"type":"Practitioner"}`,
		`{"display":"Dr. Practitioner?identifier=urn:npi|3","identifier":{"system":"urn:npi","value":"3"},"type":"Practitioner"}`,
		`{"display":"Dr. Practitioner?name=Who","type":"Practitioner"}`,
		`{"display":"Dr. urn:uuid:00000000-0000-4000-8000-000000000005","reference":"Practitioner/p4"}`,
	} {
		if !strings.Contains(tx, want) {
			t.Errorf("the transaction lacks %s", want)
		}
	}
	if imp.Entries != 5 || imp.Report.Imported["Observation"] != 5 || imp.Report.Imported["Practitioner"] != 0 {
		t.Errorf("%d entries, imported %v", imp.Entries, imp.Report.Imported)
	}
	if len(imp.Report.Skipped) != 1 || imp.Report.Skipped[0].Existing != "Practitioner/p4" || imp.Report.Skipped[0].Reason != SkipInRecord {
		t.Errorf("skipped %+v", imp.Report.Skipped)
	}
	if len(imp.Report.Resolved) != 1 || len(imp.Report.Logical) != 3 || len(imp.Report.Warnings) != 2 ||
		!strings.Contains(strings.Join(imp.Report.Warnings, "\n"), "matches 2 resources") ||
		!strings.Contains(strings.Join(imp.Report.Warnings, "\n"), "cannot search Practitioner?name=Who") {
		t.Errorf("report %+v", imp.Report)
	}
	if st, _ := p.Outcome(); st != StatusPickedUp {
		t.Errorf("status %s", st)
	}
	// Identifiers and digests are OR-ed: a handful of searches, not one
	// per entry.
	if searches > 8 {
		t.Errorf("%d searches", searches)
	}
}

// TestPrepareSeveralPeople: mother and baby in one drop-off. The baby's
// Patient and what is about the baby are left out (the status says
// picked-up-partially); a reference to the baby from the mother's entry
// keeps its display; refuse imports nothing.
func TestPrepareSeveralPeople(t *testing.T) {
	mother := patient("Smith", "Carol", "1990-02-03", "female")
	baby := patient("Smith", "Baby", "2024-01-01", "male")
	again := patient("Smith", "Carol", "1990-02-03", "female") // the same person twice
	about := func(who int, extra map[string]any) map[string]any {
		o := map[string]any{"resourceType": "Observation", "subject": map[string]any{"reference": "urn:uuid:00000000-0000-4000-8000-00000000000" + string(rune('0'+who))}}
		for k, v := range extra {
			o[k] = v
		}
		return o
	}
	body := bundleJSON(t, "collection", mother, baby, again,
		about(0, map[string]any{"focus": []any{map[string]any{"reference": "urn:uuid:00000000-0000-4000-8000-000000000001", "display": "her baby"}}}),
		about(0, nil), about(0, nil), about(1, nil), about(1, nil), about(2, nil),
		map[string]any{"resourceType": "Observation", "subject": map[string]any{"reference": "Patient/someone-else"}})
	imp, p, err := prepareWith(t, body, mother, PrepareOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tx := string(imp.Transaction)
	if imp.Entries != 4 || strings.Contains(tx, "Baby") || strings.Contains(tx, "someone-else") ||
		!strings.Contains(tx, `"focus":[{"display":"her baby","type":"Patient"}]`) {
		t.Errorf("%d entries: %s", imp.Entries, tx)
	}
	if n := strings.Count(tx, `"reference":"Patient/`+pfrID+`"`); n != 4 {
		t.Errorf("%d references to the record's Patient, want 4", n)
	}
	if len(imp.Report.OtherPatients) != 2 || imp.Report.OtherPatients[0].Entries != 2 || imp.Report.OtherPatients[1].Reference != "Patient/someone-else" {
		t.Errorf("other patients %+v", imp.Report.OtherPatients)
	}
	reasons := map[SkipReason]int{}
	for _, s := range imp.Report.Skipped {
		reasons[s.Reason]++
	}
	if reasons[SkipOtherPatient] != 1 || reasons[SkipAnotherPerson] != 3 || reasons[SkipRecordPatient] != 1 {
		t.Errorf("skipped %v", reasons)
	}
	if st, reason := p.Outcome(); st != StatusPickedUpPartially || !strings.Contains(reason, "4 of the 10 entries") {
		t.Errorf("outcome %s %q", st, reason)
	}

	imp, _, err = prepareWith(t, body, mother, PrepareOptions{OtherPatients: OtherPatientsRefuse})
	var fe *fhir.Error
	if !errors.As(err, &fe) || fe.Status != http.StatusConflict || imp.Transaction != nil || len(imp.Report.OtherPatients) != 2 {
		t.Errorf("refuse: %v %+v", err, imp)
	}
}

// TestPrepareSearchsetAndLongIDs: a searchset's outcome entries are
// dropped, ids longer than FHIR's 64 characters are no obstacle: entries
// are known by fullUrl and references to them by Type/id resolve.
func TestPrepareSearchsetAndLongIDs(t *testing.T) {
	long := strings.Repeat("e", 80)
	body := []byte(`{"resourceType":"Bundle","type":"searchset","entry":[
		{"fullUrl":"https://ehr.example/fhir/Patient/p","resource":{"resourceType":"Patient","id":"p","name":[{"family":"Smith","given":["Carol"]}],"birthDate":"1990-02-03","gender":"female"},"search":{"mode":"match"}},
		{"fullUrl":"https://ehr.example/fhir/Medication/` + long + `","resource":{"resourceType":"Medication","id":"` + long + `"},"search":{"mode":"include"}},
		{"fullUrl":"https://ehr.example/fhir/MedicationRequest/m","resource":{"resourceType":"MedicationRequest","id":"m","subject":{"reference":"Patient/p"},"medicationReference":{"reference":"Medication/` + long + `"},"dosageInstruction":[{"doseAndRate":[{"doseQuantity":{"value":0.50}}]}]},"search":{"mode":"match"}},
		{"resource":{"resourceType":"OperationOutcome","issue":[{"severity":"information","code":"informational"}]},"search":{"mode":"outcome"}}]}`)
	imp, _, err := prepareWith(t, body, patient("Smith", "Carol", "1990-02-03", "female"), PrepareOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := testkit.JSONString(t, imp.Report)
	tx := string(imp.Transaction)
	if imp.Entries != 2 || strings.Contains(tx, long) || strings.Contains(tx, "OperationOutcome") || !strings.Contains(tx, `"value":0.50`) ||
		!strings.Contains(out, `"search-outcome"`) || len(imp.Report.Logical) != 0 {
		t.Errorf("transaction %s\nreport %s", tx, out)
	}
}
