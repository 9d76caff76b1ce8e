package store

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

func TestEverythingOnSynthea(t *testing.T) {
	s := newTestServer(t)
	s.createPartition(1)
	s.createPartition(2)
	files := testkit.SyntheaPaths(t)
	src, ids := loadSynthea(t, s, files[0], "1")
	loadSynthea(t, s, files[1], "2") // another patient in another partition
	patientRef := ids[patientOf(t, src)]

	// Unrelated data in the same partition: another patient and its
	// Observation stay out.
	other := str(s.must(http.StatusCreated, "POST", "/fhir/Patient", "1", patient("Other")).JSON(t), "id")
	s.must(http.StatusCreated, "POST", "/fhir/Observation", "1", map[string]any{"resourceType": "Observation", "status": "final",
		"subject": map[string]any{"reference": "Patient/" + other}})

	got, total := pageAll(t, s, "/fhir/"+patientRef+"/$everything?_count=40", "1", 20, nil)
	seen := map[string]bool{}
	for _, r := range got {
		ref := str(r, "resourceType") + "/" + str(r, "id")
		if seen[ref] {
			t.Fatalf("%s twice", ref)
		}
		seen[ref] = true
	}
	// Synthea bundles hold one patient's record: every resource in it is
	// either in the compartment or referenced from it.
	want := map[string]bool{}
	for _, ref := range ids {
		want[ref] = true
	}
	if len(seen) != len(want) || total != float64(len(want)) {
		var missing []string
		for ref := range want {
			if !seen[ref] {
				missing = append(missing, ref)
			}
		}
		t.Fatalf("$everything gave %d (total %v), want %d; missing %v", len(seen), total, len(want), missing)
	}
	for ref := range seen {
		if !want[ref] {
			t.Fatalf("$everything returned %s, which is not this patient's", ref)
		}
	}
	if str(got[0], "resourceType") != "Patient" {
		t.Fatalf("first entry is %s", str(got[0], "resourceType"))
	}

	// The same patient id is unknown in partition 2.
	expectOutcome(t, s.do("GET", "/fhir/"+patientRef+"/$everything", "2", nil), http.StatusNotFound, "not known")
	expectOutcome(t, s.do("GET", "/fhir/Observation/x/$everything", "1", nil), http.StatusBadRequest, "only supported on Patient")

	// Patient/$everything covers every patient of the partition and only it.
	all := s.must(http.StatusOK, "GET", "/fhir/Patient/$everything?_count=1", "1", nil).JSON(t)
	if all["total"].(float64) != float64(len(want)+2) {
		t.Fatalf("Patient/$everything total %v, want %d", all["total"], len(want)+2)
	}
}

func TestSearchAndEverythingNeverCrossPartitions(t *testing.T) {
	s := newTestServer(t)
	s.createPartition(1)
	s.createPartition(2)
	// Same client ids in both partitions, different content.
	for _, part := range []string{"1", "2"} {
		p := patient("Twin" + part)
		p["id"] = "twin"
		s.must(http.StatusCreated, "PUT", "/fhir/Patient/twin", part, p)
		for i := 0; i < 3; i++ {
			o := map[string]any{"resourceType": "Observation", "id": fmt.Sprintf("o%d", i), "status": "final",
				"code":    map[string]any{"text": "partition " + part},
				"subject": map[string]any{"reference": "Patient/twin"}}
			s.must(http.StatusCreated, "PUT", fmt.Sprintf("/fhir/Observation/o%d", i), part, o)
		}
	}
	s.must(http.StatusCreated, "POST", "/fhir/Observation", "1", map[string]any{"resourceType": "Observation", "status": "final",
		"subject": map[string]any{"reference": "Patient/twin"}})

	for part, want := range map[string]float64{"1": 4, "2": 3} {
		b := s.must(http.StatusOK, "GET", "/fhir/Observation?subject=Patient/twin&_include=Observation:subject", part, nil).JSON(t)
		if b["total"].(float64) != want {
			t.Fatalf("partition %s: %v Observations, want %v", part, b["total"], want)
		}
		for _, e := range b["entry"].([]any) {
			body := string(testkit.MustJSON(t, e))
			if strings.Contains(body, "partition "+map[string]string{"1": "2", "2": "1"}[part]) || strings.Contains(body, "Twin"+map[string]string{"1": "2", "2": "1"}[part]) {
				t.Fatalf("partition %s sees %s", part, body)
			}
		}
		ev := s.must(http.StatusOK, "GET", "/fhir/Patient/twin/$everything", part, nil).JSON(t)
		if ev["total"].(float64) != want+1 {
			t.Fatalf("partition %s $everything total %v", part, ev["total"])
		}
		if strings.Contains(string(testkit.MustJSON(t, ev)), "Twin"+map[string]string{"1": "2", "2": "1"}[part]) {
			t.Fatalf("partition %s $everything crosses partitions", part)
		}
		h := s.must(http.StatusOK, "GET", "/fhir/Observation/_history", part, nil).JSON(t)
		if h["total"].(float64) != want {
			t.Fatalf("partition %s type history %v", part, h["total"])
		}
	}
	// The default partition has none of it.
	if b := s.must(http.StatusOK, "GET", "/fhir/Observation", "DEFAULT", nil).JSON(t); b["total"].(float64) != 0 {
		t.Fatalf("default partition sees %v Observations", b["total"])
	}
}

// TestEverythingFollowsReferencesToAnyDepth: what the compartment
// references is followed to any depth, as HAPI does: a Practitioner
// reached only through a PractitionerRole, an Organization only through
// partOf. Another Patient reached on the way is not.
func TestEverythingFollowsReferencesToAnyDepth(t *testing.T) {
	s := newTestServer(t)
	s.createPartition(1)
	create := func(res map[string]any) string {
		return str(res, "resourceType") + "/" + str(s.must(http.StatusCreated, "POST", "/fhir/"+str(res, "resourceType"), "1", res).JSON(t), "id")
	}
	ref := func(r string) map[string]any { return map[string]any{"reference": r} }
	me := create(patient("Me"))
	other := create(patient("Other"))
	parent := create(map[string]any{"resourceType": "Organization", "name": "Health system"})
	hospital := create(map[string]any{"resourceType": "Organization", "name": "Hospital", "partOf": ref(parent)})
	doctor := create(map[string]any{"resourceType": "Practitioner", "name": []any{map[string]any{"family": "Doc"}}})
	role := create(map[string]any{"resourceType": "PractitionerRole", "practitioner": ref(doctor), "organization": ref(hospital)})
	unrelated := create(map[string]any{"resourceType": "Practitioner", "name": []any{map[string]any{"family": "Nobody"}}})
	enc := create(map[string]any{"resourceType": "Encounter", "status": "finished", "subject": ref(me),
		"participant": []any{map[string]any{"individual": ref(role)}}})
	obs := create(map[string]any{"resourceType": "Observation", "status": "final", "subject": ref(me), "encounter": ref(enc),
		"performer": []any{ref(other)}})

	got, total := pageAll(t, s, "/fhir/"+me+"/$everything", "1", 5, nil)
	seen := map[string]bool{}
	for _, r := range got {
		seen[str(r, "resourceType")+"/"+str(r, "id")] = true
	}
	for _, want := range []string{me, enc, obs, role, doctor, hospital, parent} {
		if !seen[want] {
			t.Errorf("$everything misses %s", want)
		}
	}
	for _, not := range []string{other, unrelated} {
		if seen[not] {
			t.Errorf("$everything returns %s", not)
		}
	}
	if total != 7 {
		t.Errorf("total %v, want 7", total)
	}
}
