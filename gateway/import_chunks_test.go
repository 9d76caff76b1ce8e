package gateway_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/pfrgateway/caddy-pfr/gateway"
)

// chunkedInput is an import about John Doe (born 1970-01-01, the default
// record Patient of createRecord) whose references need care when it is
// written in chunks: an Encounter and a Condition that reference each
// other (a cycle), 12 Observations at that Encounter each referencing the
// one before (a chain, written first in the input so that every reference
// points forward), a DiagnosticReport with all of them as results, and a
// lab value whose digits must stay as written. Entries are known by
// urn:uuid fullUrls in the Bundle form (pretty-printed, so entries lie at
// uneven offsets) and by Type/id in the NDJSON form.
func chunkedInput(bundle bool) []byte {
	urns := map[string]string{}
	ref := func(typ, id string) string {
		if !bundle {
			return typ + "/" + id
		}
		if urns[typ+"/"+id] == "" {
			urns[typ+"/"+id] = fmt.Sprintf("urn:uuid:00000000-0000-4000-8000-%012d", len(urns))
		}
		return urns[typ+"/"+id]
	}
	var res []string
	add := func(typ, id, body string) {
		res = append(res, fmt.Sprintf(`{"fullUrl":%q,"resource":{"resourceType":%q,"id":%q,%s}}`, ref(typ, id), typ, id, body))
	}
	var results []string
	for i := 11; i >= 0; i-- {
		member := ""
		if i > 0 {
			member = fmt.Sprintf(`,"hasMember":[{"reference":%q}]`, ref("Observation", fmt.Sprintf("o%d", i-1)))
		}
		add("Observation", fmt.Sprintf("o%d", i), fmt.Sprintf(`"status":"final","code":{"text":"o%d"},"subject":{"reference":%q},"encounter":{"reference":%q},"valueQuantity":{"value":0.40%d}%s`,
			i, ref("Patient", "p"), ref("Encounter", "e"), i, member))
		results = append(results, fmt.Sprintf(`{"reference":%q}`, ref("Observation", fmt.Sprintf("o%d", i))))
	}
	add("DiagnosticReport", "r", fmt.Sprintf(`"status":"final","code":{"text":"r"},"subject":{"reference":%q},"result":[%s]`, ref("Patient", "p"), strings.Join(results, ",")))
	add("Encounter", "e", fmt.Sprintf(`"status":"finished","class":{"code":"AMB"},"subject":{"reference":%q},"reasonReference":[{"reference":%q}]`, ref("Patient", "p"), ref("Condition", "c")))
	add("Condition", "c", fmt.Sprintf(`"code":{"text":"c"},"subject":{"reference":%q},"encounter":{"reference":%q}`, ref("Patient", "p"), ref("Encounter", "e")))
	add("Patient", "p", `"name":[{"family":"Doe","given":["John"]}],"birthDate":"1970-01-01","identifier":[{"system":"urn:test:mrn","value":"chunked"}]`)
	if !bundle {
		var lines []string
		for _, r := range res {
			var e struct {
				Resource json.RawMessage `json:"resource"`
			}
			_ = json.Unmarshal([]byte(r), &e)
			lines = append(lines, string(e.Resource))
		}
		return []byte(strings.Join(lines, "\n") + "\n")
	}
	return []byte("{\n  \"resourceType\": \"Bundle\",\n  \"entry\": [\n    " + strings.Join(res, ",\n      \n    ") + "\n  ],\n  \"type\": \"collection\"\n}\n")
}

// checkChunkedImport checks that the record at host holds chunkedInput
// once, every reference pointing at the right resource of the record.
func checkChunkedImport(t *testing.T, e *exportEnv, token, host string) {
	t.Helper()
	byText := map[string]string{} // code.text → "Type/id"
	all := map[string]map[string]any{}
	for _, typ := range []string{"Observation", "DiagnosticReport", "Encounter", "Condition"} {
		got := e.readAll(t, token, host, typ)
		for id, r := range got {
			text := "e"
			if c, ok := r["code"].(map[string]any); ok {
				text, _ = c["text"].(string)
			}
			if byText[text] != "" {
				t.Errorf("%s is in the record twice", text)
			}
			byText[text] = typ + "/" + id
			all[text] = r
		}
	}
	if len(all) != 15 {
		t.Fatalf("the record holds %d of the 15 resources: %v", len(all), byText)
	}
	refOf := func(v any) string { m, _ := v.(map[string]any); s, _ := m["reference"].(string); return s }
	first := func(v any) any { l, _ := v.([]any); return l[0] }
	if got := refOf(first(all["e"]["reasonReference"])); got != byText["c"] {
		t.Errorf("Encounter.reasonReference %q, want %q", got, byText["c"])
	}
	if got := refOf(all["c"]["encounter"]); got != byText["e"] {
		t.Errorf("Condition.encounter %q, want %q", got, byText["e"])
	}
	for i := range 12 {
		o := all[fmt.Sprintf("o%d", i)]
		if got := refOf(o["encounter"]); got != byText["e"] {
			t.Errorf("o%d.encounter %q, want %q", i, got, byText["e"])
		}
		if i > 0 {
			if got, want := refOf(first(o["hasMember"])), byText[fmt.Sprintf("o%d", i-1)]; got != want {
				t.Errorf("o%d.hasMember %q, want %q", i, got, want)
			}
		}
	}
	results, _ := all["r"]["result"].([]any)
	seen := map[string]bool{}
	for _, r := range results {
		seen[refOf(r)] = true
	}
	for i := range 12 {
		if !seen[byText[fmt.Sprintf("o%d", i)]] {
			t.Errorf("DiagnosticReport.result lacks o%d (%s)", i, byText[fmt.Sprintf("o%d", i)])
		}
	}
	// Values byte for byte.
	res := e.do(t, token, "GET", host, "/fhir/"+byText["o10"], nil)
	if !strings.Contains(res.Body.String(), `"value":0.4010`) {
		t.Errorf("o10's value is not as written: %s", res.Body)
	}
}

// TestImportChunks writes an import in transactions of 3 resources: the
// Encounter and Condition that reference each other share one, every
// reference into an earlier transaction points at what it wrote, and the
// record ends with each resource once, as a one-transaction import would
// leave it; the Bundle form is read entry by entry, the NDJSON line by line.
func TestImportChunks(t *testing.T) {
	e := newExportEnv(t, false, gateway.BulkConfig{ImportChunk: 3})
	alice := e.token(t, "alice", "")
	for _, form := range []string{"bundle", "ndjson"} {
		slug := "chunked-" + form
		e.createRecord(t, alice, slug, "")
		ct := "application/fhir+ndjson"
		if form == "bundle" {
			ct = "application/fhir+json"
		}
		code, body := e.waitImport(t, alice, e.startImport(t, alice, slug, ct, chunkedInput(form == "bundle"), ""))
		if code != http.StatusOK {
			t.Fatalf("%s: %d %s", form, code, body)
		}
		var out struct {
			Result gateway.ImportResult `json:"result"`
		}
		_ = json.Unmarshal(body, &out)
		if out.Result.Imported != 15 || out.Result.Transactions < 5 || len(out.Result.Report.Created) != 15 {
			t.Errorf("%s: imported %d in %d transactions, %d created: %s", form, out.Result.Imported, out.Result.Transactions, len(out.Result.Report.Created), body)
		}
		checkChunkedImport(t, e, alice, slug+".pfr.localhost")
		// The sender's identifier is kept on the record's Patient.
		res := e.do(t, alice, "GET", slug+".pfr.localhost", "/fhir/Patient", nil)
		if !strings.Contains(res.Body.String(), `"value":"chunked"`) {
			t.Errorf("%s: the record's Patient lacks the sender's identifier: %s", form, res.Body)
		}
	}
}

// rewindImport puts a finished import job back in the state an
// interrupted run leaves on disk: in progress with its input, `chunks`
// chunks recorded, and the entries of the next recorded chunk pending
// when pending is set.
func rewindImport(t *testing.T, e *exportEnv, status string, input []byte, chunks int, pending bool) {
	t.Helper()
	jobDir := filepath.Join(e.cfg.Bulk.Dir, status[strings.LastIndexByte(status, '/')+1:])
	raw, err := os.ReadFile(filepath.Join(jobDir, "job.json"))
	if err != nil {
		t.Fatal(err)
	}
	var job map[string]any
	_ = json.Unmarshal(raw, &job)
	job["status"] = "in-progress"
	for _, k := range []string{"result", "finished", "expires", "importPending"} {
		delete(job, k)
	}
	if pending {
		raw, err := os.ReadFile(filepath.Join(jobDir, fmt.Sprintf("chunk-%06d.json", chunks)))
		if err != nil {
			t.Fatal(err)
		}
		var c struct {
			Entries []int `json:"entries"`
		}
		_ = json.Unmarshal(raw, &c)
		job["importPending"] = c.Entries
	}
	total := int(job["importChunks"].(float64))
	for k := chunks; k < total; k++ {
		if err := os.Remove(filepath.Join(jobDir, fmt.Sprintf("chunk-%06d.json", k))); err != nil {
			t.Fatal(err)
		}
	}
	job["importChunks"] = chunks
	raw, _ = json.Marshal(job)
	if err := os.WriteFile(filepath.Join(jobDir, "job.json"), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(jobDir, "input"), input, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestImportResumesAfterChunk: an import interrupted between chunks goes
// on after the last chunk it recorded; one interrupted after a chunk
// committed but before it was recorded finds that chunk's resources (by
// their content tags, among those of the job's tag) and does not write
// them again. Either way the record ends with every resource once and
// every reference right.
func TestImportResumesAfterChunk(t *testing.T) {
	e := newExportEnv(t, true, gateway.BulkConfig{ImportChunk: 3})
	alice := e.token(t, "alice", "")
	input := chunkedInput(true)
	for _, pending := range []bool{false, true} {
		slug := fmt.Sprintf("resumed-%v", pending)
		host := slug + ".pfr.localhost"
		e.createRecord(t, alice, slug, "")
		status := e.startImport(t, alice, slug, "application/fhir+json", input, "")
		code, body := e.waitImport(t, alice, status)
		if code != http.StatusOK {
			t.Fatalf("import: %d %s", code, body)
		}
		var out struct {
			Result gateway.ImportResult `json:"result"`
		}
		_ = json.Unmarshal(body, &out)
		// Pending: the last chunk committed unrecorded. Otherwise: the
		// last two chunks were never written.
		chunks := out.Result.Transactions - 1
		if !pending {
			chunks--
			jobDir := filepath.Join(e.cfg.Bulk.Dir, status[strings.LastIndexByte(status, '/')+1:])
			for k := chunks; k < out.Result.Transactions; k++ {
				raw, _ := os.ReadFile(filepath.Join(jobDir, fmt.Sprintf("chunk-%06d.json", k)))
				var c struct {
					Locations []string `json:"locations"`
				}
				_ = json.Unmarshal(raw, &c)
				for _, loc := range c.Locations {
					if res := e.do(t, alice, "DELETE", host, "/fhir/"+loc, nil); res.Code >= 300 {
						t.Fatalf("deleting %s: %d %s", loc, res.Code, res.Body)
					}
				}
			}
		}
		rewindImport(t, e, status, input, chunks, pending)
		e.restart(t)
		code, body = e.waitImport(t, alice, status)
		if code != http.StatusOK || !strings.Contains(string(body), `"resumed":true`) {
			t.Fatalf("pending %v: the resumed import: %d %s", pending, code, body)
		}
		checkChunkedImport(t, e, alice, host)
	}
}

// TestImportUndone: an import whose third transaction fails takes out
// what its first two wrote: the record is as it was, and the job says why
// it failed.
func TestImportUndone(t *testing.T) {
	e := newExportEnv(t, false, gateway.BulkConfig{ImportChunk: 3})
	alice := e.token(t, "alice", "")
	e.createRecord(t, alice, "undone", "")
	var transactions atomic.Int32
	hook := func(r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/fhir" && transactions.Add(1) == 3 {
			panic(http.ErrAbortHandler)
		}
	}
	e.hook.Store(&hook)
	code, body := e.waitImport(t, alice, e.startImport(t, alice, "undone", "application/fhir+json", chunkedInput(true), ""))
	e.hook.Store(nil)
	if code < 500 || !strings.Contains(string(body), "nothing of it was written") {
		t.Errorf("the failed import: %d %s", code, body)
	}
	if n := transactions.Load(); n < 4 {
		t.Errorf("%d transactions: the failure came before two had committed, or nothing was undone", n)
	}
	for _, typ := range []string{"Observation", "DiagnosticReport", "Encounter", "Condition"} {
		if got := e.readAll(t, alice, "undone.pfr.localhost", typ); len(got) != 0 {
			t.Errorf("the record holds %d %s after the failed import", len(got), typ)
		}
	}
	res := e.do(t, alice, "GET", "undone.pfr.localhost", "/fhir/Patient", nil)
	if strings.Contains(res.Body.String(), `"value":"chunked"`) {
		t.Errorf("the failed import changed the record's Patient: %s", res.Body)
	}
}

// TestImportUndoFails: when the transactions that would take a failed
// import out fail too, the job says what is left and the tag it carries,
// never that nothing was written.
func TestImportUndoFails(t *testing.T) {
	e := newExportEnv(t, false, gateway.BulkConfig{ImportChunk: 3})
	alice := e.token(t, "alice", "")
	e.createRecord(t, alice, "left", "")
	var transactions atomic.Int32
	hook := func(r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/fhir" && transactions.Add(1) >= 3 {
			panic(http.ErrAbortHandler)
		}
	}
	e.hook.Store(&hook)
	status := e.startImport(t, alice, "left", "application/fhir+json", chunkedInput(true), "")
	code, body := e.waitImport(t, alice, status)
	e.hook.Store(nil)
	if code < 500 || strings.Contains(string(body), "nothing of it was written") || !strings.Contains(string(body), "urn:pfr:dopu|import-") {
		t.Errorf("the failed import whose undo failed: %d %s", code, body)
	}
	if got := e.readAll(t, alice, "left.pfr.localhost", "Observation"); len(got) == 0 {
		t.Errorf("the first two transactions wrote no Observation: the test shows nothing")
	}
}
