package store

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

func patient(family string) map[string]any {
	return map[string]any{"resourceType": "Patient", "name": []any{map[string]any{"family": family}}}
}

func TestCreateReadVreadUpdateDelete(t *testing.T) {
	s := newTestServer(t)

	r := s.must(http.StatusCreated, "POST", "/fhir/Patient", "DEFAULT", patient("Chalmers"))
	loc := r.Header.Get("Location")
	if !strings.HasPrefix(loc, s.srv.URL+"/fhir/Patient/") || !strings.HasSuffix(loc, "/_history/1") {
		t.Fatalf("Location %q", loc)
	}
	if r.Header.Get("ETag") != `W/"1"` || r.Header.Get("Last-Modified") == "" {
		t.Fatalf("headers %v", r.Header)
	}
	created := r.JSON(t)
	id := str(created, "id")
	if !fhir.IsID(id) || str(created, "meta", "versionId") != "1" || str(created, "meta", "lastUpdated") == "" {
		t.Fatalf("created %s", r.Body)
	}

	r = s.must(http.StatusOK, "GET", "/fhir/Patient/"+id, "DEFAULT", nil)
	if string(r.Body) != string(testkit.MustJSON(t, created)) && str(r.JSON(t), "name", 0, "family") != "Chalmers" {
		t.Fatalf("read %s", r.Body)
	}

	// Update with the right version, then with a stale one.
	upd := patient("Windsor")
	upd["id"] = id
	r = s.must(http.StatusOK, "PUT", "/fhir/Patient/"+id, "DEFAULT", upd, "If-Match", `W/"1"`)
	if str(r.JSON(t), "meta", "versionId") != "2" || r.Header.Get("ETag") != `W/"2"` {
		t.Fatalf("update %s %v", r.Body, r.Header)
	}
	expectOutcome(t, s.do("PUT", "/fhir/Patient/"+id, "DEFAULT", upd, "If-Match", `W/"1"`), http.StatusPreconditionFailed, "version 2")

	// vread both versions.
	if got := str(s.must(http.StatusOK, "GET", "/fhir/Patient/"+id+"/_history/1", "DEFAULT", nil).JSON(t), "name", 0, "family"); got != "Chalmers" {
		t.Fatalf("vread 1: %s", got)
	}
	if got := str(s.must(http.StatusOK, "GET", "/fhir/Patient/"+id+"/_history/2", "DEFAULT", nil).JSON(t), "name", 0, "family"); got != "Windsor" {
		t.Fatalf("vread 2: %s", got)
	}
	expectOutcome(t, s.do("GET", "/fhir/Patient/"+id+"/_history/9", "DEFAULT", nil), http.StatusNotFound, "Version 9")

	// Delete: soft, versioned; read is 410; history keeps every version.
	r = s.must(http.StatusOK, "DELETE", "/fhir/Patient/"+id, "DEFAULT", nil)
	if r.Header.Get("ETag") != `W/"3"` {
		t.Fatalf("delete ETag %q", r.Header.Get("ETag"))
	}
	expectOutcome(t, s.do("GET", "/fhir/Patient/"+id, "DEFAULT", nil), http.StatusGone, "deleted")
	expectOutcome(t, s.do("GET", "/fhir/Patient/"+id+"/_history/3", "DEFAULT", nil), http.StatusGone, "deletion")
	s.must(http.StatusOK, "GET", "/fhir/Patient/"+id+"/_history/2", "DEFAULT", nil)

	// Deleting again changes nothing.
	s.must(http.StatusOK, "DELETE", "/fhir/Patient/"+id, "DEFAULT", nil)
	h := s.must(http.StatusOK, "GET", "/fhir/Patient/"+id+"/_history", "DEFAULT", nil).JSON(t)
	if h["total"].(float64) != 3 || str(h, "entry", 0, "request", "method") != "DELETE" || str(h, "entry", 2, "request", "method") != "POST" {
		t.Fatalf("history %v", h)
	}

	// Re-create by update.
	upd["name"] = []any{map[string]any{"family": "Again"}}
	r = s.must(http.StatusCreated, "PUT", "/fhir/Patient/"+id, "DEFAULT", upd)
	if str(r.JSON(t), "meta", "versionId") != "4" {
		t.Fatalf("re-create %s", r.Body)
	}
	s.must(http.StatusOK, "GET", "/fhir/Patient/"+id, "DEFAULT", nil)
}

func TestCreateOnUpdateAndClientIDs(t *testing.T) {
	s := newTestServer(t)
	p := patient("Client")
	p["id"] = "pat-1.a"
	r := s.must(http.StatusCreated, "PUT", "/fhir/Patient/pat-1.a", "DEFAULT", p)
	if r.Header.Get("Location") != s.srv.URL+"/fhir/Patient/pat-1.a/_history/1" {
		t.Fatalf("Location %q", r.Header.Get("Location"))
	}
	// If-Match on a resource that does not exist cannot match.
	p["id"] = "nope"
	expectOutcome(t, s.do("PUT", "/fhir/Patient/nope", "DEFAULT", p, "If-Match", `W/"1"`), http.StatusPreconditionFailed, "does not exist")

	for _, bad := range []string{"a_b", strings.Repeat("x", 65), "a%20b"} {
		p["id"] = bad
		r := s.do("PUT", "/fhir/Patient/"+bad, "DEFAULT", p)
		if r.Status != http.StatusBadRequest {
			t.Errorf("id %q: status %d: %s", bad, r.Status, r.Body)
		}
	}
}

func TestBadRequestsStoreNothing(t *testing.T) {
	s := newTestServer(t)
	before := dumpPartition(t, s.db, defaultPartitionKey)

	cases := []struct {
		name, method, path string
		body               any
		headers            []string
		status             int
		substr             string
	}{
		{"invalid JSON", "POST", "/fhir/Patient", `{"resourceType":"Patient",`, nil, 400, "invalid JSON"},
		{"trailing data", "POST", "/fhir/Patient", `{"resourceType":"Patient"} {}`, nil, 400, "trailing"},
		{"array body", "POST", "/fhir/Patient", `[1,2]`, nil, 400, "JSON object"},
		{"no resourceType", "POST", "/fhir/Patient", `{"id":"x"}`, nil, 400, "resourceType"},
		{"unknown resourceType", "POST", "/fhir/Patient", `{"resourceType":"Hacker"}`, nil, 400, "unknown resource type"},
		{"wrong resourceType", "POST", "/fhir/Patient", map[string]any{"resourceType": "Observation"}, nil, 400, "does not match"},
		{"wrong resourceType on update", "PUT", "/fhir/Patient/a", map[string]any{"resourceType": "Observation", "id": "a"}, nil, 400, "does not match"},
		{"id mismatch", "PUT", "/fhir/Patient/a", map[string]any{"resourceType": "Patient", "id": "b"}, nil, 400, "does not match"},
		{"missing id on update", "PUT", "/fhir/Patient/a", map[string]any{"resourceType": "Patient"}, nil, 400, "must contain an id"},
		{"numeric id", "PUT", "/fhir/Patient/a", map[string]any{"resourceType": "Patient", "id": 7}, nil, 400, "invalid resource id"},
		{"meta not object", "POST", "/fhir/Patient", map[string]any{"resourceType": "Patient", "meta": "x"}, nil, 400, "meta"},
		{"xml content", "POST", "/fhir/Patient", `<Patient/>`, []string{"Content-Type", "application/fhir+xml"}, 415, "Content-Type"},
		{"no content type", "POST", "/fhir/Patient", `{}`, []string{"Content-Type", ""}, 415, "Content-Type"},
		{"empty body", "POST", "/fhir/Patient", "", []string{"Content-Type", "application/fhir+json"}, 400, "empty"},
		{"xml accept", "GET", "/fhir/Patient/x", nil, []string{"Accept", "application/fhir+xml"}, 406, "JSON"},
		{"turtle format", "GET", "/fhir/Patient/x?_format=ttl", nil, nil, 406, "_format"},
		{"unknown type", "GET", "/fhir/Hacker/x", nil, nil, 404, "unknown resource type"},
		{"bad id", "GET", "/fhir/Patient/a$b", nil, nil, 400, "invalid resource id"},
		{"not found", "GET", "/fhir/Patient/nobody", nil, nil, 404, "not known"},
		{"method", "POST", "/fhir/Patient/x", `{}`, nil, 405, "not allowed"},
		{"patch not a patch", "PATCH", "/fhir/Patient/x", `{}`, nil, 400, "Parameters"},
		{"bad If-Match", "PUT", "/fhir/Patient/a", map[string]any{"resourceType": "Patient", "id": "a"}, []string{"If-Match", "W/\"x\""}, 400, "If-Match"},
		{"outside base", "GET", "/other/Patient/x", nil, nil, 404, "not under"},
		{"unsupported op", "POST", "/fhir/Patient/$match", `{}`, nil, 400, "not supported"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			expectOutcome(t, s.do(c.method, c.path, "DEFAULT", c.body, c.headers...), c.status, c.substr)
		})
	}
	if after := dumpPartition(t, s.db, defaultPartitionKey); after != before {
		t.Fatalf("bad requests changed the store:\nbefore %s\nafter %s", before, after)
	}
}

func TestBodyTooLarge(t *testing.T) {
	s := newTestServer(t)
	big := `{"resourceType":"Patient","text":{"div":"` + strings.Repeat("x", maxBodyBytes) + `"}}`
	expectOutcome(t, s.do("POST", "/fhir/Patient", "DEFAULT", big), http.StatusRequestEntityTooLarge, "larger")
}

func TestAcceptAndFormat(t *testing.T) {
	s := newTestServer(t)
	for _, accept := range []string{"", "*/*", "application/json", "application/fhir+json; fhirVersion=4.0", "text/html, application/fhir+json;q=0.9", "application/*"} {
		r := s.do("GET", "/fhir/metadata", "", nil, "Accept", accept)
		if r.Status != http.StatusOK {
			t.Errorf("Accept %q: %d", accept, r.Status)
		}
	}
	for _, f := range []string{"json", "application/json", "application/fhir+json"} {
		if r := s.do("GET", "/fhir/metadata?_format="+f, "", nil); r.Status != http.StatusOK {
			t.Errorf("_format %q: %d", f, r.Status)
		}
	}
	for _, f := range []string{"xml", "application/fhir+xml", "turtle", "html"} {
		expectOutcome(t, s.do("GET", "/fhir/metadata?_format="+f, "", nil), http.StatusNotAcceptable, "JSON")
	}
	expectOutcome(t, s.do("GET", "/fhir/metadata", "", nil, "Accept", "application/fhir+json;q=0, text/xml"), http.StatusNotAcceptable, "JSON")
}

func TestPreferReturn(t *testing.T) {
	s := newTestServer(t)
	r := s.must(http.StatusCreated, "POST", "/fhir/Patient", "DEFAULT", patient("Min"), "Prefer", "return=minimal")
	if len(r.Body) != 0 || r.Header.Get("Location") == "" || r.Header.Get("ETag") != `W/"1"` {
		t.Fatalf("minimal: %q %v", r.Body, r.Header)
	}
	r = s.must(http.StatusCreated, "POST", "/fhir/Patient", "DEFAULT", patient("OO"), "Prefer", "return=OperationOutcome")
	if m := r.JSON(t); m["resourceType"] != "OperationOutcome" || !strings.Contains(string(r.Body), "Successfully created") {
		t.Fatalf("OperationOutcome: %s", r.Body)
	}
	r = s.must(http.StatusCreated, "POST", "/fhir/Patient", "DEFAULT", patient("Rep"), "Prefer", "return=representation")
	if str(r.JSON(t), "name", 0, "family") != "Rep" {
		t.Fatalf("representation: %s", r.Body)
	}
	id := str(r.JSON(t), "id")
	s.must(http.StatusNoContent, "DELETE", "/fhir/Patient/"+id, "DEFAULT", nil, "Prefer", "return=minimal")
}

func TestReadIfNoneMatchAndHead(t *testing.T) {
	s := newTestServer(t)
	id := str(s.must(http.StatusCreated, "POST", "/fhir/Patient", "DEFAULT", patient("N")).JSON(t), "id")
	s.must(http.StatusNotModified, "GET", "/fhir/Patient/"+id, "DEFAULT", nil, "If-None-Match", `W/"1"`)
	s.must(http.StatusOK, "GET", "/fhir/Patient/"+id, "DEFAULT", nil, "If-None-Match", `W/"7"`)
	if r := s.must(http.StatusOK, "HEAD", "/fhir/Patient/"+id, "DEFAULT", nil); len(r.Body) != 0 || r.Header.Get("ETag") != `W/"1"` {
		t.Fatalf("HEAD %q %v", r.Body, r.Header)
	}
}

func TestHistoryPagingAndSince(t *testing.T) {
	s := newTestServer(t)
	p := patient("H")
	p["id"] = "h1"
	for i := 0; i < 5; i++ {
		s.must(map[bool]int{true: 201, false: 200}[i == 0], "PUT", "/fhir/Patient/h1", "DEFAULT", p)
	}
	s.must(http.StatusCreated, "POST", "/fhir/Observation", "DEFAULT", map[string]any{"resourceType": "Observation", "status": "final"})

	seen := map[string]bool{}
	next := "/fhir/Patient/h1/_history?_count=2"
	for pages := 0; next != ""; pages++ {
		if pages > 5 {
			t.Fatal("history paging does not end")
		}
		b := s.must(http.StatusOK, "GET", next, "DEFAULT", nil).JSON(t)
		if b["type"] != "history" || b["total"].(float64) != 5 {
			t.Fatalf("history bundle %v", b)
		}
		for _, e := range b["entry"].([]any) {
			v := str(e, "resource", "meta", "versionId")
			if seen[v] {
				t.Fatalf("version %s twice", v)
			}
			seen[v] = true
		}
		next = ""
		for _, l := range b["link"].([]any) {
			if str(l, "relation") == "next" {
				next = strings.TrimPrefix(str(l, "url"), s.srv.URL)
			}
		}
		// A write between pages does not shift the pages.
		if next != "" {
			s.must(http.StatusOK, "PUT", "/fhir/Patient/h1", "DEFAULT", p)
		}
	}
	if len(seen) != 5 || !seen["1"] || !seen["5"] {
		t.Fatalf("saw versions %v", seen)
	}

	typeHist := s.must(http.StatusOK, "GET", "/fhir/Patient/_history", "DEFAULT", nil).JSON(t)
	if typeHist["total"].(float64) != 7 {
		t.Fatalf("type history %v", typeHist["total"])
	}
	sys := s.must(http.StatusOK, "GET", "/fhir/_history", "DEFAULT", nil).JSON(t)
	if sys["total"].(float64) != 8 || str(sys, "entry", 2, "resource", "resourceType") != "Observation" || str(sys, "entry", 0, "resource", "meta", "versionId") != "7" {
		t.Fatalf("system history %v", sys)
	}
	future := s.must(http.StatusOK, "GET", "/fhir/_history?_since=2999-01-01T00:00:00Z", "DEFAULT", nil).JSON(t)
	if future["total"].(float64) != 0 {
		t.Fatalf("_since future: %v", future)
	}
	expectOutcome(t, s.do("GET", "/fhir/_history?_since=yesterday", "DEFAULT", nil), 400, "_since")
	expectOutcome(t, s.do("GET", "/fhir/_history?_count=-1", "DEFAULT", nil), 400, "_count")
	expectOutcome(t, s.do("GET", "/fhir/Patient/nobody/_history", "DEFAULT", nil), 404, "not known")
}

func TestCapabilityStatement(t *testing.T) {
	s := newTestServer(t)
	cs := s.must(http.StatusOK, "GET", "/fhir/metadata", "", nil).JSON(t)
	if cs["resourceType"] != "CapabilityStatement" || cs["fhirVersion"] != "4.0.1" {
		t.Fatalf("metadata %v", cs["resourceType"])
	}
	rest := cs["rest"].([]any)[0].(map[string]any)
	var patientOK, obsOK bool
	for _, r := range rest["resource"].([]any) {
		m := r.(map[string]any)
		params := map[string]string{}
		sps, _ := m["searchParam"].([]any)
		for _, sp := range sps {
			params[str(sp, "name")] = str(sp, "type")
		}
		switch m["type"] {
		case "Patient":
			patientOK = m["conditionalCreate"] == true && str(m, "operation", 0, "name") == "everything" && params["family"] == "string"
		case "Observation":
			// Composite parameters are not evaluated, so not announced.
			obsOK = params["patient"] == "reference" && params["date"] == "date" && params["code-value-quantity"] == ""
		}
	}
	if !obsOK {
		t.Fatal("Observation search parameters are not announced right")
	}
	if !patientOK || !strings.Contains(string(testkit.MustJSON(t, rest["interaction"])), "transaction") {
		t.Fatalf("capabilities incomplete")
	}
	expectOutcome(t, s.do("POST", "/fhir/metadata", "", `{}`), 405, "not allowed")
}

func TestDeleteIfMatch(t *testing.T) {
	s := newTestServer(t)
	p := patient("D")
	p["id"] = "d1"
	s.must(http.StatusCreated, "PUT", "/fhir/Patient/d1", "DEFAULT", p)
	expectOutcome(t, s.do("DELETE", "/fhir/Patient/d1", "DEFAULT", nil, "If-Match", `W/"2"`), http.StatusPreconditionFailed, "If-Match")
	s.must(http.StatusOK, "GET", "/fhir/Patient/d1", "DEFAULT", nil)
	s.must(http.StatusOK, "DELETE", "/fhir/Patient/d1", "DEFAULT", nil, "If-Match", `W/"1"`)
	s.must(http.StatusGone, "GET", "/fhir/Patient/d1", "DEFAULT", nil)
}

func TestInternalErrorsAreReportedNotShown(t *testing.T) {
	db, err := Open(t.TempDir()+"/e.db", nil)
	if err != nil {
		t.Fatal(err)
	}
	var reported error
	h, err := NewHandler(db, Config{OnInternalError: func(_ *http.Request, err error) { reported = err }})
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{t: t, db: db, srv: newLocalServer(t, h)}
	_ = db.Close() // every transaction now fails inside bbolt
	r := s.do("GET", "/fhir/Patient/x", "DEFAULT", nil)
	expectOutcome(t, r, http.StatusInternalServerError, "internal server error")
	if reported == nil || strings.Contains(string(r.Body), reported.Error()) {
		t.Fatalf("cause %v leaked or not reported: %s", reported, r.Body)
	}
}

// The CapabilityStatement says what searches join: reference parameters
// are chainable, and a type that references can point at lists _has.
func TestCapabilityStatementChainsAndHas(t *testing.T) {
	s := newTestServer(t)
	cs := s.must(http.StatusOK, "GET", "/fhir/metadata", "", nil).JSON(t)
	docs := map[string]map[string]string{}
	for _, r := range cs["rest"].([]any)[0].(map[string]any)["resource"].([]any) {
		m := r.(map[string]any)
		docs[str(m, "type")] = map[string]string{}
		sps, _ := m["searchParam"].([]any)
		for _, sp := range sps {
			docs[str(m, "type")][str(sp, "name")] = str(sp, "type") + ": " + str(sp, "documentation")
		}
	}
	if d := docs["Observation"]["subject"]; !strings.Contains(d, "subject:{Type}.{parameter}") {
		t.Errorf("Observation.subject: %q", d)
	}
	if d := docs["Patient"]["_has"]; !strings.HasPrefix(d, "special: Reverse chaining") {
		t.Errorf("Patient _has: %q", d)
	}
	if d := docs["Patient"]["family"]; d != "string: " {
		t.Errorf("a string parameter is not chainable: %q", d)
	}
}

// The ids the server gives created resources are UUIDs of version 7 that
// rise strictly in byte order, across goroutines and within a
// millisecond (the index keys of a transaction's resources then land at
// the end of each value's run), and carry the time they were made (or a
// later one, when more than the counter holds were made in one).
func TestResourceIDsRise(t *testing.T) {
	v7 := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	before := time.Now().UnixMilli()
	const workers, each = 4, 5000
	got := make([][]string, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for range each {
				got[w] = append(got[w], newResourceID())
			}
		})
	}
	wg.Wait()
	var all []string
	for _, ids := range got {
		if !slices.IsSorted(ids) {
			t.Fatal("one goroutine's ids do not rise")
		}
		all = append(all, ids...)
	}
	slices.Sort(all)
	if len(slices.Compact(all)) != workers*each {
		t.Fatal("an id was given twice")
	}
	for _, id := range all {
		if !v7.MatchString(id) || !fhir.IsID(id) {
			t.Fatalf("%s is not a UUID of version 7", id)
		}
	}
	ms, err := strconv.ParseInt(strings.ReplaceAll(all[0], "-", "")[:12], 16, 64)
	if err != nil || ms < before {
		t.Errorf("the first id %s says %d ms, made at %d or after", all[0], ms, before)
	}
	// Every id above the last one given, whatever the clock says.
	last := all[len(all)-1]
	if next := newResourceID(); next <= last {
		t.Errorf("%s after %s", next, last)
	}
}

// Pages split in the buckets a write adds to are filled to appendFill,
// not bbolt's half: created resources' ids rise, so most keys go after
// the last of their bucket or run, and half-filled pages would stay so.
// Observations created in transactions fill the leaves of their current,
// versions, sequence and index buckets to more than 80 %.
func TestPagesFilledWhereWritesAppend(t *testing.T) {
	s := newTestServer(t)
	rng := rand.New(rand.NewPCG(14, 9))
	for range 6 {
		var entries []map[string]any
		for i := range 500 {
			entries = append(entries, postEntry(fmt.Sprintf("urn:uuid:o%d", i), randomOrderObs(rng)))
		}
		s.must(http.StatusOK, "POST", "/fhir", "DEFAULT", txBundle("transaction", entries...))
	}
	err := s.db.bolt.View(func(tx *bolt.Tx) error {
		part := tx.Bucket(partitionBucketName(defaultPartitionKey))
		for _, b := range []struct {
			name string
			b    *bolt.Bucket
		}{
			{"current", part.Bucket(bucketCurrent).Bucket([]byte("Observation"))},
			{"versions", part.Bucket(bucketVersions)},
			{"sequence", part.Bucket(bucketSequence)},
			{"index", part.Bucket(bucketIndex).Bucket([]byte("Observation"))},
		} {
			st := b.b.Stats()
			if fill := float64(st.LeafInuse) / float64(st.LeafAlloc); fill < 0.8 {
				t.Errorf("%s: leaves %.0f %% full (%d pages)", b.name, 100*fill, st.LeafPageN)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
