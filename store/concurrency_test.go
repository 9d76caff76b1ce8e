package store

import (
	"net/http"
	"strings"
	"sync"
	"testing"
)

func TestConcurrentIfMatchUpdatesHaveOneWinner(t *testing.T) {
	s := newTestServer(t)
	p := patient("Race")
	p["id"] = "race"
	s.must(http.StatusCreated, "PUT", "/fhir/Patient/race", "DEFAULT", p)

	const writers = 8
	statuses := make([]int, writers)
	var wg sync.WaitGroup
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			body := `{"resourceType":"Patient","id":"race","active":true}`
			statuses[i] = s.do("PUT", "/fhir/Patient/race", "DEFAULT", body, "If-Match", `W/"1"`).Status
		}(i)
	}
	wg.Wait()
	won := 0
	for _, st := range statuses {
		switch st {
		case http.StatusOK:
			won++
		case http.StatusPreconditionFailed:
		default:
			t.Fatalf("unexpected status %d", st)
		}
	}
	if won != 1 {
		t.Fatalf("%d writers won, want exactly 1 (%v)", won, statuses)
	}
	if v := str(s.must(http.StatusOK, "GET", "/fhir/Patient/race", "DEFAULT", nil).JSON(t), "meta", "versionId"); v != "2" {
		t.Fatalf("version %s after the race", v)
	}
}

func TestHostileBodies(t *testing.T) {
	s := newTestServer(t)
	before := dumpPartition(t, s.db, defaultPartitionKey)
	deep := `{"resourceType":"Basic","extension":` + strings.Repeat(`[`, 20000) + strings.Repeat(`]`, 20000) + `}`
	expectOutcome(t, s.do("POST", "/fhir/Basic", "DEFAULT", deep), http.StatusBadRequest, "invalid JSON")
	expectOutcome(t, s.do("POST", "/fhir/Patient", "DEFAULT", "\xff\xfe{}"), http.StatusBadRequest, "invalid JSON")
	expectOutcome(t, s.do("POST", "/fhir/Patient", "DEFAULT", `null`), http.StatusBadRequest, "JSON object")
	expectOutcome(t, s.do("POST", "/fhir", "DEFAULT", `{"resourceType":"Bundle","type":"transaction","entry":[null]}`), http.StatusBadRequest, "request is missing")
	expectOutcome(t, s.do("POST", "/fhir", "DEFAULT", `{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"PUT","url":"Patient/../../x"},"resource":{"resourceType":"Patient"}}]}`), http.StatusBadRequest, "not a supported entry URL")
	expectOutcome(t, s.do("POST", "/fhir", "DEFAULT", `{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"POST","url":"http://evil.example/fhir/Patient"},"resource":{"resourceType":"Patient"}}]}`), http.StatusBadRequest, "unknown resource type")
	// A partition header cannot smuggle a second partition or a path.
	expectOutcome(t, s.do("GET", "/fhir/Patient/x", "1/../2", nil), http.StatusBadRequest, "invalid partition ID")
	if after := dumpPartition(t, s.db, defaultPartitionKey); after != before {
		t.Fatal("hostile bodies changed the store")
	}
}
