package e2e

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/store"
)

// upstreamKind is the upstream an attack runs against; a bit set.
type upstreamKind int

const (
	// embedded is the gateway's own pfr_store, which honours partitions.
	embedded upstreamKind = 1 << iota
	// shared is a real store behind a wrapper that puts every request in
	// one partition: an upstream that ignores partitions.
	shared
	// both runs an attack on each.
	both = embedded | shared
	// onHAPI is a real HAPI FHIR JPA server partitioned by header, not
	// trusted by the gateway (the default for reverse_proxy).
	onHAPI upstreamKind = 1 << 2
)

func (k upstreamKind) String() string {
	switch k {
	case shared:
		return "shared"
	case onHAPI:
		return "hapi"
	}
	return "embedded"
}

// sharedPartitionID is the one partition the shared upstream stores everything in.
const sharedPartitionID = 4242

// partitionHeader is the header the store (like HAPI) reads the partition from.
const partitionHeader = "X-Request-Partition-IDs"

// world is two PFRs, alice-home and bob-home, on one gateway, with bob's
// data seeded, the tokens the attacks use, and an unfiltered view of the
// store behind the gateway.
type world struct {
	*env
	kind upstreamKind
	// tokens by the name an attack's "as" field uses.
	tokens map[string]string
	// vars are the values an attack's templates name in braces.
	vars map[string]string
	// secrets are strings only bob's data contains: none may reach alice.
	secrets []string
	// bobMarkers identify a stored resource version as bob's data (or as
	// data about bob): his Patient id, his resources' ids, his secrets.
	bobMarkers []string
	// raw sends a request straight to the store, bypassing the gateway.
	raw func(method, path, partition string) response
}

// startAttackWorld starts a gateway on the given upstream and seeds both
// records.
func startAttackWorld(t *testing.T, kind upstreamKind) *world {
	t.Helper()
	dir := t.TempDir()
	var upstream, extraSites string
	var raw func(method, path, partition string) response
	switch kind {
	case embedded:
		dbPath := filepath.Join(dir, "store.db")
		upstream = "\t\tupstream pfr_store {\n\t\t\tpath " + dbPath + "\n\t\t}"
		// The same file, shared through the module's database pool.
		extraSites = fmt.Sprintf("\nhttp://127.0.0.1:%d {\n\tpfr_store {\n\t\tpath %s\n\t}\n}\n", rawStorePort, dbPath)
		client := &http.Client{Timeout: 30 * time.Second}
		raw = func(method, path, partition string) response {
			req, err := http.NewRequest(method, fmt.Sprintf("http://127.0.0.1:%d%s", rawStorePort, path), nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set(partitionHeader, partition)
			res, err := client.Do(req)
			if err != nil {
				t.Fatalf("raw store %s %s: %v", method, path, err)
			}
			defer res.Body.Close()
			return readResponse(t, res)
		}
	case shared:
		h := startSharedUpstream(t, filepath.Join(dir, "shared.db"))
		upstream = "\t\tupstream reverse_proxy " + strings.TrimPrefix(h.server.URL, "http://")
		raw = func(method, path, partition string) response {
			req := httptest.NewRequest(method, path, nil)
			req.Header.Set(partitionHeader, partition)
			rec := httptest.NewRecorder()
			h.store.ServeHTTP(rec, req)
			return readResponse(t, rec.Result())
		}
	case onHAPI:
		h := startHAPI(t, "header")
		upstream = "\t\tpartition header\n\t\tupstream reverse_proxy " + h.addr
		raw = func(method, path, partition string) response {
			req, err := http.NewRequest(method, h.base+strings.TrimPrefix(path, "/fhir"), nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set(partitionHeader, partition)
			res, err := h.client.Do(req)
			if err != nil {
				t.Fatalf("HAPI directly %s %s: %v", method, path, err)
			}
			defer res.Body.Close()
			return readResponse(t, res)
		}
	}
	idp := newTestIssuer(t)
	e := loadGateway(t, dir, idp.issuerLines()+withStore(dir, upstream), extraSites)
	e.idp = idp
	w := &world{env: e, kind: kind, raw: raw, tokens: map[string]string{}}
	w.seed()
	return w
}

// sharedUpstream is a real store that ignores the partition the gateway
// asks for: every FHIR request lands in one shared partition. Partition
// management passes through (on DEFAULT), so the gateway's provisioning
// succeeds as against any HAPI server.
type sharedUpstream struct {
	store  http.Handler
	server *httptest.Server
}

func startSharedUpstream(t *testing.T, path string) *sharedUpstream {
	t.Helper()
	db, err := store.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	h, err := store.NewHandler(db, store.Config{})
	if err != nil {
		t.Fatal(err)
	}
	create := httptest.NewRequest("POST", "/fhir/$partition-management-create-partition", strings.NewReader(fmt.Sprintf(
		`{"resourceType":"Parameters","parameter":[{"name":"id","valueInteger":%d},{"name":"name","valueCode":"shared"}]}`, sharedPartitionID)))
	create.Header.Set("Content-Type", "application/fhir+json")
	create.Header.Set(partitionHeader, "DEFAULT")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, create)
	if rec.Code != http.StatusOK {
		t.Fatalf("creating the shared partition: %d %s", rec.Code, rec.Body)
	}
	u := &sharedUpstream{store: h}
	u.server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.URL.Path, "$partition-management-") {
			r.Header.Set(partitionHeader, fmt.Sprint(sharedPartitionID))
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(u.server.Close)
	return u
}

func readResponse(t *testing.T, res *http.Response) response {
	t.Helper()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := response{Status: res.StatusCode, Header: res.Header, Raw: raw}
	_ = json.Unmarshal(raw, &out.Body)
	return out
}

// Bob's secrets: values that appear only in bob's data.
const (
	bobSSN          = "BOB-SSN-123-45-6789"
	bobNote         = "bob-secret-note-obs"
	bobConditionTxt = "bob-secret-diagnosis"
	bobDoctor       = "Bobsprivate"
	bobOnlyCode     = "9279-1" // an Observation code only bob has
	sharedCode      = "8302-2" // an Observation code both have
)

// seed creates both records, bob's data, alice's own Observation, and carol,
// a viewer of bob's record; then fills the templates' variables.
func (w *world) seed() {
	t := w.t
	alice, bob, carol := w.token("alice"), w.token("bob"), w.token("carol")
	ra := w.createRecord(alice, "alice-home", "Smith", "Alice")
	rb := w.createRecord(bob, "bob-home", "Jones", "Bob")
	aliceID, bobID := ra["patientId"].(string), rb["patientId"].(string)
	aliceBase, bobBase := recordURL("alice-home", ""), recordURL("bob-home", "")

	// Bob's Patient gains an identifier only he has.
	pat := w.do("GET", recordURL("bob-home", "/Patient/"+bobID), bob, nil).Expect(t, http.StatusOK, "bob reads his Patient")
	pat.Body["identifier"] = []any{map[string]any{"system": "urn:oid:2.16.840.1.113883.4.1", "value": bobSSN}}
	w.do("PUT", recordURL("bob-home", "/Patient/"+bobID), bob, pat.Body).Expect(t, http.StatusOK, "bob updates his Patient")

	pract := w.do("POST", recordURL("bob-home", "/Practitioner"), bob, map[string]any{
		"resourceType": "Practitioner", "name": []any{map[string]any{"family": bobDoctor, "given": []any{"Oncologist"}}},
	}).Expect(t, http.StatusCreated, "bob's Practitioner")
	bobObs := observation("Patient/"+bobID, bobOnlyCode)
	bobObs["note"] = []any{map[string]any{"text": bobNote}}
	bobObs["performer"] = []any{map[string]any{"reference": "Practitioner/" + idOf(t, pract)}}
	o1 := w.do("POST", recordURL("bob-home", "/Observation"), bob, bobObs).Expect(t, http.StatusCreated, "bob's Observation")
	o2 := w.do("POST", recordURL("bob-home", "/Observation"), bob, observation("Patient/"+bobID, sharedCode)).
		Expect(t, http.StatusCreated, "bob's second Observation")
	cond := w.do("POST", recordURL("bob-home", "/Condition"), bob, map[string]any{
		"resourceType": "Condition", "subject": map[string]any{"reference": "Patient/" + bobID},
		"code": map[string]any{"text": bobConditionTxt},
	}).Expect(t, http.StatusCreated, "bob's Condition")

	// A resource bob deleted: its id and the deletion are his too.
	gone := w.do("POST", recordURL("bob-home", "/Observation"), bob, observation("Patient/"+bobID, "2708-6")).
		Expect(t, http.StatusCreated, "bob's short-lived Observation")
	w.do("DELETE", recordURL("bob-home", "/Observation/"+idOf(t, gone)), bob, nil)
	if r := w.do("GET", recordURL("bob-home", "/Observation/"+idOf(t, gone)), bob, nil); r.Status != http.StatusGone && r.Status != http.StatusNotFound {
		t.Fatalf("bob's deleted Observation still reads: %d", r.Status)
	}

	ao := w.do("POST", recordURL("alice-home", "/Observation"), alice, observation("Patient/"+aliceID, sharedCode)).
		Expect(t, http.StatusCreated, "alice's Observation")
	// Alice's own data of several types, for the scope attacks: a doctor,
	// a Condition, and a laboratory panel whose member is her vital-signs
	// Observation (has-member crosses categories).
	apract := w.do("POST", recordURL("alice-home", "/Practitioner"), alice, map[string]any{
		"resourceType": "Practitioner", "name": []any{map[string]any{"family": "Alicesdoctor"}},
	}).Expect(t, http.StatusCreated, "alice's Practitioner")
	w.do("POST", recordURL("alice-home", "/Condition"), alice, map[string]any{
		"resourceType": "Condition", "subject": map[string]any{"reference": "Patient/" + aliceID}, "code": map[string]any{"text": "alice-condition"},
	}).Expect(t, http.StatusCreated, "alice's Condition")
	vital := observation("Patient/"+aliceID, "8867-4")
	vital["category"] = []any{map[string]any{"coding": []any{map[string]any{
		"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}}}}
	vital["performer"] = []any{map[string]any{"reference": "Practitioner/" + idOf(t, apract)}}
	vo := w.do("POST", recordURL("alice-home", "/Observation"), alice, vital).Expect(t, http.StatusCreated, "alice's vital sign")
	panel := observation("Patient/"+aliceID, "24323-8")
	panel["category"] = []any{map[string]any{"coding": []any{map[string]any{
		"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}}}}
	panel["hasMember"] = []any{map[string]any{"reference": "Observation/" + idOf(t, vo)}}
	w.do("POST", recordURL("alice-home", "/Observation"), alice, panel).Expect(t, http.StatusCreated, "alice's lab panel")

	inv := w.do("POST", apex("/pfr/v1/records/bob-home/invitations"), bob, map[string]any{"role": "viewer"}).
		Expect(t, http.StatusCreated, "bob invites carol as a viewer")
	w.do("POST", apex("/pfr/v1/invitations/"+inv.Body["code"].(string)+"/accept"), carol, nil).Expect(t, http.StatusOK, "carol accepts")

	mint := func(sub string, aud ...string) string {
		tok, err := w.dev.Mint(sub, "openid patient/*.cruds", aud, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	scoped := func(scope string) string {
		tok, err := w.dev.Mint("alice", "openid "+scope, nil, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	w.tokens = map[string]string{
		"alice": alice, "bob": bob, "carol": carol, "none": "",
		"alice-obs-only":     scoped("patient/Observation.rs"),
		"alice-patient-only": scoped("patient/Patient.rs"),
		"alice-lab-only":     scoped("patient/Observation.rs?category=laboratory"),
		"alice-malleable":    malleable(t, alice),
		"alice-aud-bob":      mint("alice", bobBase),
		"bob-aud-bob":        mint("bob", bobBase),
		"alice-aud-alice":    mint("alice", aliceBase),
		"alice-other-issuer": startOtherDevIssuer(t),
	}
	w.vars = map[string]string{
		"alice": aliceID, "bob": bobID,
		"aliceObs": idOf(t, ao), "bobObs": idOf(t, o1), "bobObs2": idOf(t, o2), "bobCond": idOf(t, cond),
		"bobPract": idOf(t, pract), "bobDeleted": idOf(t, gone), "bobOnlyCode": bobOnlyCode, "sharedCode": sharedCode,
		"aliceBase": aliceBase, "bobBase": bobBase,
		"aliceHost": fmt.Sprintf("alice-home.%s:%d", baseDomain, httpsPort),
		"bobHost":   fmt.Sprintf("bob-home.%s:%d", baseDomain, httpsPort),
		"port":      strconv.Itoa(httpsPort),
		"ssn":       bobSSN,
	}
	w.secrets = []string{bobID, w.vars["bobObs"], w.vars["bobObs2"], w.vars["bobCond"], w.vars["bobPract"], w.vars["bobDeleted"],
		bobSSN, bobNote, bobConditionTxt, bobDoctor, "Jones"}
	w.bobMarkers = w.secrets
}

// malleable returns tok with the last character of its signature changed
// only in bits base64url decoding ignores: the same bytes, spelled
// differently.
func malleable(t *testing.T, tok string) string {
	t.Helper()
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	sig := tok[strings.LastIndexByte(tok, '.')+1:]
	if len(sig)%4 == 0 {
		t.Fatalf("the signature has no unused bits")
	}
	i := strings.IndexByte(alphabet, tok[len(tok)-1])
	return tok[:len(tok)-1] + string(alphabet[i^1])
}

// idOf returns the id of the resource a create answered with.
func idOf(t *testing.T, r response) string {
	t.Helper()
	id, _ := r.Body["id"].(string)
	if id == "" {
		// A create may answer with no body: the id is in Location.
		parts := strings.Split(r.Header.Get("Location"), "/")
		for i := len(parts) - 1; i > 0; i-- {
			if parts[i] == "_history" {
				id = parts[i-1]
				break
			}
		}
	}
	if id == "" {
		t.Fatalf("no id in the create's answer: %v %s", r.Header, r.Raw)
	}
	return id
}

// expand fills the {name} placeholders of s.
func (w *world) expand(s string) string {
	s = w.expandVars(s)
	// <<base64:…:base64>> is base64 of what it holds (a Binary's data).
	for {
		start := strings.Index(s, "<<base64:")
		end := strings.Index(s, ":base64>>")
		if start < 0 || end < start {
			return s
		}
		s = s[:start] + base64.StdEncoding.EncodeToString([]byte(s[start+len("<<base64:"):end])) + s[end+len(":base64>>"):]
	}
}

// expandVars fills in the templates ({bob}, …) only: what the attacker
// wrote, before any encoding (the leak check counts an id the attacker
// sent inside a base64 Binary as sent).
func (w *world) expandVars(s string) string {
	pairs := make([]string, 0, 2*len(w.vars))
	for k, v := range w.vars {
		pairs = append(pairs, "{"+k+"}", v)
	}
	return strings.NewReplacer(pairs...).Replace(s)
}

// storeSnapshot is every stored version of bob's data, and of anything that
// mentions bob, across every partition of the store, keyed by partition,
// type, id and version, with its content.
type storeSnapshot map[string]string

// snapshot reads the whole history of every partition straight from the
// store and keeps the versions that are bob's or mention him.
func (w *world) snapshot() storeSnapshot {
	t := w.t
	t.Helper()
	list := w.raw("GET", "/fhir/$partition-management-list-partitions", "DEFAULT").Expect(t, http.StatusOK, "list partitions")
	partitions := []string{"DEFAULT"}
	params, _ := list.Body["parameter"].([]any)
	for _, p := range params {
		parts, _ := p.(map[string]any)["part"].([]any)
		for _, part := range parts {
			pm, _ := part.(map[string]any)
			if pm["name"] == "id" {
				partitions = append(partitions, strconv.FormatFloat(pm["valueInteger"].(float64), 'f', -1, 64))
			}
		}
	}
	if len(partitions) < 3 {
		t.Fatalf("expected at least two partitions besides DEFAULT: %s", list.Raw)
	}
	snap := storeSnapshot{}
	histories := []string{"/fhir/_history?_count=1000"}
	if w.kind == onHAPI {
		// HAPI answers history inside a partition with nothing: read the
		// current version of every resource of each type bob has instead
		// (a change would show as a new versionId).
		histories = nil
		for _, typ := range []string{"Patient", "Practitioner", "Observation", "Condition"} {
			histories = append(histories, "/fhir/"+typ+"?_count=500")
		}
	}
	var entries []any
	sample := ""
	for _, part := range partitions {
		entries = entries[:0]
		for _, h := range histories {
			res := w.raw("GET", h, part).Expect(t, http.StatusOK, "history of partition "+part)
			if total, _ := res.Body["total"].(float64); total > 500 {
				t.Fatalf("partition %s has %v versions: more than one page", part, total)
			}
			more, _ := res.Body["entry"].([]any)
			entries = append(entries, more...)
			if part != "DEFAULT" && len(sample) < 3000 {
				sample += fmt.Sprintf("\n%s %s: %.200s", part, h, res.Raw)
			}
		}
		for _, e := range entries {
			raw, err := json.Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			if !w.mentionsBob(string(raw)) {
				continue
			}
			em := e.(map[string]any)
			key := part + " " + fmt.Sprint(em["fullUrl"])
			if r, ok := em["resource"].(map[string]any); ok {
				meta, _ := r["meta"].(map[string]any)
				key += " v" + fmt.Sprint(meta["versionId"])
			}
			if req, ok := em["request"].(map[string]any); ok {
				key += " " + fmt.Sprint(req["method"])
			}
			snap[key] = string(raw)
		}
	}
	if want := map[bool]int{true: 4, false: 5}[w.kind == onHAPI]; len(snap) < want {
		t.Fatalf("the snapshot holds %d versions of bob's data, want at least %d (Patient, Practitioner, two Observations, Condition; the Patient twice where history is read); partitions %v; read:%s",
			len(snap), want, partitions, sample)
	}
	return snap
}

func (w *world) mentionsBob(s string) bool {
	for _, m := range w.bobMarkers {
		if strings.Contains(s, m) {
			return true
		}
	}
	return false
}

// diff lists what changed between two snapshots.
func (s storeSnapshot) diff(after storeSnapshot) []string {
	var out []string
	for k, v := range s {
		switch a, ok := after[k]; {
		case !ok:
			out = append(out, "gone: "+k)
		case a != v:
			out = append(out, "changed: "+k)
		}
	}
	for k, v := range after {
		if _, ok := s[k]; !ok {
			out = append(out, fmt.Sprintf("new: %s: %.300s", k, v))
		}
	}
	sort.Strings(out)
	return out
}

// bobView is what bob sees of his own record through the gateway: every
// resource of his $everything with its version.
func (w *world) bobView() []string {
	t := w.t
	t.Helper()
	res := w.do("GET", recordURL("bob-home", "/Patient/"+w.vars["bob"]+"/$everything?_count=1000"), w.tokens["bob"], nil).
		Expect(t, http.StatusOK, "bob's $everything")
	var view []string
	entries, _ := res.Body["entry"].([]any)
	for _, e := range entries {
		r, _ := e.(map[string]any)["resource"].(map[string]any)
		meta, _ := r["meta"].(map[string]any)
		view = append(view, fmt.Sprintf("%v/%v/_history/%v", r["resourceType"], r["id"], meta["versionId"]))
	}
	sort.Strings(view)
	return view
}

// rawExchange sends text, a whole HTTP/1.1 request, over a new TLS
// connection whose SNI is sni, and reads one response. A server that
// closes the connection without answering yields status 0.
func rawExchange(t *testing.T, sni, text string) response {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp",
		fmt.Sprintf("127.0.0.1:%d", httpsPort),
		&tls.Config{ServerName: sni, InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}) //nolint:gosec // test client against the local CA
	if err != nil {
		t.Fatalf("dial %s: %v", sni, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	// Write while reading: the server may answer (413, 414, 431) and close
	// before it has read a long request.
	go func() { _, _ = io.Copy(conn, strings.NewReader(text)) }()
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return response{Status: 0, Raw: []byte(err.Error())}
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 8<<20))
	out := response{Status: res.StatusCode, Header: res.Header, Raw: body}
	_ = json.Unmarshal(bytes.TrimSpace(body), &out.Body)
	return out
}
