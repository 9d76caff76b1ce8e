package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// smuggling sends Alice's requests with every partition header and path HAPI
// would honour for Bob's partition (or all): none reaches Bob's data.
func (c *hapiCase) smuggling() {
	t, e := c.t, c.e
	bobID := fmt.Sprint(c.bobPart.id)
	for _, hdr := range []string{partitionHeader, strings.ToLower(partitionHeader), "X-FHIR-TENANT-ID"} {
		for _, val := range []string{bobID, "_ALL", "DEFAULT", fmt.Sprint(c.alicePart.id) + "," + bobID, c.bobPart.name} {
			res := e.do("GET", recordURL(aliceSlug, "/Observation"), c.alice, nil, hdr, val)
			res.Expect(t, http.StatusOK, fmt.Sprintf("search with %s: %s", hdr, val))
			if strings.Contains(string(res.Raw), bobCode) || len(anyEntries(res)) != 1 {
				t.Fatalf("%s: %s let alice see other data: %.600s", hdr, val, res.Raw)
			}
			read := e.do("GET", recordURL(aliceSlug, "/Observation/"+c.bobObs), c.alice, nil, hdr, val)
			if read.Status == http.StatusOK || strings.Contains(string(read.Raw), bobCode) {
				t.Fatalf("%s: %s let alice read bob's Observation: %d %.600s", hdr, val, read.Status, read.Raw)
			}
		}
	}
	// A partition name in the path is, for HAPI, a resource type below
	// Alice's own partition: refused, never Bob's data.
	for _, path := range []string{"/" + c.bobPart.name + "/Observation", "/DEFAULT/Observation", "/" + bobID + "/Observation"} {
		res := e.do("GET", recordURL(aliceSlug, path), c.alice, nil)
		if res.Status == http.StatusOK || strings.Contains(string(res.Raw), bobCode) {
			t.Errorf("GET %s: %d %.600s", path, res.Status, res.Raw)
		}
	}
	// Reads HAPI answers from more than one resource: in Alice's record
	// none shows Bob's Patient or Observation.
	bobsPatient := `"id":"` + c.bobPID + `"`
	for _, path := range []string{
		"/Patient/" + c.bobPID, "/Patient?_id=" + c.bobPID, "/Observation?subject=Patient/" + c.bobPID,
		"/Observation?_id=" + c.bobObs, "/Observation/" + c.bobObs + "/_history", "/_history", "/Observation/_history",
		"/Patient/_history", "/Observation?_include=Observation:subject", "/Patient?_revinclude=Observation:subject",
		"/Patient/" + c.alicePID + "/$everything", "/Observation?code=" + bobCode,
	} {
		res := e.do("GET", recordURL(aliceSlug, path), c.alice, nil)
		delete(res.Body, "link") // links repeat the query
		shown, _ := json.Marshal(res.Body)
		if strings.Contains(string(shown), bobCode) || strings.Contains(string(shown), bobsPatient) {
			t.Errorf("GET %s in alice's record shows bob's data: %d %.600s", path, res.Status, res.Raw)
		}
	}

	// HAPI's server-wide operations (its CapabilityStatement lists them)
	// act on every partition, whichever the request names: a record's
	// owner must reach none of them.
	bobPartition := map[string]any{"resourceType": "Parameters", "parameter": []any{
		map[string]any{"name": "id", "valueInteger": c.bobPart.id},
		map[string]any{"name": "name", "valueCode": c.bobPart.name},
	}}
	for _, op := range []struct{ method, path string }{
		{"POST", "/$partition-management-list-partitions"},
		{"GET", "/$partition-management-list-partitions"},
		{"POST", "/$partition-management-read-partition"},
		{"POST", "/$partition-management-update-partition"},
		{"POST", "/$partition-management-delete-partition"},
		{"POST", "/$partition-management-create-partition"},
		{"GET", "/$get-resource-counts"},
		{"POST", "/$expunge"},
		{"POST", "/Observation/$expunge"},
		{"POST", "/$mark-all-resources-for-reindexing"},
		{"POST", "/$perform-reindexing-pass"},
		{"POST", "/$reindex-terminology"},
		{"POST", "/$hapi.fhir.replace-references"},
		{"GET", "/$meta"},
		{"GET", "/Observation/$meta"},
		{"POST", "/Observation/$meta"},
	} {
		var body any
		if op.method == "POST" {
			body = bobPartition
		}
		res := e.do(op.method, recordURL(aliceSlug, op.path), c.alice, body)
		if res.Status < 400 || strings.Contains(string(res.Raw), c.bobPart.name) {
			t.Errorf("%s %s: %d %.400s", op.method, op.path, res.Status, res.Raw)
		}
	}
	if parts := c.h.partitions(t, c.mode); len(parts) != 2 || parts[c.bobPart.name] != c.bobPart {
		t.Fatalf("HAPI partitions after alice's operations: %v", parts)
	}

	// Writing with Bob's partition header lands in Alice's partition.
	res := e.do("POST", recordURL(aliceSlug, "/Observation"), c.alice, observation("Patient/"+c.alicePID, "1-8"),
		partitionHeader, bobID)
	res.Expect(t, http.StatusCreated, "write with bob's partition header")
	if raw := string(c.h.direct(t, c.mode, c.bobPart.key(c.mode), "/Observation")); strings.Contains(raw, `"1-8"`) {
		t.Fatalf("alice's write reached bob's HAPI partition: %.600s", raw)
	}
	e.do("DELETE", strings.TrimSuffix(res.Header.Get("Location"), "/_history/1"), c.alice, nil).Expect(t, http.StatusOK, "delete")
}

// paging follows HAPI's paging links (its _getpages URLs on the FHIR base)
// through the gateway, and checks that Bob cannot page through Alice's
// search results.
func (c *hapiCase) paging() {
	t, e := c.t, c.e
	// A query no earlier step sent: HAPI reuses a cached search's results
	// for a minute (JpaStorageSettings.reuseCachedSearchResultsForMillis),
	// and _count is no part of its cache key.
	first := e.do("GET", recordURL(aliceSlug, "/Observation?subject=Patient/"+c.alicePID+"&_count=10"), c.alice, nil).
		Expect(t, http.StatusOK, "page 1")
	next := link(first, "next")
	if !strings.HasPrefix(next, recordURL(aliceSlug, "")) {
		t.Fatalf("next link %q is not on alice's address: %.600s", next, first.Raw)
	}
	c.noUpstreamAddress("page 1", first)
	second := e.do("GET", next, c.alice, nil).Expect(t, http.StatusOK, "page 2")
	if n := len(second.Body["entry"].([]any)); n != 10 {
		t.Errorf("page 2 has %d entries", n)
	}
	c.noUpstreamAddress("page 2", second)
	// Bob asks for Alice's page through his own record. HAPI does not tie
	// a paged search to its partition (asked directly in Bob's partition, it
	// serves Alice's page): the gateway's own response filter must hold.
	query := next[strings.IndexByte(next, '?'):]
	alicesRef := `"reference":"Patient/` + c.alicePID + `"`
	if direct := string(c.h.direct(t, c.mode, c.bobPart.key(c.mode), query)); strings.Contains(direct, alicesRef) {
		t.Logf("HAPI itself serves alice's page in bob's partition (no partition check on _getpages)")
	}
	stolen := strings.Replace(next, recordURL(aliceSlug, ""), recordURL(bobSlug, ""), 1)
	res := e.do("GET", stolen, c.bob, nil)
	if res.Status == http.StatusOK && len(anyEntries(res)) > 0 || strings.Contains(string(res.Raw), alicesRef) {
		t.Errorf("bob paged through alice's search: %.600s", res.Raw)
	}
	if total, ok := res.Body["total"].(float64); ok && total > 0 {
		t.Errorf("bob learns that alice's search matched %v resources: %.300s", total, res.Raw)
	}
	t.Logf("bob asking for alice's page: %d %.300s", res.Status, res.Raw)
}

// link returns the Bundle link with the relation.
func link(r response, relation string) string {
	links, _ := r.Body["link"].([]any)
	for _, l := range links {
		m, _ := l.(map[string]any)
		if m["relation"] == relation {
			s, _ := m["url"].(string)
			return s
		}
	}
	return ""
}

func anyEntries(r response) []any {
	entries, _ := r.Body["entry"].([]any)
	return entries
}
