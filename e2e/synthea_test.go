package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// syntheaForRecord loads a Synthea transaction Bundle and aims it at a
// record's Patient: the Patient entry (its urn:uuid fullUrl kept, so every
// reference to it still resolves) becomes `PUT Patient/{patientID}`.
func syntheaForRecord(t *testing.T, path, patientID string) (bundle map[string]any, patient map[string]any, counts map[string]int) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &bundle); err != nil {
		t.Fatal(err)
	}
	counts = map[string]int{}
	for _, e := range bundle["entry"].([]any) {
		entry := e.(map[string]any)
		res := entry["resource"].(map[string]any)
		counts[res["resourceType"].(string)]++
		if res["resourceType"] == "Patient" {
			patient = res
			res["id"] = patientID
			entry["request"] = map[string]any{"method": "PUT", "url": "Patient/" + patientID}
		}
	}
	return bundle, patient, counts
}

// TestSyntheaThroughGateway posts each Synthea Bundle, aimed at the record's
// own Patient, through the gateway: accepted whole, every resource
// searchable. The same Bundle aimed at another record's Patient is refused
// whole with the offending entries named, and nothing of it is stored.
func TestSyntheaThroughGateway(t *testing.T) {
	e := startGateway(t, "")
	files := testkit.SyntheaPaths(t)
	other := e.createRecord(e.token("bob"), "bob-home", "Jones", "Bob")
	for i, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			owner := e.token(fmt.Sprintf("owner-%d", i))
			slug := fmt.Sprintf("synthea-%d", i)
			// The record is created for the person the Bundle is about.
			_, person, _ := syntheaForRecord(t, f, "x")
			delete(person, "id")
			res := e.do("POST", apex("/pfr/v1/records"), owner, map[string]any{"slug": slug, "patient": person})
			res.Expect(t, http.StatusCreated, "create record")
			pid := res.Body["patientId"].(string)

			// Aimed at another record's Patient: refused whole.
			wrong, _, _ := syntheaForRecord(t, f, other["patientId"].(string))
			r := e.do("POST", recordURL(slug, ""), owner, wrong).ExpectOutcome(t, http.StatusUnprocessableEntity, "bundle aimed at bob")
			if !strings.Contains(string(r.Raw), "Bundle.entry[") {
				t.Errorf("the refusal does not name entries: %.400s", r.Raw)
			}
			search := e.do("GET", recordURL(slug, "/Observation?_summary=count"), owner, nil).Expect(t, http.StatusOK, "count")
			if search.Body["total"] != float64(0) {
				t.Fatalf("a refused Bundle left %v Observations", search.Body["total"])
			}

			// Aimed at the record's own Patient: accepted whole.
			bundle, _, counts := syntheaForRecord(t, f, pid)
			r = e.do("POST", recordURL(slug, ""), owner, bundle).Expect(t, http.StatusOK, "transaction")
			if r.Body["type"] != "transaction-response" || len(r.Body["entry"].([]any)) != len(bundle["entry"].([]any)) {
				t.Fatalf("transaction response: %.300s", r.Raw)
			}
			for _, typ := range []string{"Observation", "Encounter", "Immunization", "Condition"} {
				got := e.do("GET", recordURL(slug, "/"+typ+"?patient="+pid+"&_summary=count"), owner, nil).Expect(t, http.StatusOK, "count "+typ)
				if got.Body["total"] != float64(counts[typ]) {
					t.Errorf("%s: %v stored, the Bundle has %d", typ, got.Body["total"], counts[typ])
				}
			}
		})
	}
}
