package store

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// readBundle loads a Bundle file as raw bytes and decoded.
func readBundle(t testing.TB, path string) ([]byte, map[string]any) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return raw, m
}

// countByType counts the resources of a Bundle per type.
func countByType(b map[string]any) map[string]int {
	out := map[string]int{}
	for _, e := range b["entry"].([]any) {
		out[str(e, "resource", "resourceType")]++
	}
	return out
}

func TestLoadSyntheaTransactions(t *testing.T) {
	s := newTestServer(t)
	for i, f := range testkit.SyntheaPaths(t) {
		part := fmt.Sprint(i + 1)
		s.createPartition(i + 1)
		raw, src := readBundle(t, f)
		resp := s.must(http.StatusOK, "POST", "/fhir", part, raw).JSON(t)
		if resp["type"] != "transaction-response" {
			t.Fatalf("%s: %v", f, resp["type"])
		}
		srcEntries, outEntries := src["entry"].([]any), resp["entry"].([]any)
		if len(outEntries) != len(srcEntries) {
			t.Fatalf("%s: %d response entries for %d", f, len(outEntries), len(srcEntries))
		}
		// Response entries are in request order, each a 201 with a location
		// of the type the request created.
		ids := map[string]string{} // fullUrl → Type/id
		for j, e := range outEntries {
			typ := str(srcEntries[j], "resource", "resourceType")
			loc := str(e, "response", "location")
			if str(e, "response", "status") != "201 Created" || !strings.HasPrefix(loc, typ+"/") || !strings.HasSuffix(loc, "/_history/1") {
				t.Fatalf("%s entry %d: %v", f, j, e)
			}
			if str(e, "response", "etag") != `W/"1"` || str(e, "response", "lastModified") == "" {
				t.Fatalf("%s entry %d: %v", f, j, e)
			}
			ids[str(srcEntries[j], "fullUrl")] = strings.TrimSuffix(loc, "/_history/1")
		}

		// Every stored resource is there, and every urn:uuid reference was
		// rewritten to the id its target got.
		want := countByType(src)
		got := map[string]int{}
		err := s.db.view(part, func(p *ptx) error {
			for _, typ := range p.types() {
				if err := p.scanCurrent(typ, func(id string, body []byte) error {
					got[typ]++
					if strings.Contains(string(body), "urn:uuid:") {
						return fmt.Errorf("%s/%s still holds a urn:uuid reference", typ, id)
					}
					var res map[string]any
					if err := json.Unmarshal(body, &res); err != nil {
						return err
					}
					return rewriteReferences(res, func(ref string) (string, error) {
						if strings.HasPrefix(ref, "#") {
							return ref, nil
						}
						rt, rid, _ := strings.Cut(ref, "/")
						if rec, err := p.current(rt, rid); err != nil || rec == nil {
							return "", fmt.Errorf("%s/%s: dangling reference %q", typ, id, ref)
						}
						return ref, nil
					})
				}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: stored %v, bundle has %v", f, got, want)
		}
		// The patient's own references point at its new id.
		var patientRef string
		for fu, ref := range ids {
			if strings.HasPrefix(ref, "Patient/") {
				patientRef = ref
				_ = fu
			}
		}
		obsCount := 0
		_ = s.db.view(part, func(p *ptx) error {
			return p.scanCurrent("Observation", func(_ string, body []byte) error {
				if strings.Contains(string(body), `"reference":"`+patientRef+`"`) {
					obsCount++
				}
				return nil
			})
		})
		if obsCount != want["Observation"] {
			t.Fatalf("%s: %d Observations reference %s, want %d", f, obsCount, patientRef, want["Observation"])
		}
	}
}

// txBundle builds a transaction Bundle from entries.
func txBundle(typ string, entries ...map[string]any) map[string]any {
	es := make([]any, len(entries))
	for i, e := range entries {
		es[i] = e
	}
	return map[string]any{"resourceType": "Bundle", "type": typ, "entry": es}
}

func postEntry(fullURL string, res map[string]any) map[string]any {
	return map[string]any{"fullUrl": fullURL, "resource": res, "request": map[string]any{"method": "POST", "url": res["resourceType"]}}
}

func putEntry(res map[string]any, extra ...string) map[string]any {
	req := map[string]any{"method": "PUT", "url": fmt.Sprintf("%s/%s", res["resourceType"], res["id"])}
	for i := 0; i+1 < len(extra); i += 2 {
		req[extra[i]] = extra[i+1]
	}
	return map[string]any{"resource": res, "request": req}
}

func TestTransactionWithOneBadEntryChangesNothing(t *testing.T) {
	s := newTestServer(t)
	s.createPartition(1)
	raw, _ := readBundle(t, testkit.SyntheaPaths(t)[5])
	s.must(http.StatusOK, "POST", "/fhir", "1", raw)
	existing := patient("Existing")
	existing["id"] = "existing"
	s.must(http.StatusCreated, "PUT", "/fhir/Patient/existing", "1", existing)
	before := dumpPartition(t, s.db, "1")

	good := func() []map[string]any {
		obs := map[string]any{"resourceType": "Observation", "status": "final", "subject": map[string]any{"reference": "urn:uuid:p"}}
		upd := patient("Changed")
		upd["id"] = "existing"
		return []map[string]any{
			postEntry("urn:uuid:p", patient("New")),
			postEntry("urn:uuid:o", obs),
			putEntry(upd),
			{"request": map[string]any{"method": "DELETE", "url": "Patient/existing2"}},
		}
	}
	cases := map[string]struct {
		bad    map[string]any
		status int
		substr string
	}{
		"stale If-Match": {putEntry(map[string]any{"resourceType": "Patient", "id": "existing3"}, "ifMatch", `W/"5"`), 412, "If-Match"},
		"dangling placeholder": {postEntry("urn:uuid:x", map[string]any{"resourceType": "Observation", "status": "final",
			"subject": map[string]any{"reference": "urn:uuid:nowhere"}}), 400, "urn:uuid:nowhere"},
		"invalid resource":  {postEntry("urn:uuid:y", map[string]any{"resourceType": "Nope"}), 400, "unknown resource type"},
		"type mismatch":     {map[string]any{"resource": patient("x"), "request": map[string]any{"method": "POST", "url": "Observation"}}, 400, "does not match"},
		"missing request":   {map[string]any{"resource": patient("x")}, 400, "request is missing"},
		"unknown operation": {map[string]any{"resource": map[string]any{"resourceType": "Parameters"}, "request": map[string]any{"method": "POST", "url": "ValueSet/$lookup"}}, 400, "$lookup"},
		"duplicate target":  {putEntry(map[string]any{"resourceType": "Patient", "id": "existing"}), 400, "both write Patient/existing"},
		"read of nothing":   {map[string]any{"request": map[string]any{"method": "GET", "url": "Patient/ghost"}}, 404, "ghost"},
		"bad method":        {map[string]any{"request": map[string]any{"method": "PATCH", "url": "Patient/existing"}}, 400, "PATCH"},
		"PUT id mismatch":   {map[string]any{"resource": map[string]any{"resourceType": "Patient", "id": "a"}, "request": map[string]any{"method": "PUT", "url": "Patient/b"}}, 400, "does not match"},
		"duplicate fullUrl": {postEntry("urn:uuid:p", patient("Twin")), 400, "same fullUrl"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			entries := append(good(), c.bad)
			expectOutcome(t, s.do("POST", "/fhir", "1", txBundle("transaction", entries...)), c.status, c.substr)
			if after := dumpPartition(t, s.db, "1"); after != before {
				t.Fatalf("a failed transaction changed the partition")
			}
		})
	}
	// The same entries without the bad one commit.
	resp := s.must(http.StatusOK, "POST", "/fhir", "1", txBundle("transaction", good()...)).JSON(t)
	if got := str(resp, "entry", 2, "response", "status"); got != "200 OK" {
		t.Fatalf("update entry status %q", got)
	}
	if after := dumpPartition(t, s.db, "1"); after == before {
		t.Fatal("the good transaction changed nothing")
	}
}

func TestTransactionOrderAndPlaceholders(t *testing.T) {
	s := newTestServer(t)
	old := patient("Old")
	old["id"] = "old"
	s.must(http.StatusCreated, "PUT", "/fhir/Patient/old", "DEFAULT", old)

	// The GET is listed first but runs last; the DELETE listed last runs
	// first; the Observation refers forward to a Patient created later in
	// the list and to a PUT by its fullUrl.
	named := patient("Named")
	named["id"] = "named"
	obs := map[string]any{"resourceType": "Observation", "status": "final",
		"subject":   map[string]any{"reference": "urn:uuid:11111111-1111-1111-1111-111111111111"},
		"performer": []any{map[string]any{"reference": "Patient/named"}},
		"hasMember": []any{map[string]any{"reference": "#contained"}},
		"focus":     []any{map[string]any{"reference": "http://example.org/fhir/Patient/named"}}}
	b := txBundle("transaction",
		map[string]any{"request": map[string]any{"method": "GET", "url": "Observation/_history"}},
		map[string]any{"request": map[string]any{"method": "GET", "url": "Patient/named"}},
		postEntry("urn:uuid:33333333-3333-3333-3333-333333333333", obs),
		postEntry("urn:uuid:11111111-1111-1111-1111-111111111111", patient("Forward")),
		map[string]any{"fullUrl": "http://example.org/fhir/Patient/named", "resource": named, "request": map[string]any{"method": "PUT", "url": "Patient/named"}},
		map[string]any{"request": map[string]any{"method": "DELETE", "url": "Patient/old"}},
	)
	// A GET of a history URL is not a supported entry.
	expectOutcome(t, s.do("POST", "/fhir", "DEFAULT", b), 400, "not a supported entry URL")

	b["entry"] = b["entry"].([]any)[1:]
	resp := s.must(http.StatusOK, "POST", "/fhir", "DEFAULT", b).JSON(t)
	want := []string{"200 OK", "201 Created", "201 Created", "201 Created", "200 OK"}
	for i, w := range want {
		if got := str(resp, "entry", i, "response", "status"); got != w {
			t.Fatalf("entry %d status %q, want %q: %v", i, got, w, resp["entry"])
		}
	}
	if str(resp, "entry", 0, "resource", "name", 0, "family") != "Named" {
		t.Fatalf("GET did not run after the PUT: %v", resp["entry"].([]any)[0])
	}
	patientID := strings.TrimSuffix(strings.TrimPrefix(str(resp, "entry", 2, "response", "location"), "Patient/"), "/_history/1")
	obsLoc := strings.TrimSuffix(str(resp, "entry", 1, "response", "location"), "/_history/1")
	stored := s.must(http.StatusOK, "GET", "/fhir/"+obsLoc, "DEFAULT", nil).JSON(t)
	if str(stored, "subject", "reference") != "Patient/"+patientID || str(stored, "performer", 0, "reference") != "Patient/named" || str(stored, "hasMember", 0, "reference") != "#contained" || str(stored, "focus", 0, "reference") != "Patient/named" {
		t.Fatalf("references not resolved: %v", stored)
	}
	s.must(http.StatusGone, "GET", "/fhir/Patient/old", "DEFAULT", nil)
}

func TestBatchEntriesAreIndependent(t *testing.T) {
	s := newTestServer(t)
	ok := patient("Ok")
	ok["id"] = "ok"
	b := txBundle("batch",
		putEntry(ok),
		putEntry(map[string]any{"resourceType": "Patient", "id": "stale"}, "ifMatch", `W/"3"`),
		map[string]any{"request": map[string]any{"method": "GET", "url": "Patient/ok"}},
		map[string]any{"request": map[string]any{"method": "GET", "url": "Patient/missing"}},
		postEntry("", map[string]any{"resourceType": "Nope"}),
		postEntry("", patient("Created")),
	)
	resp := s.must(http.StatusOK, "POST", "/fhir", "DEFAULT", b).JSON(t)
	if resp["type"] != "batch-response" {
		t.Fatalf("type %v", resp["type"])
	}
	want := []string{"201 Created", "412 Precondition Failed", "200 OK", "404 Not Found", "400 Bad Request", "201 Created"}
	for i, w := range want {
		if got := str(resp, "entry", i, "response", "status"); got != w {
			t.Fatalf("entry %d: %q, want %q", i, got, w)
		}
	}
	if str(resp, "entry", 1, "response", "outcome", "resourceType") != "OperationOutcome" {
		t.Fatalf("failed entry has no outcome: %v", resp["entry"].([]any)[1])
	}
	s.must(http.StatusOK, "GET", "/fhir/Patient/ok", "DEFAULT", nil)
}

func TestBundleTypesAtBase(t *testing.T) {
	s := newTestServer(t)
	for _, typ := range []string{"document", "collection", "searchset", "message", "history", ""} {
		expectOutcome(t, s.do("POST", "/fhir", "DEFAULT", map[string]any{"resourceType": "Bundle", "type": typ}), 400, "cannot be processed")
	}
	expectOutcome(t, s.do("POST", "/fhir", "DEFAULT", patient("x")), 400, "Bundle of type transaction or batch")
	expectOutcome(t, s.do("POST", "/fhir", "DEFAULT", `{"resourceType":"Bundle","type":"transaction","entry":[`), 400, "invalid JSON")
	expectOutcome(t, s.do("PUT", "/fhir", "DEFAULT", `{}`), 405, "not allowed")
	// An empty transaction is fine.
	s.must(http.StatusOK, "POST", "/fhir", "DEFAULT", map[string]any{"resourceType": "Bundle", "type": "transaction"})
	// A document Bundle can be stored as a resource.
	s.must(http.StatusCreated, "POST", "/fhir/Bundle", "DEFAULT", map[string]any{"resourceType": "Bundle", "type": "document"})
}
