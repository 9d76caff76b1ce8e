package e2e

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// TestHAPI runs the gateway inside real Caddy in front of a real HAPI FHIR
// JPA server (test/hapi), once per partition mode HAPI offers: the gateway
// provisions a HAPI partition per record, each record sees only its own
// data (checked in HAPI itself too), HAPI's absolute URLs come back as the
// record's address, a Synthea transaction Bundle is stored whole, PATCH of
// both kinds is judged before HAPI stores it, and client-sent partition
// headers or paths reach no other record.
func TestHAPI(t *testing.T) {
	for _, mode := range []struct{ name, gateway, hapi, extra string }{
		{"header", "header", "header", ""},
		{"url_prefix", "url_prefix", "url", ""},
		// Trusting HAPI's partitions turns the gateway's response filter
		// off: then nothing but HAPI keeps Bob from Alice's paged search.
		{"header_trusted", "header", "header", "\t\ttrust_upstream_isolation true\n"},
	} {
		t.Run(mode.name, func(t *testing.T) {
			h := startHAPI(t, mode.hapi)
			e := startGateway(t, fmt.Sprintf("\t\tpartition %s\n%s\t\tupstream reverse_proxy %s", mode.gateway, mode.extra, h.addr))
			c := &hapiCase{t: t, e: e, h: h, mode: mode.hapi}
			c.createRecords()
			c.metadata()
			c.writeAndSearch()
			c.smuggling()
			c.transaction()
			c.patch()
			c.patchDifferential()
			c.paging()
			c.deleteRecord()
		})
	}
}

// hapiCase is one gateway in front of one HAPI server, with two records.
type hapiCase struct {
	t          *testing.T
	e          *env
	h          *hapiServer
	mode       string // HAPI's: header or url
	alice, bob string // tokens
	// Per record: its Patient id, HAPI partition and Observation id.
	alicePID, bobPID   string
	alicePart, bobPart hapiPartition
	aliceObs, bobObs   string
}

const (
	aliceSlug, bobSlug = "hapi-alice", "hapi-bob"
	aliceCode, bobCode = "29463-7", "8302-2"
)

// createRecords creates one record each for Alice and Bob and finds, in
// HAPI itself, the partition the gateway provisioned for each, holding
// that record's Patient and nothing else.
func (c *hapiCase) createRecords() {
	t, e := c.t, c.e
	c.alice, c.bob = e.token("alice"), e.token("bob")
	ra := e.createRecord(c.alice, aliceSlug, "Smith", "Alice")
	parts := c.h.partitions(t, c.mode)
	if len(parts) != 1 {
		t.Fatalf("HAPI partitions after one record: %v", parts)
	}
	for _, p := range parts {
		c.alicePart = p
	}
	rb := e.createRecord(c.bob, bobSlug, "Jones", "Bob")
	parts = c.h.partitions(t, c.mode)
	if len(parts) != 2 {
		t.Fatalf("HAPI partitions after two records: %v", parts)
	}
	for name, p := range parts {
		if name != c.alicePart.name {
			c.bobPart = p
		}
	}
	c.alicePID, _ = ra["patientId"].(string)
	c.bobPID, _ = rb["patientId"].(string)
	if c.alicePID == "" || c.bobPID == "" || c.alicePID == c.bobPID {
		t.Fatalf("patient ids %q and %q", c.alicePID, c.bobPID)
	}
	if ra["fhirBase"] != recordURL(aliceSlug, "") {
		t.Errorf("fhirBase %v", ra["fhirBase"])
	}
	// Each partition in HAPI holds exactly its record's Patient.
	for _, p := range []struct {
		part hapiPartition
		pid  string
	}{{c.alicePart, c.alicePID}, {c.bobPart, c.bobPID}} {
		raw := string(c.h.direct(t, c.mode, p.part.key(c.mode), "/Patient"))
		if !strings.Contains(raw, `"total":1`) || !strings.Contains(raw, `"id":"`+p.pid+`"`) {
			t.Errorf("HAPI partition %s holds: %.600s", p.part.name, raw)
		}
	}
	if raw := string(c.h.direct(t, c.mode, "DEFAULT", "/Patient")); !strings.Contains(raw, `"total":0`) {
		t.Errorf("HAPI's DEFAULT partition holds Patients: %.600s", raw)
	}
}

// metadata reads each record's public CapabilityStatement, Alice's first:
// HAPI builds one for all callers from the first request's address (Alice's
// host, in url_prefix mode without her partition) and caches it, so this
// checks that the gateway gives each record its own address there, and
// never another record's name.
func (c *hapiCase) metadata() {
	t, e := c.t, c.e
	for _, r := range []struct{ slug, other string }{{aliceSlug, bobSlug}, {bobSlug, aliceSlug}} {
		res := e.do("GET", recordURL(r.slug, "/metadata"), "", nil).Expect(t, http.StatusOK, "metadata of "+r.slug)
		impl, _ := res.Body["implementation"].(map[string]any)
		if impl["url"] != recordURL(r.slug, "") {
			t.Errorf("%s: CapabilityStatement.implementation.url is %v, want %s", r.slug, impl["url"], recordURL(r.slug, ""))
		}
		if strings.Contains(string(res.Raw), r.other) {
			t.Errorf("%s: the CapabilityStatement names the record %s: %v", r.slug, r.other, impl)
		}
		c.noUpstreamAddress("metadata of "+r.slug, res)
	}
}

// writeAndSearch writes an Observation in each record and checks that each
// record sees only its own, under its own address.
func (c *hapiCase) writeAndSearch() {
	t, e := c.t, c.e
	for _, w := range []struct {
		slug, tok, pid, code string
		id                   *string
	}{{aliceSlug, c.alice, c.alicePID, aliceCode, &c.aliceObs}, {bobSlug, c.bob, c.bobPID, bobCode, &c.bobObs}} {
		res := e.do("POST", recordURL(w.slug, "/Observation"), w.tok, observation("Patient/"+w.pid, w.code))
		res.Expect(t, http.StatusCreated, "write in "+w.slug)
		loc := res.Header.Get("Location")
		prefix := recordURL(w.slug, "/Observation/")
		if !strings.HasPrefix(loc, prefix) {
			t.Fatalf("Location %q is not on the record's address %s", loc, prefix)
		}
		*w.id = strings.SplitN(strings.TrimPrefix(loc, prefix), "/", 2)[0]
		c.noUpstreamAddress("create in "+w.slug, res)
	}
	for _, r := range []struct{ slug, tok, code, other, id string }{
		{aliceSlug, c.alice, aliceCode, bobCode, c.aliceObs}, {bobSlug, c.bob, bobCode, aliceCode, c.bobObs},
	} {
		res := e.do("GET", recordURL(r.slug, "/Observation"), r.tok, nil).Expect(t, http.StatusOK, "search "+r.slug)
		body := string(res.Raw)
		if len(anyEntries(res)) != 1 || !strings.Contains(body, r.code) || strings.Contains(body, r.other) {
			t.Errorf("%s sees: %.800s", r.slug, body)
		}
		for _, want := range []string{recordURL(r.slug, "/Observation/"+r.id), recordURL(r.slug, "/Observation")} {
			if !strings.Contains(body, want) {
				t.Errorf("%s: the search lacks %s: %.800s", r.slug, want, body)
			}
		}
		c.noUpstreamAddress("search "+r.slug, res)
		read := e.do("GET", recordURL(r.slug, "/Observation/"+r.id), r.tok, nil).Expect(t, http.StatusOK, "read "+r.slug)
		if cl := read.Header.Get("Content-Location"); cl != "" && !strings.HasPrefix(cl, recordURL(r.slug, "/Observation/"+r.id)) {
			t.Errorf("Content-Location %q", cl)
		}
	}
	// HAPI itself holds each Observation in its record's partition only.
	for _, p := range []struct {
		part       hapiPartition
		code, miss string
	}{{c.alicePart, aliceCode, bobCode}, {c.bobPart, bobCode, aliceCode}} {
		raw := string(c.h.direct(t, c.mode, p.part.key(c.mode), "/Observation"))
		if !strings.Contains(raw, p.code) || strings.Contains(raw, p.miss) {
			t.Errorf("HAPI partition %s holds: %.600s", p.part.name, raw)
		}
	}
	// Bob's Observation does not exist in Alice's record, even by id.
	e.do("GET", recordURL(aliceSlug, "/Observation/"+c.bobObs), c.alice, nil).
		ExpectOutcome(t, http.StatusNotFound, "alice reads bob's Observation by id")
}

// transaction posts a Synthea patient's transaction Bundle, aimed at
// Alice's Patient, through the gateway into HAPI: stored whole, searchable
// in Alice's record only.
func (c *hapiCase) transaction() {
	t, e := c.t, c.e
	path := filepath.Join("..", "testdata", "fhir", "synthea", "Ned_Hintz_e4b9259d-0f54-48d1-a35d-b526729a4dfe.json")
	bundle, _, counts := syntheaForRecord(t, path, c.alicePID)
	res := e.do("POST", recordURL(aliceSlug, ""), c.alice, bundle).Expect(t, http.StatusOK, "transaction")
	entries, _ := res.Body["entry"].([]any)
	if res.Body["type"] != "transaction-response" || len(entries) != len(bundle["entry"].([]any)) {
		t.Fatalf("transaction response: %.500s", res.Raw)
	}
	for i, en := range entries {
		resp, _ := en.(map[string]any)["response"].(map[string]any)
		status, _ := resp["status"].(string)
		if !strings.HasPrefix(status, "200") && !strings.HasPrefix(status, "201") {
			t.Errorf("entry %d: %v", i, resp)
		}
	}
	c.noUpstreamAddress("transaction", res)
	for _, typ := range []string{"Observation", "Encounter", "Immunization", "Condition", "Claim"} {
		got := e.do("GET", recordURL(aliceSlug, "/"+typ+"?patient="+c.alicePID+"&_summary=count"), c.alice, nil).
			Expect(t, http.StatusOK, "count "+typ)
		want := counts[typ]
		if typ == "Observation" {
			want++ // the one written before
		}
		if got.Body["total"] != float64(want) {
			t.Errorf("%s: %v in alice's record, want %d", typ, got.Body["total"], want)
		}
	}
	bob := e.do("GET", recordURL(bobSlug, "/Observation?_summary=count"), c.bob, nil).Expect(t, http.StatusOK, "bob's count")
	if bob.Body["total"] != float64(1) {
		t.Errorf("bob's record has %v Observations after alice's transaction", bob.Body["total"])
	}
	// The same Bundle aimed at Bob's Patient is refused whole.
	wrong, _, _ := syntheaForRecord(t, path, c.bobPID)
	e.do("POST", recordURL(aliceSlug, ""), c.alice, wrong).ExpectOutcome(t, http.StatusUnprocessableEntity, "bundle aimed at bob")
}

// deleteRecord deletes Bob's record: its HAPI partition goes, and a new
// record under the same slug gets a new, empty partition.
func (c *hapiCase) deleteRecord() {
	t, e := c.t, c.e
	e.do("DELETE", apex("/pfr/v1/records/"+bobSlug), c.bob, nil, "X-PFR-Confirm-Delete", bobSlug).
		Expect(t, http.StatusNoContent, "delete bob's record")
	parts := c.h.partitions(t, c.mode)
	if _, ok := parts[c.bobPart.name]; ok || len(parts) != 1 {
		t.Errorf("HAPI partitions after deleting bob's record: %v", parts)
	}
	again := e.createRecord(c.bob, bobSlug, "Jones", "Bob")
	parts = c.h.partitions(t, c.mode)
	if len(parts) != 2 {
		t.Fatalf("HAPI partitions after recreating bob's record: %v", parts)
	}
	for name, p := range parts {
		if name != c.alicePart.name && (name == c.bobPart.name || p.id == c.bobPart.id) {
			t.Errorf("the new record reuses the old partition %v", p)
		}
	}
	res := e.do("GET", recordURL(bobSlug, "/Observation"), c.bob, nil).Expect(t, http.StatusOK, "new record's search")
	if n := len(anyEntries(res)); n != 0 || again["patientId"] == c.bobPID {
		t.Errorf("the new record sees %d old Observations: %.600s", n, res.Raw)
	}
}

// noUpstreamAddress fails if HAPI's own address or a partition name shows
// in a response's body or headers.
func (c *hapiCase) noUpstreamAddress(what string, r response) {
	c.t.Helper()
	text := string(r.Raw)
	for k, vs := range r.Header {
		text += "\n" + k + ": " + strings.Join(vs, ", ")
	}
	for _, leak := range []string{c.h.addr, "127.0.0.1", c.alicePart.name, c.bobPart.name} {
		if i := strings.Index(text, leak); leak != "" && i >= 0 {
			c.t.Errorf("%s: the response shows %q: …%s…", what, leak, text[max(0, i-200):min(len(text), i+len(leak)+100)])
		}
	}
}
