package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/dopu"
	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/internal/fhirvalues"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// realworldDir holds the IPS documents real vendors brought to HL7
// connectathons and the Synthea histories written with conditional
// references (with the hospital and practitioner Bundles beside them).
const realworldDir = "../testdata/fhir/realworld"

// TestRealWorldDropOffs drops off every real-world file into a matching
// record on the embedded store, picks it up, and checks that it landed
// whole and faithful (see checkLanded); then the owner posts the Synthea
// transactions and batches directly, with the same checks.
func TestRealWorldDropOffs(t *testing.T) {
	testkit.Slow(t, "every real-world document dropped off, picked up and posted through the gateway")
	e := startGateway(t, realworldDropoff+withStore(t.TempDir(), ""))
	// The store answers each ifNoneExist of the owner's batches with a
	// scan of the type (indexes are issue 14's): minutes, not seconds.
	e.client.Timeout = 10 * time.Minute
	rw := &realWorld{t: t, e: e}
	t.Run("pickup", rw.pickups)
	t.Run("transaction", rw.transactions)
}

// realworldDropoff lets one test sender drop off every file at once.
const realworldDropoff = "\t\tdropoff {\n\t\t\tsource_rate 1000 100\n\t\t\trecord_rate 1000 100\n\t\t}\n"

type realWorld struct {
	t *testing.T
	e *env
	n int
	// hapi is the upstream when it is HAPI: HAPI parses what it stores
	// into its model (elements unknown to R4 dropped, a single value
	// made a list, XHTML normalized), so a value that differs from what
	// was sent is accepted when HAPI stores the resource written to it
	// directly the same way (see hapiRoundTrip).
	hapi *hapiServer
}

// sentBundle is a real-world file as sent, numbers as written.
type sentBundle struct {
	name  string
	raw   []byte
	Type  string `json:"type"`
	Entry []struct {
		FullURL  string         `json:"fullUrl"`
		Resource map[string]any `json:"resource"`
		Search   *struct {
			Mode string `json:"mode"`
		} `json:"search"`
	} `json:"entry"`
}

func readSent(t *testing.T, path string) *sentBundle {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b := &sentBundle{name: filepath.Base(path), raw: raw}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// subjectPatient is the Patient the document is about: the Composition's
// subject, else the only or first Patient.
func (b *sentBundle) subjectPatient(t *testing.T) map[string]any {
	var subject string
	for _, e := range b.Entry {
		if e.Resource["resourceType"] == "Composition" {
			subject, _ = e.Resource["subject"].(map[string]any)["reference"].(string)
			break
		}
	}
	var first map[string]any
	for _, e := range b.Entry {
		r := e.Resource
		if r["resourceType"] != "Patient" {
			continue
		}
		if first == nil {
			first = r
		}
		if subject != "" && (e.FullURL == subject || "Patient/"+fmt.Sprint(r["id"]) == subject || strings.HasSuffix(subject, "/Patient/"+fmt.Sprint(r["id"]))) {
			return r
		}
	}
	if first == nil {
		t.Fatalf("%s: no Patient", b.name)
	}
	return first
}

// newRecord creates a record for the person p describes (names, gender,
// birth date: what a person types in) and returns its slug, token and
// Patient id.
func (rw *realWorld) newRecord(p map[string]any) (slug, tok, pid string) {
	rw.n++
	slug = fmt.Sprintf("rw-%d", rw.n)
	tok = rw.e.token("rw-owner-" + slug)
	patient := map[string]any{"resourceType": "Patient"}
	for _, k := range []string{"name", "gender", "birthDate"} {
		if v, ok := p[k]; ok {
			patient[k] = v
		}
	}
	res := rw.e.do("POST", apex("/pfr/v1/records"), tok, map[string]any{"slug": slug, "relationship": "self", "patient": patient}).
		Expect(rw.t, http.StatusCreated, "create record "+slug)
	return slug, tok, res.Body["patientId"].(string)
}

// pickups: each IPS document into its own record; the Synthea hospital
// and practitioner Bundles, then a history, into each Synthea record.
func (rw *realWorld) pickups(t *testing.T) {
	ips, _ := filepath.Glob(filepath.Join(realworldDir, "ips", "*.json"))
	if len(ips) != 12 {
		t.Fatalf("%d IPS documents, want 12", len(ips))
	}
	for _, path := range ips {
		t.Run(filepath.Base(path), func(t *testing.T) {
			b, l := rw.landIn(t, path)
			l.pickUp(b)
			l.everything()
		})
	}
	hospital, practitioners := rw.directories(t)
	for _, path := range rw.histories(t) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			b, l := rw.landIn(t, path)
			l.pickUp(hospital)
			l.pickUp(practitioners)
			report := l.pickUp(b)
			// Every conditional reference found its resource in the
			// record: none is left logical.
			if len(report.Logical) != 0 || len(report.Resolved) == 0 {
				t.Errorf("after the hospital and practitioner Bundles: %d resolved, logical %+v", len(report.Resolved), report.Logical)
			}
			l.everything()
		})
	}
}

// landIn reads the file at path and creates a record for its person.
func (rw *realWorld) landIn(t *testing.T, path string) (*sentBundle, *landed) {
	b := readSent(t, path)
	slug, tok, pid := rw.newRecord(b.subjectPatient(t))
	return b, &landed{rw: rw, t: t, slug: slug, tok: tok, pid: pid, created: map[string]map[string]any{}}
}

// directories are the hospital and practitioner Bundles Synthea writes
// beside its histories.
func (rw *realWorld) directories(t *testing.T) (hospital, practitioners *sentBundle) {
	return readSent(t, filepath.Join(realworldDir, "synthea-hiv", "hospitalInformation1633536936158.json")),
		readSent(t, filepath.Join(realworldDir, "synthea-hiv", "practitionerInformation1633536936158.json"))
}

func (rw *realWorld) histories(t *testing.T) []string {
	all, _ := filepath.Glob(filepath.Join(realworldDir, "synthea-hiv", "*.json"))
	var out []string
	for _, p := range all {
		if base := filepath.Base(p); !strings.HasPrefix(base, "hospital") && !strings.HasPrefix(base, "practitioner") {
			out = append(out, p)
		}
	}
	if len(out) != 2 {
		t.Fatalf("%d Synthea histories, want 2", len(out))
	}
	return out
}

// transactions: the owner posts the hospital and practitioner batches and
// then the history as a transaction (its Patient entry made the update of
// the record's Patient, which is what an app writing to a record does).
func (rw *realWorld) transactions(t *testing.T) {
	hospital, practitioners := rw.directories(t)
	for _, path := range rw.histories(t) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			b, l := rw.landIn(t, path)
			pid := l.pid
			l.post(hospital, nil)
			l.post(practitioners, nil)
			l.post(b, func(entry map[string]any) {
				res := entry["resource"].(map[string]any)
				if res["resourceType"] == "Patient" {
					res["id"] = pid
					entry["request"] = map[string]any{"method": "PUT", "url": "Patient/" + pid}
				}
			})
			l.everything()
		})
	}
}

// landed is one record and what has landed in it.
type landed struct {
	rw             *realWorld
	t              *testing.T
	slug, tok, pid string
	// created: "Type/id" → the resource as sent, for every resource
	// written into the record.
	created map[string]map[string]any
}

// pickUp drops b off without a token, picks it up as the owner and
// checks what landed.
func (l *landed) pickUp(b *sentBundle) dopu.Report {
	t, e := l.t, l.rw.e
	receipt := e.dropOff(l.slug, b.raw).ExpectOutcome(t, http.StatusAccepted, "drop off "+b.name).Header.Get("X-PFR-Receipt")
	// The inbox scores the match; a sender's Patient without a name
	// (BR's says data-absent) cannot match: the owner forces it.
	preview := e.do("GET", apex("/pfr/v1/records/"+l.slug+"/dropoffs/"+receipt), l.tok, nil).Expect(t, http.StatusOK, "preview "+b.name)
	var body any
	if m, _ := preview.Body["match"].(map[string]any); m["accepted"] != true {
		t.Logf("%s: the match is refused (%v): picking up with force", b.name, m["reasons"])
		body = map[string]any{"force": true}
	}
	res := e.do("POST", apex("/pfr/v1/records/"+l.slug+"/dropoffs/"+receipt+"/pickup"), l.tok, body).Expect(t, http.StatusOK, "pick up "+b.name)
	var out struct {
		Status string      `json:"status"`
		Report dopu.Report `json:"report"`
	}
	if err := json.Unmarshal(res.Raw, &out); err != nil {
		t.Fatal(err)
	}
	rep := out.Report
	t.Logf("%s: %s, %d created, %d skipped, %d conditional references resolved, %d references logical, %d other people, warnings %q",
		b.name, out.Status, len(rep.Created), len(rep.Skipped), len(rep.Resolved), len(rep.Logical), len(rep.OtherPatients), rep.Warnings)

	// Every entry is accounted for: created, the sender's Patient merged,
	// or skipped for a reason the report gives; nothing is skipped as
	// already in the record (each record starts empty, and no two files
	// share resources), and only people other than the record's are
	// left out.
	accounted := map[int]string{}
	for _, c := range rep.Created {
		accounted[c.Entry] = c.Resource
	}
	partial := false
	for _, s := range rep.Skipped {
		switch s.Reason {
		case dopu.SkipSearchOutcome, dopu.SkipRecordPatient:
		case dopu.SkipAnotherPerson, dopu.SkipOtherPatient:
			partial = true
		default:
			t.Errorf("%s: entry %d skipped: %s %s", b.name, s.Entry, s.Reason, s.Detail)
		}
		accounted[s.Entry] = string(s.Reason)
	}
	for i, en := range b.Entry {
		typ := en.Resource["resourceType"]
		if _, ok := accounted[i]; !ok && !(typ == "Patient" && rep.SenderPatient != "") {
			t.Errorf("%s: entry %d (%v) is neither created nor reported", b.name, i, typ)
		}
	}
	if want := map[bool]string{true: "picked-up-partially", false: "picked-up"}[partial]; out.Status != want {
		t.Errorf("%s: status %s, want %s", b.name, out.Status, want)
	}
	if s := e.do("GET", apex("/pfr/v1/receipts/"+receipt), "", nil); !strings.Contains(string(s.Raw), `"`+out.Status+`"`) {
		t.Errorf("%s: the sender's status: %s", b.name, s.Raw)
	}
	var created []createdPair
	for _, c := range rep.Created {
		created = append(created, createdPair{b.Entry[c.Entry].Resource, c.Resource})
	}
	l.check(b.name, created, "_tag="+url.QueryEscape(dopu.TagSystem+"|"+receipt))

	// The sender's Patient is merged: its identifiers are the record's.
	if rep.SenderPatient != "" {
		sender := b.subjectPatient(t)
		pat := l.read("Patient/" + l.pid)
		for _, id := range anySlice(sender["identifier"]) {
			v, _ := id.(map[string]any)["value"].(string)
			if v != "" && !strings.Contains(string(mustMarshal(t, pat["identifier"])), mustString(t, v)) {
				t.Errorf("%s: the record's Patient lacks the sender's identifier %s", b.name, v)
			}
		}
	}
	return rep
}

type createdPair struct {
	sent   map[string]any
	target string
}

// post posts b as the owner (after edit changes an entry) and checks what
// landed.
func (l *landed) post(b *sentBundle, edit func(entry map[string]any)) {
	t := l.t
	dec := json.NewDecoder(bytes.NewReader(b.raw))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	entries := doc["entry"].([]any)
	if edit != nil {
		for _, en := range entries {
			edit(en.(map[string]any))
		}
	}
	var body bytes.Buffer
	enc := json.NewEncoder(&body)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(doc); err != nil {
		t.Fatal(err)
	}
	res := l.rw.e.do("POST", recordURL(l.slug, ""), l.tok, body.Bytes()).Expect(t, http.StatusOK, "post "+b.name)
	answer := anySlice(res.Body["entry"])
	if len(answer) != len(b.Entry) {
		t.Fatalf("%s: %d answers for %d entries", b.name, len(answer), len(b.Entry))
	}
	var created []createdPair
	for i, a := range answer {
		resp, _ := a.(map[string]any)["response"].(map[string]any)
		status, _ := resp["status"].(string)
		loc, _ := resp["location"].(string)
		if !strings.HasPrefix(status, "20") {
			t.Errorf("%s: entry %d: %s %v", b.name, i, status, resp["outcome"])
			continue
		}
		loc = strings.TrimPrefix(loc, recordURL(l.slug, "")+"/")
		loc, _, _ = strings.Cut(loc, "/_history/")
		if typ, _, _ := strings.Cut(loc, "/"); typ != "Patient" {
			created = append(created, createdPair{b.Entry[i].Resource, loc})
		}
	}
	l.check(b.name, created, "")
}

// check reads back what was created and checks every value is the one
// sent and every reference resolves inside the record or is logical.
// query, when set, must find exactly the created resources of each type.
func (l *landed) check(name string, created []createdPair, query string) {
	t := l.t
	byType := map[string][]string{}
	for _, c := range created {
		typ, _, _ := strings.Cut(c.target, "/")
		byType[typ] = append(byType[typ], c.target)
		l.created[c.target] = c.sent
	}
	got := map[string]map[string]any{}
	for typ, want := range byType {
		q := url.Values{"_id": {strings.Join(ids(want), ",")}}
		if query != "" {
			q, _ = url.ParseQuery(query)
		}
		found := l.search(typ, q)
		for _, res := range found {
			got[typ+"/"+res["id"].(string)] = res
		}
		if len(found) != len(want) {
			t.Errorf("%s: %s: %d in the record, %d created", name, typ, len(found), len(want))
		}
	}
	hapiOwn := 0
	defer func() {
		if hapiOwn > 0 {
			t.Logf("%s: %d resources differ from what was sent exactly as HAPI stores them when written to it directly", name, hapiOwn)
		}
	}()
	for _, c := range created {
		res, ok := got[c.target]
		if !ok {
			t.Errorf("%s: %s is not in the record", name, c.target)
			continue
		}
		if diff := sameValues(c.sent, res); diff != "" {
			if direct := l.rw.hapiRoundTrip(c.sent); direct == nil || sameValues(direct, res) != "" {
				t.Errorf("%s: %s differs from what was sent: %s", name, c.target, diff)
			} else {
				hapiOwn++
			}
		}
		fhir.EachReference(res, func(_ map[string]any, ref string) {
			l.checkReference(name, c.target, ref)
		})
	}
}

// checkReference: a reference is contained, the record's Patient, or a
// resource of the record; anything else must have become logical.
func (l *landed) checkReference(name, from, ref string) {
	switch {
	case strings.HasPrefix(ref, "#"), ref == "Patient/"+l.pid:
		return
	case strings.Contains(ref, ":") || strings.Contains(ref, "?"):
		l.t.Errorf("%s: %s references %q, outside the record", name, from, ref)
		return
	}
	if _, ok := l.created[ref]; ok {
		return
	}
	if res := l.rw.e.do("GET", recordURL(l.slug, "/"+ref), l.tok, nil); res.Status != http.StatusOK {
		l.t.Errorf("%s: %s references %q, which the record does not hold (%d)", name, from, ref, res.Status)
	}
}

// everything: Patient/$everything returns every resource created in the
// record that is about the person or reached from what is.
func (l *landed) everything() {
	t := l.t
	seen := map[string]bool{}
	next := recordURL(l.slug, "/Patient/"+l.pid+"/$everything?_count=500")
	for pages := 0; next != "" && pages < 200; pages++ {
		res := l.rw.e.do("GET", next, l.tok, nil).Expect(t, http.StatusOK, "$everything")
		for _, en := range anySlice(res.Body["entry"]) {
			r, _ := en.(map[string]any)["resource"].(map[string]any)
			seen[fmt.Sprint(r["resourceType"], "/", r["id"])] = true
		}
		next = link(res, "next")
	}
	reach := l.reachable()
	// HAPI's $everything follows only references an R4 search parameter
	// indexes (MedicationRequest.recorder and Procedure.performer.onBehalfOf
	// are not): there the person's compartment must be whole, and what HAPI
	// leaves out beyond it is counted. The embedded store follows every
	// reference, to any depth.
	required := 1 << 30
	if l.rw.hapi != nil {
		required = 0
	}
	missing, beyond := 0, 0
	for ref, depth := range reach {
		switch {
		case seen[ref]:
		case depth > required:
			beyond++
		default:
			missing++
			if missing <= 5 {
				t.Errorf("$everything misses %s (%d references away from the person)", ref, depth)
			}
		}
	}
	if missing > 0 {
		t.Errorf("$everything misses %d of %d resources", missing, len(reach))
	}
	if beyond > 0 {
		t.Logf("$everything on HAPI leaves out %d of %d resources reached only through references no search parameter indexes", beyond, len(reach))
	}
}

// reachable is what of what landed is in the person's compartment (depth
// 0) or reached from it through references (the depth: how many).
func (l *landed) reachable() map[string]int {
	read := map[string]map[string]any{}
	reach := map[string]int{}
	var queue []string
	for ref := range l.created {
		typ, _, _ := strings.Cut(ref, "/")
		if !fhir.InPatientCompartment(typ) {
			continue
		}
		res := l.read(ref)
		read[ref] = res
		refs, _ := fhir.CompartmentReferences(res)
		if slices.Contains(refs, "Patient/"+l.pid) {
			reach[ref] = 0
			queue = append(queue, ref)
		}
	}
	for len(queue) > 0 {
		ref := queue[0]
		queue = queue[1:]
		res := read[ref]
		if res == nil {
			res = l.read(ref)
			read[ref] = res
		}
		fhir.EachReference(res, func(_ map[string]any, target string) {
			if _, ours := l.created[target]; ours {
				if _, seen := reach[target]; !seen {
					reach[target] = reach[ref] + 1
					queue = append(queue, target)
				}
			}
		})
	}
	return reach
}

func (l *landed) read(ref string) map[string]any {
	res := l.rw.e.do("GET", recordURL(l.slug, "/"+ref), l.tok, nil).Expect(l.t, http.StatusOK, "read "+ref)
	return decodeNumbers(l.t, res.Raw)
}

// search returns every match of a search in the record, all pages.
func (l *landed) search(typ string, q url.Values) []map[string]any {
	q.Set("_count", "500")
	var out []map[string]any
	next := recordURL(l.slug, "/"+typ+"?"+q.Encode())
	if len(next) > 6000 { // too long an _id list: search page by page of ids
		idList := strings.Split(q.Get("_id"), ",")
		for start := 0; start < len(idList); start += 100 {
			out = append(out, l.search(typ, url.Values{"_id": {strings.Join(idList[start:min(start+100, len(idList))], ",")}})...)
		}
		return out
	}
	for pages := 0; next != ""; pages++ {
		if pages > 100 {
			l.t.Fatalf("search %s: more than 100 pages", typ)
		}
		res := l.rw.e.do("GET", next, l.tok, nil).Expect(l.t, http.StatusOK, "search "+typ)
		doc := decodeNumbers(l.t, res.Raw)
		for _, en := range anySlice(doc["entry"]) {
			if r, ok := en.(map[string]any)["resource"].(map[string]any); ok {
				out = append(out, r)
			}
		}
		next = link(res, "next")
	}
	return out
}

func ids(refs []string) []string {
	out := make([]string, len(refs))
	for i, r := range refs {
		_, out[i], _ = strings.Cut(r, "/")
	}
	return out
}

// sameValues compares what was sent with what was read back, byte for byte
// in every value: the resource's id and meta aside, narrative aside
// (Narrative objects, wherever they are), and Reference objects aside
// (references are rewritten; checkReference checks them). It returns the
// first difference.
func sameValues(sent, got any) string {
	return fhirvalues.Diff(sent, got, fhirvalues.Options{Aside: []string{"id", "meta"}, SkipObject: func(m map[string]any) bool {
		_, isRef := m["reference"]
		_, isNarrative := m["div"]
		return isRef || isNarrative || m["display"] == refMarker
	}})
}

// refMarker stands for a reference in what hapiRoundTrip writes.
const refMarker = "pfr-test: a reference stood here"

func decodeNumbers(t *testing.T, raw []byte) map[string]any { return fhirvalues.MustDecode(t, raw) }

func anySlice(v any) []any { s, _ := v.([]any); return s }

func mustMarshal(t *testing.T, v any) []byte {
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// mustString is s as encoding/json writes it inside a string.
func mustString(t *testing.T, s string) string {
	raw := mustMarshal(t, s)
	return string(raw[1 : len(raw)-1])
}

// TestConditionalReferencesInTransaction: a transaction posted by the
// owner has its conditional references resolved inside the record only:
// one match there becomes a literal reference (a match in another record
// does not count), none a logical reference, several refuse it with 412.
func TestConditionalReferencesInTransaction(t *testing.T) {
	e := startGateway(t, "")
	alice, bob := e.token("alice"), e.token("bob")
	a := e.createRecord(alice, "cond-alice", "Smith", "Alice")
	e.createRecord(bob, "cond-bob", "Jones", "Bob")
	practitioner := func(value string) map[string]any {
		return map[string]any{"resourceType": "Practitioner", "identifier": []any{map[string]any{"system": "urn:npi", "value": value}}}
	}
	// Bob's record holds npi 1 and 2; Alice's holds npi 2 twice.
	for _, c := range []struct {
		tok, slug, value string
	}{{bob, "cond-bob", "1"}, {bob, "cond-bob", "2"}, {alice, "cond-alice", "2"}, {alice, "cond-alice", "2"}, {alice, "cond-alice", "3"}} {
		e.do("POST", recordURL(c.slug, "/Practitioner"), c.tok, practitioner(c.value)).Expect(t, http.StatusCreated, "create a Practitioner")
	}
	pid := a["patientId"].(string)
	tx := func(ref string) map[string]any {
		return map[string]any{"resourceType": "Bundle", "type": "transaction", "entry": []any{map[string]any{
			"resource": map[string]any{"resourceType": "Observation", "status": "final", "code": map[string]any{"text": "x"},
				"subject":   map[string]any{"reference": "Patient/" + pid},
				"performer": []any{map[string]any{"reference": ref, "display": "Dr. X"}}},
			"request": map[string]any{"method": "POST", "url": "Observation"},
		}}}
	}
	performer := func(r response) map[string]any {
		loc, _ := anySlice(r.Body["entry"])[0].(map[string]any)["response"].(map[string]any)["location"].(string)
		loc, _, _ = strings.Cut(strings.TrimPrefix(loc, recordURL("cond-alice", "")+"/"), "/_history/")
		obs := e.do("GET", recordURL("cond-alice", "/"+loc), alice, nil).Expect(t, http.StatusOK, "read "+loc)
		return anySlice(obs.Body["performer"])[0].(map[string]any)
	}
	// npi 3: one match in Alice's record → literal.
	r := e.do("POST", recordURL("cond-alice", ""), alice, tx("Practitioner?identifier=urn:npi|3")).Expect(t, http.StatusOK, "one match")
	if p := performer(r); !strings.HasPrefix(fmt.Sprint(p["reference"]), "Practitioner/") || p["display"] != "Dr. X" {
		t.Errorf("one match: performer %v", p)
	}
	// npi 1: only in Bob's record → no match in Alice's → logical.
	r = e.do("POST", recordURL("cond-alice", ""), alice, tx("Practitioner?identifier=urn:npi|1")).Expect(t, http.StatusOK, "no match")
	if p := performer(r); p["reference"] != nil || p["type"] != "Practitioner" || p["display"] != "Dr. X" ||
		fmt.Sprint(p["identifier"]) != fmt.Sprint(map[string]any{"system": "urn:npi", "value": "1"}) {
		t.Errorf("no match: performer %v, want a logical reference", p)
	}
	// npi 2: twice in Alice's record → 412, nothing written.
	before := e.do("GET", recordURL("cond-alice", "/Observation?_summary=count"), alice, nil).Expect(t, http.StatusOK, "count").Body["total"]
	e.do("POST", recordURL("cond-alice", ""), alice, tx("Practitioner?identifier=urn:npi|2")).ExpectOutcome(t, http.StatusPreconditionFailed, "several matches")
	if after := e.do("GET", recordURL("cond-alice", "/Observation?_summary=count"), alice, nil).Body["total"]; after != before {
		t.Errorf("a refused transaction wrote: %v Observations, were %v", after, before)
	}
	// An id longer than FHIR's 64 characters is no reason to refuse a
	// drop-off (pick-up assigns the record's ids), but a member's own
	// direct write of one is still a 400.
	long := strings.Repeat("m", 80)
	e.do("PUT", recordURL("cond-alice", "/Medication/"+long), alice, map[string]any{"resourceType": "Medication", "id": long}).
		ExpectOutcome(t, http.StatusBadRequest, "a direct write of an invalid id")
}
