package store

import (
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// loadSynthea loads one Synthea Bundle into partition part and returns the
// source Bundle and the map from its fullUrls to the stored "Type/id".
func loadSynthea(t *testing.T, s *testServer, path, part string) (map[string]any, map[string]string) {
	t.Helper()
	raw, src := readBundle(t, path)
	resp := s.must(http.StatusOK, "POST", "/fhir", part, raw).JSON(t)
	ids := map[string]string{}
	for i, e := range src["entry"].([]any) {
		loc := str(resp, "entry", i, "response", "location")
		ids[str(e, "fullUrl")] = strings.TrimSuffix(loc, "/_history/1")
	}
	return src, ids
}

// patientOf returns the fullUrl of the Bundle's Patient.
func patientOf(t *testing.T, src map[string]any) string {
	for _, e := range src["entry"].([]any) {
		if str(e, "resource", "resourceType") == "Patient" {
			return str(e, "fullUrl")
		}
	}
	t.Fatal("no Patient in the Bundle")
	return ""
}

// resourcesOf returns the Bundle's resources of one type.
func resourcesOf(src map[string]any, typ string) []map[string]any {
	var out []map[string]any
	for _, e := range src["entry"].([]any) {
		if r, _ := e.(map[string]any)["resource"].(map[string]any); r["resourceType"] == typ {
			out = append(out, r)
		}
	}
	return out
}

// pageAll follows next links from first and returns every entry of mode
// match, failing if paging does not end within limit pages.
func pageAll(t *testing.T, s *testServer, first, part string, limit int, between func()) ([]map[string]any, float64) {
	t.Helper()
	var out []map[string]any
	next := first
	var total float64 = -1
	for pages := 0; next != ""; pages++ {
		if pages >= limit {
			t.Fatalf("paging %s does not end after %d pages", first, limit)
		}
		b := s.must(http.StatusOK, "GET", next, part, nil).JSON(t)
		if b["type"] != "searchset" {
			t.Fatalf("bundle type %v", b["type"])
		}
		if total == -1 {
			total = b["total"].(float64)
		} else if b["total"].(float64) != total {
			t.Fatalf("total changed while paging: %v then %v", total, b["total"])
		}
		entries, _ := b["entry"].([]any)
		for _, e := range entries {
			if str(e, "search", "mode") == "match" {
				out = append(out, e.(map[string]any)["resource"].(map[string]any))
			}
		}
		next = ""
		for _, l := range b["link"].([]any) {
			if str(l, "relation") == "next" {
				u := str(l, "url")
				if !strings.HasPrefix(u, s.srv.URL+"/fhir") {
					t.Fatalf("next link %q is not under the base", u)
				}
				next = strings.TrimPrefix(u, s.srv.URL)
			}
		}
		if between != nil {
			between()
		}
	}
	return out, total
}

func TestSyntheaSearchCounts(t *testing.T) {
	s := newTestServer(t)
	for i, f := range testkit.SyntheaPaths(t) {
		part := fmt.Sprint(i + 1)
		s.createPartition(i + 1)
		src, ids := loadSynthea(t, s, f, part)
		patientFull := patientOf(t, src)
		patientRef := ids[patientFull]

		// Observation?patient=… : every Observation whose subject is the patient.
		wantObs := 0
		for _, o := range resourcesOf(src, "Observation") {
			if str(o, "subject", "reference") == patientFull {
				wantObs++
			}
		}
		if wantObs == 0 || len(resourcesOf(src, "Immunization")) == 0 || len(resourcesOf(src, "Encounter")) == 0 {
			t.Fatalf("%s: the Bundle implies nothing to count", f)
		}
		b := s.must(http.StatusOK, "GET", "/fhir/Observation?patient="+patientRef+"&_summary=count", part, nil).JSON(t)
		if b["total"].(float64) != float64(wantObs) || b["entry"] != nil {
			t.Fatalf("%s: Observation?patient total %v, want %d", f, b["total"], wantObs)
		}
		obs, total := pageAll(t, s, "/fhir/Observation?patient="+strings.TrimPrefix(patientRef, "Patient/")+"&_count=50", part, 10, nil)
		if len(obs) != wantObs || total != float64(wantObs) {
			t.Fatalf("%s: paged %d Observations (total %v), want %d", f, len(obs), total, wantObs)
		}

		// Immunization?patient=…&date=ge<the median immunization's instant>.
		imms := resourcesOf(src, "Immunization")
		var dates []time.Time
		for _, im := range imms {
			d, err := time.Parse(time.RFC3339, str(im, "occurrenceDateTime"))
			if err != nil {
				t.Fatalf("%s: immunization date %q", f, str(im, "occurrenceDateTime"))
			}
			dates = append(dates, d)
		}
		sort.Slice(dates, func(a, b int) bool { return dates[a].Before(dates[b]) })
		pivot := dates[len(dates)/2]
		wantImm := 0
		for _, d := range dates {
			if !d.Before(pivot) {
				wantImm++
			}
		}
		if wantImm == len(dates) && len(dates) > 1 && dates[0].Before(pivot) {
			t.Fatalf("%s: pivot %s excludes nothing", f, pivot)
		}
		q := url.Values{"patient": {patientRef}, "date": {"ge" + pivot.Format(time.RFC3339)}, "_count": {"1000"}}
		b = s.must(http.StatusOK, "GET", "/fhir/Immunization?"+q.Encode(), part, nil).JSON(t)
		if b["total"].(float64) != float64(wantImm) || len(b["entry"].([]any)) != wantImm {
			t.Fatalf("%s: Immunization date ge %s: %v, want %d", f, pivot, b["total"], wantImm)
		}

		// Encounter?_sort=-date&_count=5 to the end: each once, newest first.
		wantEnc := map[string]bool{}
		for _, e := range resourcesOf(src, "Encounter") {
			wantEnc[str(e, "period", "start")+"|"+str(e, "id")] = true
		}
		encs, total := pageAll(t, s, "/fhir/Encounter?_sort=-date&_count=5", part, 20, nil)
		seen := map[string]bool{}
		prev := "9999"
		for _, e := range encs {
			id := str(e, "id")
			if seen[id] {
				t.Fatalf("%s: Encounter %s seen twice", f, id)
			}
			seen[id] = true
			start := str(e, "period", "start")
			ts, _ := time.Parse(time.RFC3339, start)
			tp, _ := time.Parse(time.RFC3339, prev)
			if prev != "9999" && ts.After(tp) {
				t.Fatalf("%s: Encounters not sorted by -date: %s after %s", f, start, prev)
			}
			prev = start
		}
		if len(encs) != len(wantEnc) || total != float64(len(wantEnc)) {
			t.Fatalf("%s: paged %d Encounters (total %v), want %d", f, len(encs), total, len(wantEnc))
		}
	}
}

func TestPagingIsStableWhileWriting(t *testing.T) {
	s := newTestServer(t)
	for i := 0; i < 12; i++ {
		s.must(http.StatusCreated, "POST", "/fhir/Patient", "DEFAULT", patient(fmt.Sprintf("Stable%02d", i)))
	}
	var firstIDs []string
	writes := 0
	got, total := pageAll(t, s, "/fhir/Patient?family=Stable&_sort=family&_count=5", "DEFAULT", 10, func() {
		// Between pages: a new match sorting first, and a deletion.
		writes++
		s.must(http.StatusCreated, "POST", "/fhir/Patient", "DEFAULT", patient(fmt.Sprintf("Stable00-%d", writes)))
	})
	for _, r := range got {
		firstIDs = append(firstIDs, str(r, "name", 0, "family"))
	}
	if len(got) != 12 || total != 12 {
		t.Fatalf("paged %d (total %v): %v", len(got), total, firstIDs)
	}
	for i, name := range firstIDs {
		if name != fmt.Sprintf("Stable%02d", i) {
			t.Fatalf("page order changed while writing: %v", firstIDs)
		}
	}
	// A fresh search sees the new ones.
	b := s.must(http.StatusOK, "GET", "/fhir/Patient?family=Stable&_summary=count", "DEFAULT", nil).JSON(t)
	if b["total"].(float64) != float64(12+writes) {
		t.Fatalf("fresh total %v", b["total"])
	}
}

func TestSearchPagesOfOtherPartitionsAndExpiry(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := newTestServer(t)
	s.db.now = func() time.Time { return now }
	s.createPartition(1)
	for i := 0; i < 3; i++ {
		s.must(http.StatusCreated, "POST", "/fhir/Patient", "1", patient("Paged"))
	}
	b := s.must(http.StatusOK, "GET", "/fhir/Patient?_count=1", "1", nil).JSON(t)
	var next string
	for _, l := range b["link"].([]any) {
		if str(l, "relation") == "next" {
			next = strings.TrimPrefix(str(l, "url"), s.srv.URL)
		}
	}
	if next == "" {
		t.Fatal("no next link")
	}
	s.must(http.StatusOK, "GET", next, "1", nil)
	expectOutcome(t, s.do("GET", next, "DEFAULT", nil), http.StatusGone, "does not exist")
	expectOutcome(t, s.do("GET", "/fhir?_getpages=forged&_getpagesoffset=1", "1", nil), http.StatusGone, "does not exist")
	now = now.Add(snapshotTTL + time.Minute)
	expectOutcome(t, s.do("GET", next, "1", nil), http.StatusGone, "may have expired")
	// Deleting the partition drops its snapshots.
	now = now.Add(-snapshotTTL)
	s.must(http.StatusOK, "GET", "/fhir/Patient?_count=1", "1", nil)
	s.must(http.StatusOK, "POST", "/fhir/$partition-management-delete-partition", "DEFAULT",
		map[string]any{"resourceType": "Parameters", "parameter": []any{map[string]any{"name": "id", "valueInteger": 1}}})
	if left := s.db.snapshots.count(); left != 0 {
		t.Fatalf("%d snapshots left after the partition was deleted", left)
	}
}

func TestSearchControls(t *testing.T) {
	s := newTestServer(t)
	pid := str(s.must(http.StatusCreated, "POST", "/fhir/Patient", "DEFAULT", patient("Incl")).JSON(t), "id")
	for i := 0; i < 3; i++ {
		s.must(http.StatusCreated, "POST", "/fhir/Observation", "DEFAULT", map[string]any{"resourceType": "Observation", "status": "final",
			"code": map[string]any{"text": "x"}, "subject": map[string]any{"reference": "Patient/" + pid}})
	}

	// Unknown parameters: lenient reports, strict rejects.
	b := s.must(http.StatusOK, "GET", "/fhir/Observation?bogus=1", "DEFAULT", nil).JSON(t)
	entries := b["entry"].([]any)
	last := entries[len(entries)-1]
	if str(last, "search", "mode") != "outcome" || !strings.Contains(string(testkit.MustJSON(t, last)), "bogus") || b["total"].(float64) != 3 {
		t.Fatalf("lenient: %v", last)
	}
	expectOutcome(t, s.do("GET", "/fhir/Observation?bogus=1", "DEFAULT", nil, "Prefer", "handling=strict"), 400, "bogus")
	expectOutcome(t, s.do("GET", "/fhir/Observation?date=notadate", "DEFAULT", nil), 400, "date")
	expectOutcome(t, s.do("GET", "/fhir/Observation?_count=x", "DEFAULT", nil), 400, "_count")

	// _elements keeps the mandatory elements and marks the entry SUBSETTED.
	b = s.must(http.StatusOK, "GET", "/fhir/Observation?_elements=status", "DEFAULT", nil).JSON(t)
	e0 := b["entry"].([]any)[0]
	if str(e0, "resource", "status") != "final" || str(e0, "resource", "subject", "reference") != "" || !strings.Contains(string(testkit.MustJSON(t, e0)), "SUBSETTED") {
		t.Fatalf("_elements: %v", e0)
	}

	// _summary=data drops the narrative; true and text are not supported.
	s.must(http.StatusCreated, "POST", "/fhir/Observation", "DEFAULT", map[string]any{"resourceType": "Observation", "status": "final",
		"text": map[string]any{"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">narrative</div>"}})
	b = s.must(http.StatusOK, "GET", "/fhir/Observation?_summary=data&_count=100", "DEFAULT", nil).JSON(t)
	if strings.Contains(string(testkit.MustJSON(t, b)), "narrative") || !strings.Contains(string(testkit.MustJSON(t, b)), "SUBSETTED") {
		t.Fatalf("_summary=data: %v", b)
	}
	// _summary=true keeps the isSummary elements (subject, code, status;
	// not the narrative, not note); _summary=text the narrative, id, meta
	// and the mandatory elements (status, code).
	summarized := s.must(http.StatusCreated, "POST", "/fhir/Observation", "DEFAULT", map[string]any{"resourceType": "Observation", "status": "final",
		"code": map[string]any{"text": "summarized"}, "subject": map[string]any{"reference": "Patient/" + pid},
		"note": []any{map[string]any{"text": "a note"}}, "valueQuantity": map[string]any{"value": 1.5, "unit": "mg"},
		"component": []any{map[string]any{"code": map[string]any{"text": "c"}, "valueString": "v", "interpretation": []any{map[string]any{"text": "high"}}}},
		"text":      map[string]any{"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">summary narrative</div>"}})
	b = s.do("GET", "/fhir/Observation?_summary=true&code:text=summarized", "DEFAULT", nil, "Prefer", "handling=strict").JSON(t)
	sum := b["entry"].([]any)[0].(map[string]any)["resource"].(map[string]any)
	if sum["note"] != nil || sum["text"] != nil || str(sum, "subject", "reference") == "" || str(sum, "status") != "final" ||
		str(sum, "valueQuantity", "unit") != "mg" || str(sum, "component", 0, "valueString") != "v" || str(sum, "component", 0, "interpretation") != "" ||
		!strings.Contains(string(testkit.MustJSON(t, sum)), "SUBSETTED") {
		t.Fatalf("_summary=true: %v", sum)
	}
	b = s.do("GET", "/fhir/Observation?_summary=text&code:text=summarized", "DEFAULT", nil, "Prefer", "handling=strict").JSON(t)
	sum = b["entry"].([]any)[0].(map[string]any)["resource"].(map[string]any)
	if sum["note"] != nil || sum["subject"] != nil || sum["valueQuantity"] != nil || str(sum, "text", "status") != "generated" ||
		str(sum, "status") != "final" || str(sum, "code", "text") != "summarized" || str(sum, "id") == "" {
		t.Fatalf("_summary=text: %v", sum)
	}
	s.must(http.StatusOK, "DELETE", "/fhir/Observation/"+str(summarized.JSON(t), "id"), "DEFAULT", nil)
	all := s.must(http.StatusOK, "GET", "/fhir/Observation?_summary=data&_count=100", "DEFAULT", nil).JSON(t)
	for _, e := range all["entry"].([]any) {
		if str(e, "resource", "status") == "final" && str(e, "resource", "subject", "reference") == "" {
			s.must(http.StatusOK, "DELETE", "/fhir/Observation/"+str(e, "resource", "id"), "DEFAULT", nil)
		}
	}

	// _include and _revinclude.
	b = s.must(http.StatusOK, "GET", "/fhir/Observation?_include=Observation:patient", "DEFAULT", nil).JSON(t)
	modes := map[string]int{}
	for _, e := range b["entry"].([]any) {
		modes[str(e, "search", "mode")+"/"+str(e, "resource", "resourceType")]++
	}
	if modes["match/Observation"] != 3 || modes["include/Patient"] != 1 || b["total"].(float64) != 3 {
		t.Fatalf("_include: %v", modes)
	}
	// The same rule inside a batch: the entry's searchset has the include.
	bb := s.must(http.StatusOK, "POST", "/fhir", "DEFAULT", map[string]any{"resourceType": "Bundle", "type": "batch",
		"entry": []any{map[string]any{"request": map[string]any{"method": "GET", "url": "Observation?_include=Observation:patient"}}}}).JSON(t)
	inner := bb["entry"].([]any)[0].(map[string]any)["resource"].(map[string]any)
	modes = map[string]int{}
	for _, e := range inner["entry"].([]any) {
		modes[str(e, "search", "mode")+"/"+str(e, "resource", "resourceType")]++
	}
	if modes["match/Observation"] != 3 || modes["include/Patient"] != 1 {
		t.Fatalf("_include in a batch: %v", modes)
	}
	b = s.must(http.StatusOK, "GET", "/fhir/Patient?_id="+pid+"&_revinclude=Observation:patient", "DEFAULT", nil).JSON(t)
	modes = map[string]int{}
	for _, e := range b["entry"].([]any) {
		modes[str(e, "search", "mode")+"/"+str(e, "resource", "resourceType")]++
	}
	if modes["match/Patient"] != 1 || modes["include/Observation"] != 3 {
		t.Fatalf("_revinclude: %v", modes)
	}

	// POST _search takes form parameters.
	r := s.do("POST", "/fhir/Observation/_search", "DEFAULT", "patient="+pid, "Content-Type", "application/x-www-form-urlencoded")
	if r.Status != 200 || r.JSON(t)["total"].(float64) != 3 {
		t.Fatalf("POST _search: %d %s", r.Status, r.Body)
	}
	expectOutcome(t, s.do("POST", "/fhir/Observation/_search", "DEFAULT", `{}`), 415, "form")
	// GET [type]/_search is GET [type].
	r = s.do("GET", "/fhir/Observation/_search?patient="+pid, "DEFAULT", nil)
	if r.Status != 200 || r.JSON(t)["total"].(float64) != 3 {
		t.Fatalf("GET _search: %d %s", r.Status, r.Body)
	}

	// _count caps at 1000, _count=0 is a count.
	b = s.must(http.StatusOK, "GET", "/fhir/Observation?_count=0", "DEFAULT", nil).JSON(t)
	if b["entry"] != nil || b["total"].(float64) != 3 {
		t.Fatalf("_count=0: %v", b)
	}
	// Deleted resources are not found.
	all = s.must(http.StatusOK, "GET", "/fhir/Observation", "DEFAULT", nil).JSON(t)
	s.must(http.StatusOK, "DELETE", "/fhir/Observation/"+str(all, "entry", 0, "resource", "id"), "DEFAULT", nil)
	if got := s.must(http.StatusOK, "GET", "/fhir/Observation", "DEFAULT", nil).JSON(t)["total"].(float64); got != 2 {
		t.Fatalf("after delete total %v", got)
	}
	expectOutcome(t, s.do("GET", "/fhir", "DEFAULT", nil), 400, "not supported")
}

func TestConditionalInteractions(t *testing.T) {
	s := newTestServer(t)
	withID := func(system, value string) map[string]any {
		p := patient("Cond")
		p["identifier"] = []any{map[string]any{"system": system, "value": value}}
		return p
	}
	r := s.must(http.StatusCreated, "POST", "/fhir/Patient", "DEFAULT", withID("urn:sys", "1"), "If-None-Exist", "identifier=urn:sys|1")
	id := str(r.JSON(t), "id")
	r = s.must(http.StatusOK, "POST", "/fhir/Patient", "DEFAULT", withID("urn:sys", "1"), "If-None-Exist", "Patient?identifier=urn:sys|1")
	if str(r.JSON(t), "id") != id {
		t.Fatal("conditional create did not return the match")
	}
	s.must(http.StatusCreated, "POST", "/fhir/Patient", "DEFAULT", withID("urn:sys", "dup"))
	s.must(http.StatusCreated, "POST", "/fhir/Patient", "DEFAULT", withID("urn:sys", "dup"))
	expectOutcome(t, s.do("POST", "/fhir/Patient", "DEFAULT", withID("urn:sys", "dup"), "If-None-Exist", "identifier=urn:sys|dup"), 412, "matches 2")
	expectOutcome(t, s.do("POST", "/fhir/Patient", "DEFAULT", withID("urn:sys", "x"), "If-None-Exist", "bogus=1"), 400, "bogus")

	// Conditional update: one match updates it, none creates, two is 412.
	upd := withID("urn:sys", "1")
	r = s.must(http.StatusOK, "PUT", "/fhir/Patient?identifier=urn:sys|1", "DEFAULT", upd)
	if str(r.JSON(t), "id") != id || str(r.JSON(t), "meta", "versionId") != "2" {
		t.Fatalf("conditional update: %s", r.Body)
	}
	s.must(http.StatusCreated, "PUT", "/fhir/Patient?identifier=urn:sys|new", "DEFAULT", withID("urn:sys", "new"))
	expectOutcome(t, s.do("PUT", "/fhir/Patient?identifier=urn:sys|dup", "DEFAULT", withID("urn:sys", "dup")), 412, "matches 2")
	bad := withID("urn:sys", "1")
	bad["id"] = "other"
	expectOutcome(t, s.do("PUT", "/fhir/Patient?identifier=urn:sys|1", "DEFAULT", bad), 400, "does not match")
	expectOutcome(t, s.do("PUT", "/fhir/Patient", "DEFAULT", withID("urn:sys", "1")), 400, "search criteria")

	// Conditional delete: single match only.
	expectOutcome(t, s.do("DELETE", "/fhir/Patient?identifier=urn:sys|dup", "DEFAULT", nil), 412, "matches 2")
	s.must(http.StatusOK, "DELETE", "/fhir/Patient?identifier=urn:sys|1", "DEFAULT", nil)
	s.must(http.StatusGone, "GET", "/fhir/Patient/"+id, "DEFAULT", nil)
	s.must(http.StatusOK, "DELETE", "/fhir/Patient?identifier=urn:sys|none", "DEFAULT", nil)
}

func TestOfficialTransactionExample(t *testing.T) {
	s := newTestServer(t)
	s.createPartition(1)
	raw, src := readBundle(t, "../testdata/fhir/spec/Bundle-bundle-transaction.json")

	// As published it asks for ValueSet/$lookup, which this server does not
	// implement: the whole transaction fails and nothing is stored.
	before := dumpPartition(t, s.db, "1")
	expectOutcome(t, s.do("POST", "/fhir", "1", raw), 400, "$lookup")
	if dumpPartition(t, s.db, "1") != before {
		t.Fatal("failed transaction stored something")
	}

	// Without that entry, and with the state its preconditions expect
	// (Patient/123a at version 2, Patient/12334 existing), it commits.
	var entries []map[string]any
	for _, e := range src["entry"].([]any) {
		if str(e, "request", "url") != "ValueSet/$lookup" {
			entries = append(entries, e.(map[string]any))
		}
	}
	pre := map[string]any{"resourceType": "Patient", "id": "123a", "active": false}
	s.must(http.StatusCreated, "PUT", "/fhir/Patient/123a", "1", pre)
	s.must(http.StatusOK, "PUT", "/fhir/Patient/123a", "1", pre)
	s.must(http.StatusCreated, "PUT", "/fhir/Patient/12334", "1", map[string]any{"resourceType": "Patient", "id": "12334"})
	b := txBundle("transaction", entries...)
	resp := s.must(http.StatusOK, "POST", "/fhir", "1", b).JSON(t)
	want := []string{"201 Created", "201 Created", "201 Created", "201 Created", "200 OK", "200 OK", "200 OK", "200 OK", "200 OK"}
	for i, w := range want {
		if got := str(resp, "entry", i, "response", "status"); got != w {
			t.Fatalf("entry %d (%s %s): %q, want %q", i, str(entries[i], "request", "method"), str(entries[i], "request", "url"), got, w)
		}
	}
	// The GET Patient?name=peter ran last and saw the five Peters written.
	if str(resp, "entry", 7, "resource", "type") != "searchset" || resp["entry"].([]any)[7].(map[string]any)["resource"].(map[string]any)["total"].(float64) != 5 {
		t.Fatalf("GET entry: %v", resp["entry"].([]any)[7])
	}
	if v := str(s.must(http.StatusOK, "GET", "/fhir/Patient/123a", "1", nil).JSON(t), "meta", "versionId"); v != "3" {
		t.Fatalf("Patient/123a at version %s", v)
	}
	// Again: ifNoneExist now matches, the conditional PUT updates, the
	// If-Match on 123a is stale (412) and rolls everything back.
	expectOutcome(t, s.do("POST", "/fhir", "1", b), 412, "Patient/123a")
	for i := range entries {
		if str(entries[i], "request", "url") == "Patient/123a" {
			entries[i]["request"].(map[string]any)["ifMatch"] = `W/"3"`
		}
	}
	resp = s.must(http.StatusOK, "POST", "/fhir", "1", txBundle("transaction", entries...)).JSON(t)
	if got := str(resp, "entry", 1, "response", "status"); got != "200 OK" {
		t.Fatalf("ifNoneExist entry on the second run: %q", got)
	}
	if got := str(resp, "entry", 3, "response", "status"); got != "200 OK" {
		t.Fatalf("conditional PUT on the second run: %q", got)
	}
	c := s.must(http.StatusOK, "GET", "/fhir/Patient?identifier=http:/example.org/fhir/ids|234234&_summary=count", "1", nil).JSON(t)
	if c["total"].(float64) != 1 {
		t.Fatalf("ifNoneExist created a duplicate: %v", c["total"])
	}
}

func TestConditionalReferencesInTransaction(t *testing.T) {
	s := newTestServer(t)
	p := patient("Ref")
	p["identifier"] = []any{map[string]any{"system": "urn:mrn", "value": "42"}}
	pid := str(s.must(http.StatusCreated, "POST", "/fhir/Patient", "DEFAULT", p).JSON(t), "id")
	obs := map[string]any{"resourceType": "Observation", "status": "final", "subject": map[string]any{"reference": "Patient?identifier=urn:mrn|42"}}
	resp := s.must(http.StatusOK, "POST", "/fhir", "DEFAULT", txBundle("transaction", postEntry("urn:uuid:a", obs))).JSON(t)
	loc := strings.TrimSuffix(str(resp, "entry", 0, "response", "location"), "/_history/1")
	if got := str(s.must(http.StatusOK, "GET", "/fhir/"+loc, "DEFAULT", nil).JSON(t), "subject", "reference"); got != "Patient/"+pid {
		t.Fatalf("conditional reference resolved to %q", got)
	}
	obs["subject"] = map[string]any{"reference": "Patient?identifier=urn:mrn|nobody"}
	expectOutcome(t, s.do("POST", "/fhir", "DEFAULT", txBundle("transaction", postEntry("urn:uuid:a", obs))), 404, "No resources match")
	s.must(http.StatusCreated, "POST", "/fhir/Patient", "DEFAULT", p)
	obs["subject"] = map[string]any{"reference": "Patient?identifier=urn:mrn|42"}
	expectOutcome(t, s.do("POST", "/fhir", "DEFAULT", txBundle("transaction", postEntry("urn:uuid:a", obs))), 412, "Multiple resources")
}

func TestExpiredSnapshotsAreSwept(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := newTestServer(t)
	s.db.now = func() time.Time { return now }
	for i := 0; i < 3; i++ {
		s.must(http.StatusCreated, "POST", "/fhir/Patient", "DEFAULT", patient("Sweep"))
	}
	count := s.db.snapshots.count
	s.must(http.StatusOK, "GET", "/fhir/Patient?_count=1", "DEFAULT", nil)
	s.must(http.StatusOK, "GET", "/fhir/Patient?_count=1", "DEFAULT", nil)
	if count() != 2 {
		t.Fatalf("%d snapshots, want 2", count())
	}
	now = now.Add(snapshotTTL + sweepInterval)
	s.must(http.StatusOK, "GET", "/fhir/Patient?_count=1", "DEFAULT", nil)
	if count() != 1 {
		t.Fatalf("%d snapshots after expiry, want 1", count())
	}
	// Beyond maxSnapshotRefs references, the oldest snapshots go first:
	// their next links answer 410, the newest still pages.
	defer func(n int) { maxSnapshotRefs = n }(maxSnapshotRefs)
	maxSnapshotRefs = 5
	first := s.must(http.StatusOK, "GET", "/fhir/Patient?_count=1", "DEFAULT", nil).JSON(t)
	second := s.must(http.StatusOK, "GET", "/fhir/Patient?_count=2", "DEFAULT", nil).JSON(t)
	if count() != 1 {
		t.Fatalf("%d snapshots over the bound, want 1", count())
	}
	expectOutcome(t, s.do("GET", linkOf(t, s, first, "next"), "DEFAULT", nil), http.StatusGone, "does not exist")
	s.must(http.StatusOK, "GET", linkOf(t, s, second, "next"), "DEFAULT", nil)
}

// linkOf returns the path and query of b's link with relation rel.
func linkOf(t *testing.T, s *testServer, b map[string]any, rel string) string {
	t.Helper()
	for _, l := range b["link"].([]any) {
		if str(l, "relation") == rel {
			return strings.TrimPrefix(str(l, "url"), s.srv.URL)
		}
	}
	t.Fatalf("no %s link in %v", rel, b["link"])
	return ""
}

// The searchset's self link lists only the parameters that were applied
// (R4 SHALL), whatever was ignored, and includes follow the full resources
// even when _elements trims the matches.
func TestSearchSelfLinkAppliedOnly(t *testing.T) {
	s := newTestServer(t)
	pid := str(s.must(http.StatusCreated, "POST", "/fhir/Patient", "DEFAULT", patient("Self")).JSON(t), "id")
	s.must(http.StatusCreated, "POST", "/fhir/Observation", "DEFAULT", map[string]any{"resourceType": "Observation", "status": "final",
		"code": map[string]any{"text": "x"}, "subject": map[string]any{"reference": "Patient/" + pid}})

	selfOf := func(b map[string]any) url.Values {
		t.Helper()
		for _, l := range b["link"].([]any) {
			if str(l, "relation") == "self" {
				u, err := url.Parse(str(l, "url"))
				if err != nil {
					t.Fatal(err)
				}
				return u.Query()
			}
		}
		t.Fatalf("no self link in %v", b["link"])
		return nil
	}
	for query, want := range map[string]url.Values{
		"bogus=1&status=final":                                  {"status": {"final"}},
		"subject.nope=x&_has:Observation:focus:nope=1&code.x=1": {},
		"_summary:x=true&_count=5":                              {"_count": {"5"}},
		"_sort=bogus,-date&code=":                               {"_sort": {"-date"}},
		"_include:nope=Observation:subject&_include=Observation:patient&_format=json": {"_include": {"Observation:patient"}},
		"status=final&_elements=status&_total=accurate":                               {"status": {"final"}, "_elements": {"status"}, "_total": {"accurate"}},
	} {
		b := s.must(http.StatusOK, "GET", "/fhir/Observation?"+query, "DEFAULT", nil).JSON(t)
		if got := selfOf(b); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: self lists %v, want %v", query, got, want)
		}
		// The same rule for a search inside a batch.
		bb := s.must(http.StatusOK, "POST", "/fhir", "DEFAULT", map[string]any{"resourceType": "Bundle", "type": "batch",
			"entry": []any{map[string]any{"request": map[string]any{"method": "GET", "url": "Observation?" + query}}}}).JSON(t)
		inner := bb["entry"].([]any)[0].(map[string]any)["resource"].(map[string]any)
		if got := selfOf(inner); !reflect.DeepEqual(got, want) {
			t.Errorf("batch %s: self lists %v, want %v", query, got, want)
		}
	}

	// _include with _elements: the include comes from the stored
	// Observation, although the match shown keeps only code.
	b := s.must(http.StatusOK, "GET", "/fhir/Observation?_elements=code&_include=Observation:patient", "DEFAULT", nil).JSON(t)
	modes := map[string]int{}
	for _, e := range b["entry"].([]any) {
		modes[str(e, "search", "mode")+"/"+str(e, "resource", "resourceType")]++
		if str(e, "search", "mode") == "match" && str(e, "resource", "subject", "reference") != "" {
			t.Errorf("_elements=code kept subject: %v", e)
		}
	}
	if modes["match/Observation"] != 1 || modes["include/Patient"] != 1 {
		t.Fatalf("_elements with _include: %v", modes)
	}
}
