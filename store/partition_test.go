package store

import (
	"net/http"
	"strings"
	"testing"
)

func TestPartitionHeaderRules(t *testing.T) {
	s := newTestServer(t)
	expectOutcome(t, s.do("GET", "/fhir/Patient/x", "", nil), http.StatusBadRequest, "no partition ID provided")
	expectOutcome(t, s.do("GET", "/fhir/Patient/x", "abc", nil), http.StatusBadRequest, "invalid partition ID")
	expectOutcome(t, s.do("GET", "/fhir/Patient/x", "1,2", nil), http.StatusBadRequest, "several partitions")
	expectOutcome(t, s.do("GET", "/fhir/Patient/x", "99999999999", nil), http.StatusBadRequest, "invalid partition ID")
	expectOutcome(t, s.do("GET", "/fhir/Patient/x", "42", nil), http.StatusNotFound, "No partition exists with ID 42")
	expectOutcome(t, s.do("POST", "/fhir/Patient", "42", patient("X")), http.StatusNotFound, "No partition exists with ID 42")
	// metadata is not partitioned.
	s.must(http.StatusOK, "GET", "/fhir/metadata", "", nil)
}

func TestPartitionManagement(t *testing.T) {
	s := newTestServer(t)
	create := "/fhir/$partition-management-create-partition"
	del := "/fhir/$partition-management-delete-partition"

	r := s.must(http.StatusOK, "POST", create, "DEFAULT", partitionParams(7, "john"))
	if !strings.Contains(string(r.Body), `"valueCode":"john"`) {
		t.Fatalf("create answer %s", r.Body)
	}
	expectOutcome(t, s.do("POST", create, "DEFAULT", partitionParams(7, "other")), http.StatusBadRequest, "Partition ID 7 already exists")
	expectOutcome(t, s.do("POST", create, "DEFAULT", partitionParams(8, "john")), http.StatusBadRequest, `Partition name \"john\" is already defined`)
	expectOutcome(t, s.do("POST", create, "7", partitionParams(9, "nine")), http.StatusBadRequest, "DEFAULT")
	expectOutcome(t, s.do("POST", create, "DEFAULT", partitionParams(0, "zero")), http.StatusBadRequest, "positive")
	expectOutcome(t, s.do("POST", create, "DEFAULT", partitionParams(-3, "neg")), http.StatusBadRequest, "positive")
	expectOutcome(t, s.do("POST", create, "DEFAULT", partitionParams(10, "DEFAULT")), http.StatusBadRequest, "reserved")
	expectOutcome(t, s.do("POST", create, "DEFAULT", partitionParams(10, "../etc")), http.StatusBadRequest, "not valid")
	expectOutcome(t, s.do("POST", create, "DEFAULT", map[string]any{"resourceType": "Parameters", "parameter": []any{map[string]any{"name": "name", "valueCode": "x"}}}), http.StatusBadRequest, "ID and a Name")
	expectOutcome(t, s.do("POST", create, "DEFAULT", patient("x")), http.StatusBadRequest, "Parameters")
	expectOutcome(t, s.do("GET", create, "DEFAULT", nil), http.StatusMethodNotAllowed, "not allowed")

	read := s.must(http.StatusOK, "POST", "/fhir/$partition-management-read-partition", "DEFAULT",
		map[string]any{"resourceType": "Parameters", "parameter": []any{map[string]any{"name": "id", "valueInteger": 7}}})
	if !strings.Contains(string(read.Body), `"valueCode":"john"`) {
		t.Fatalf("read %s", read.Body)
	}
	s.must(http.StatusOK, "GET", "/fhir/$partition-management-read-partition?id=7", "DEFAULT", nil)
	expectOutcome(t, s.do("GET", "/fhir/$partition-management-read-partition?id=8", "DEFAULT", nil), http.StatusNotFound, "No partition exists with ID 8")
	expectOutcome(t, s.do("GET", "/fhir/$partition-management-read-partition", "DEFAULT", nil), http.StatusBadRequest, "id")
	list := s.must(http.StatusOK, "POST", "/fhir/$partition-management-list-partitions", "DEFAULT", nil)
	if !strings.Contains(string(list.Body), `"john"`) {
		t.Fatalf("list %s", list.Body)
	}

	p := patient("Doe")
	p["id"] = "p1"
	s.must(http.StatusCreated, "PUT", "/fhir/Patient/p1", "7", p)
	s.must(http.StatusOK, "GET", "/fhir/Patient/p1", "7", nil)

	expectOutcome(t, s.do("POST", del, "7", map[string]any{"resourceType": "Parameters", "parameter": []any{map[string]any{"name": "id", "valueInteger": 7}}}), http.StatusBadRequest, "DEFAULT")
	expectOutcome(t, s.do("POST", del, "DEFAULT", map[string]any{"resourceType": "Parameters", "parameter": []any{map[string]any{"name": "id", "valueInteger": 0}}}), http.StatusBadRequest, "default partition")
	expectOutcome(t, s.do("POST", del, "DEFAULT", map[string]any{"resourceType": "Parameters", "parameter": []any{map[string]any{"name": "id", "valueInteger": 77}}}), http.StatusNotFound, "No partition exists with ID 77")
	s.must(http.StatusOK, "POST", del, "DEFAULT", map[string]any{"resourceType": "Parameters", "parameter": []any{map[string]any{"name": "id", "valueInteger": 7}}})
	expectOutcome(t, s.do("GET", "/fhir/Patient/p1", "7", nil), http.StatusNotFound, "No partition exists with ID 7")

	// Re-creating the id gives an empty partition: delete removed the data.
	s.must(http.StatusOK, "POST", create, "DEFAULT", partitionParams(7, "john"))
	expectOutcome(t, s.do("GET", "/fhir/Patient/p1", "7", nil), http.StatusNotFound, "not known")
	if h := s.must(http.StatusOK, "GET", "/fhir/_history", "7", nil).JSON(t); h["total"].(float64) != 0 {
		t.Fatalf("history after re-create: %v", h["total"])
	}
}

func TestPartitionIsolation(t *testing.T) {
	s := newTestServer(t)
	s.createPartition(1)
	s.createPartition(2)

	// The same id in three partitions: each sees only its own.
	for _, part := range []string{"1", "2", "DEFAULT"} {
		p := patient("Family-" + part)
		p["id"] = "same"
		s.must(http.StatusCreated, "PUT", "/fhir/Patient/same", part, p)
	}
	p := patient("Family-1")
	p["id"] = "same"
	s.must(http.StatusOK, "PUT", "/fhir/Patient/same", "1", p) // version 2 only in partition 1

	for _, part := range []string{"1", "2", "DEFAULT"} {
		got := s.must(http.StatusOK, "GET", "/fhir/Patient/same", part, nil).JSON(t)
		if str(got, "name", 0, "family") != "Family-"+part {
			t.Fatalf("partition %s sees %s", part, str(got, "name", 0, "family"))
		}
	}
	if v := str(s.must(http.StatusOK, "GET", "/fhir/Patient/same", "2", nil).JSON(t), "meta", "versionId"); v != "1" {
		t.Fatalf("partition 2 sees version %s", v)
	}
	s.must(http.StatusNotFound, "GET", "/fhir/Patient/same/_history/2", "2", nil)

	// A resource only in partition 1 is unknown elsewhere, for every interaction.
	id := str(s.must(http.StatusCreated, "POST", "/fhir/Observation", "1", map[string]any{"resourceType": "Observation", "status": "final"}).JSON(t), "id")
	s.must(http.StatusNotFound, "GET", "/fhir/Observation/"+id, "2", nil)
	s.must(http.StatusNotFound, "GET", "/fhir/Observation/"+id+"/_history", "2", nil)
	s.must(http.StatusNotFound, "GET", "/fhir/Observation/"+id+"/_history/1", "DEFAULT", nil)

	for part, want := range map[string]float64{"1": 3, "2": 1, "DEFAULT": 1} {
		h := s.must(http.StatusOK, "GET", "/fhir/_history", part, nil).JSON(t)
		if h["total"].(float64) != want {
			t.Fatalf("partition %s system history total %v, want %v", part, h["total"], want)
		}
	}
	// Deleting in one partition leaves the others alone.
	s.must(http.StatusOK, "DELETE", "/fhir/Patient/same", "2", nil)
	s.must(http.StatusOK, "GET", "/fhir/Patient/same", "1", nil)
	s.must(http.StatusGone, "GET", "/fhir/Patient/same", "2", nil)
}
