package search

import (
	"strings"
	"testing"
	"time"
)

// codingsOf is a plain walk over CodeableConcept.coding.
func codingsOf(cc any) []map[string]any {
	m, _ := cc.(map[string]any)
	list, _ := m["coding"].([]any)
	var out []map[string]any
	for _, c := range list {
		out = append(out, c.(map[string]any))
	}
	return out
}

// TestSyntheaCounts compares counts from the engine with counts from plain
// Go walks over each Synthea Bundle.
func TestSyntheaCounts(t *testing.T) {
	for name, entries := range loadBundles(t) {
		resources := stored(entries)
		var patientID string
		want := map[string]int{}
		for _, r := range resources {
			typ := r["resourceType"].(string)
			want[typ]++
			if typ == "Patient" {
				patientID = r["id"].(string)
			}
			if typ != "Observation" {
				continue
			}
			loinc := false
			for _, c := range codingsOf(r["code"]) {
				if c["code"] == "8302-2" {
					want["height"]++
				}
				if c["system"] == "http://loinc.org" {
					loinc = true
				}
			}
			if loinc {
				want["loinc"]++
			}
			if vq, ok := r["valueQuantity"].(map[string]any); ok && vq["code"] == "cm" {
				if f, _ := toRat(vq["value"]); f.Cmp(ratOf(100)) > 0 {
					want["over100cm"]++
				}
			}
			for _, c := range codingsOf(firstOf(r["category"])) {
				if c["code"] == "vital-signs" {
					want["vital"]++
				}
			}
		}
		for _, r := range resources {
			if r["resourceType"] == "Immunization" {
				d, err := time.Parse(time.RFC3339, r["occurrenceDateTime"].(string))
				if err != nil {
					t.Fatal(err)
				}
				if !d.Before(time.Date(2015, 1, 1, 0, 0, 0, 0, time.UTC)) {
					want["imm2015"]++
				}
			}
		}
		if want["height"] == 0 || want["Immunization"] == 0 {
			t.Fatalf("%s: fixture has no body heights or immunizations", name)
		}
		cases := []struct {
			typ, query string
			want       int
		}{
			{"Observation", "code=8302-2", want["height"]},
			{"Observation", "code=http://loinc.org|8302-2", want["height"]},
			{"Observation", "code=http://snomed.info/sct|8302-2", 0},
			{"Observation", "code=|8302-2", 0},
			{"Observation", "code=http://loinc.org|", want["loinc"]},
			{"Observation", "code:not=8302-2", want["Observation"] - want["height"]},
			{"Observation", "code=8302-2,9279-1,nope", -1}, // checked below: ≥ height
			{"Observation", "code:text=body hei", want["height"]},
			{"Observation", "category=vital-signs", want["vital"]},
			{"Observation", "value-quantity=gt100|http://unitsofmeasure.org|cm", want["over100cm"]},
			{"Observation", "value-quantity=gt100||cm", want["over100cm"]},
			{"Observation", "patient=Patient/" + patientID, want["Observation"]},
			{"Observation", "patient=" + patientID, want["Observation"]},
			{"Observation", "subject:Patient=" + patientID, want["Observation"]},
			{"Observation", "subject=https://pfr.example/fhir/Patient/" + patientID, want["Observation"]},
			{"Observation", "patient=Patient/other", 0},
			{"Observation", "subject:missing=true", 0},
			{"Observation", "subject:missing=false", want["Observation"]},
			{"Observation", "code=8302-2&patient=" + patientID, want["height"]},
			{"Immunization", "patient=" + patientID + "&date=ge2015", want["imm2015"]},
			{"Immunization", "date=lt2015", want["Immunization"] - want["imm2015"]},
			{"Encounter", "patient=" + patientID, want["Encounter"]},
			{"Claim", "patient=" + patientID, want["Claim"]},
			{"Patient", "_id=" + patientID, 1},
			{"Patient", "_id=nope", 0},
			{"Patient", "_lastUpdated=ge2024-01-01", 1},
			{"Patient", "_lastUpdated=lt2024-01-01", 0},
			{"Observation", "_tag=https://smarthealthit.org/tags|synthea-5-2019", want["Observation"]},
		}
		for _, c := range cases {
			got := count(mustParse(t, c.typ, c.query), resources)
			switch c.want {
			case -1:
				if got < want["height"] {
					t.Errorf("%s: %s?%s = %d, want ≥ %d", name, c.typ, c.query, got, want["height"])
				}
			default:
				if got != c.want {
					t.Errorf("%s: %s?%s = %d, want %d", name, c.typ, c.query, got, c.want)
				}
			}
		}
	}
}

func firstOf(v any) any {
	if list, ok := v.([]any); ok && len(list) > 0 {
		return list[0]
	}
	return nil
}

// TestSyntheaPatientName searches each Synthea Patient by parts of its name.
func TestSyntheaPatientName(t *testing.T) {
	for name, entries := range loadBundles(t) {
		resources := stored(entries)
		var patient map[string]any
		for _, r := range resources {
			if r["resourceType"] == "Patient" {
				patient = r
			}
		}
		hn := patient["name"].([]any)[0].(map[string]any)
		family := hn["family"].(string)
		given := hn["given"].([]any)[0].(string)
		birth := patient["birthDate"].(string)
		for _, query := range []string{
			"family=" + family,
			"family=" + strings.ToUpper(family[:3]),
			"name=" + given[:2],
			"name:exact=" + family,
			"name:contains=" + family[1:],
			"given=" + given + "&family=" + family,
			"birthdate=" + birth,
			"birthdate=" + birth[:7],
			"birthdate=eq" + birth[:4],
			"gender=" + patient["gender"].(string),
			"identifier=" + firstIdentifier(patient),
			"identifier:of-type=" + typedIdentifier(t, patient),
		} {
			if got := count(mustParse(t, "Patient", query), resources); got != 1 {
				t.Errorf("%s: Patient?%s = %d, want 1", name, query, got)
			}
		}
		for _, query := range []string{
			"name:exact=" + strings.ToLower(family),
			"family=" + family + "x",
			"birthdate=ne" + birth,
			"birthdate=gt" + birth,
			"family:missing=true",
		} {
			if got := count(mustParse(t, "Patient", query), resources); got != 0 {
				t.Errorf("%s: Patient?%s = %d, want 0", name, query, got)
			}
		}
	}
}

// typedIdentifier returns type-system|type-code|value of the Patient's
// medical record number, by a plain walk.
func typedIdentifier(t *testing.T, p map[string]any) string {
	for _, x := range p["identifier"].([]any) {
		id := x.(map[string]any)
		for _, c := range codingsOf(id["type"]) {
			if c["code"] == "MR" {
				return c["system"].(string) + "|MR|" + id["value"].(string)
			}
		}
	}
	t.Fatal("no MR identifier")
	return ""
}

func firstIdentifier(p map[string]any) string {
	id := p["identifier"].([]any)[0].(map[string]any)
	return id["system"].(string) + "|" + id["value"].(string)
}

// TestSyntheaEncounterSort sorts the Encounters of every Bundle by -date
// and checks the order against the period starts.
func TestSyntheaEncounterSort(t *testing.T) {
	for name, entries := range loadBundles(t) {
		resources := stored(entries)
		q := mustParse(t, "Encounter", "_sort=-date&_count=5")
		var encounters []map[string]any
		for _, r := range resources {
			if q.Match(r) {
				encounters = append(encounters, r)
			}
		}
		q.Sort(encounters)
		for i := 1; i < len(encounters); i++ {
			prev := encounters[i-1]["period"].(map[string]any)["start"].(string)
			cur := encounters[i]["period"].(map[string]any)["start"].(string)
			pt, _ := time.Parse(time.RFC3339, prev)
			ct, _ := time.Parse(time.RFC3339, cur)
			if pt.Before(ct) {
				t.Errorf("%s: encounter %d starts %s after %s", name, i, cur, prev)
			}
			if q.Less(encounters[i], encounters[i-1]) {
				t.Errorf("%s: Less disagrees with Sort at %d", name, i)
			}
		}
		if q.Count != 5 || len(encounters) < 2 {
			t.Errorf("%s: count %d, %d encounters", name, q.Count, len(encounters))
		}
	}
}
