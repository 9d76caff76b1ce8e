package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/bulkclient"
	"github.com/pfrgateway/caddy-pfr/gateway"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// createRecord creates another record for the caller; the Patient is
// John Doe born 1970-01-01 unless patient says otherwise.
func (e *exportEnv) createRecord(t testing.TB, token, slug, patient string) string {
	t.Helper()
	if patient == "" {
		patient = `{"resourceType":"Patient","name":[{"family":"Doe","given":["John"]}],"birthDate":"1970-01-01"}`
	}
	res := e.do(t, token, "POST", "pfr.localhost", "/pfr/v1/records", []byte(`{"slug":"`+slug+`","patient":`+patient+`}`))
	if res.Code != http.StatusCreated {
		t.Fatalf("creating %s: %d %s", slug, res.Code, res.Body)
	}
	var view struct {
		PatientID string `json:"patientId"`
	}
	_ = json.Unmarshal(res.Body.Bytes(), &view)
	return view.PatientID
}

// startImport posts an import and returns its status path.
func (e *exportEnv) startImport(t testing.TB, token, slug, contentType string, body []byte, query string) string {
	t.Helper()
	res := e.do(t, token, "POST", "pfr.localhost", "/pfr/v1/records/"+slug+"/import"+query, body, "Content-Type", contentType)
	if res.Code != http.StatusAccepted {
		t.Fatalf("import: %d %s", res.Code, res.Body)
	}
	loc := res.Header().Get("Content-Location")
	if !strings.HasPrefix(loc, "http://pfr.localhost/pfr/v1/records/"+slug+"/import/") {
		t.Fatalf("Content-Location %q", loc)
	}
	return strings.TrimPrefix(loc, "http://pfr.localhost")
}

// waitImport polls an import until it ends and returns the last answer.
func (e *exportEnv) waitImport(t testing.TB, token, status string) (int, []byte) {
	t.Helper()
	var code int
	var body []byte
	testkit.Wait(t, "the import to end", func() bool {
		res := e.do(t, token, "GET", "pfr.localhost", status, nil)
		if res.Code == http.StatusAccepted {
			if res.Header().Get("X-Progress") == "" {
				t.Fatalf("a 202 without X-Progress")
			}
			return false
		}
		code, body = res.Code, res.Body.Bytes()
		return true
	})
	return code, body
}

// readAll reads every resource of typ in the record at host through the
// gateway, by id.
func (e *exportEnv) readAll(t testing.TB, token, host, typ string) map[string]map[string]any {
	t.Helper()
	res := e.do(t, token, "GET", host, "/fhir/"+typ+"?_count=1000", nil)
	if res.Code != http.StatusOK {
		t.Fatalf("search %s: %d %s", typ, res.Code, res.Body)
	}
	var b struct {
		Entry []struct {
			Resource map[string]any `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(res.Body.Bytes(), &b); err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]any{}
	for _, en := range b.Entry {
		out[en.Resource["id"].(string)] = en.Resource
	}
	return out
}

// exportNDJSON exports john's record and returns all its files joined.
func (e *exportEnv) exportNDJSON(t testing.TB, token string) []byte {
	t.Helper()
	m := e.poll(t, token, e.kickOff(t, token, "/$export"))
	var all bytes.Buffer
	for _, o := range m.Output {
		res := e.do(t, token, "GET", johnHost, strings.TrimPrefix(o.URL, "http://"+johnHost), nil)
		all.Write(res.Body.Bytes())
	}
	return all.Bytes()
}

// TestImportExport moves john's record into a new record of the same
// person: the same resources arrive, every reference points inside the
// new record (its Patient, the new ids), values byte for byte.
func TestImportExport(t *testing.T) {
	for _, trusted := range []bool{true, false} {
		t.Run(fmt.Sprintf("trusted=%v", trusted), func(t *testing.T) {
			e := newExportEnv(t, trusted, gateway.BulkConfig{})
			alice := e.token(t, "alice", "")
			prac := e.write(t, alice, "POST", "/Practitioner", `{"resourceType":"Practitioner","name":[{"family":"House"}]}`)
			enc := e.write(t, alice, "POST", "/Encounter", `{"resourceType":"Encounter","status":"finished","class":{"code":"AMB"},"subject":{"reference":"Patient/`+e.pid+`"},"participant":[{"individual":{"reference":"Practitioner/`+prac["id"].(string)+`"}}]}`)
			for i := range 3 {
				e.write(t, alice, "POST", "/Observation", `{"resourceType":"Observation","status":"final","code":{"text":"o`+fmt.Sprint(i)+`"},"subject":{"reference":"Patient/`+e.pid+`"},"encounter":{"reference":"Encounter/`+enc["id"].(string)+`"},"valueQuantity":{"value":0.10`+fmt.Sprint(i)+`0}}`)
			}
			ndjson := e.exportNDJSON(t, alice)

			pid2 := e.createRecord(t, alice, "johnny", "")
			const johnnyHost = "johnny.pfr.localhost"
			status := e.startImport(t, alice, "johnny", "application/fhir+ndjson", ndjson, "")
			code, body := e.waitImport(t, alice, status)
			if code != http.StatusOK {
				t.Fatalf("import: %d %s", code, body)
			}
			var done struct {
				Status string               `json:"status"`
				Result gateway.ImportResult `json:"result"`
			}
			if err := json.Unmarshal(body, &done); err != nil {
				t.Fatal(err)
			}
			if done.Result.Imported != 5 || done.Result.Status != "picked-up" {
				t.Errorf("result: %s", body)
			}
			obs := e.readAll(t, alice, johnnyHost, "Observation")
			encs := e.readAll(t, alice, johnnyHost, "Encounter")
			pracs := e.readAll(t, alice, johnnyHost, "Practitioner")
			if len(obs) != 3 || len(encs) != 1 || len(pracs) != 1 {
				t.Fatalf("johnny holds %d Observations, %d Encounters, %d Practitioners", len(obs), len(encs), len(pracs))
			}
			var encID, pracID string
			for id := range encs {
				encID = id
			}
			for id := range pracs {
				pracID = id
			}
			if p := encs[encID]["participant"].([]any)[0].(map[string]any)["individual"].(map[string]any)["reference"]; p != "Practitioner/"+pracID {
				t.Errorf("the Encounter's participant is %v, want Practitioner/%s", p, pracID)
			}
			for _, o := range obs {
				if o["subject"].(map[string]any)["reference"] != "Patient/"+pid2 || o["encounter"].(map[string]any)["reference"] != "Encounter/"+encID {
					t.Errorf("an Observation's references were not rewritten: %v %v", o["subject"], o["encounter"])
				}
			}
			raw := e.do(t, alice, "GET", johnnyHost, "/fhir/Observation?_count=100", nil).Body.String()
			for i := range 3 {
				if !strings.Contains(raw, `"value":0.10`+fmt.Sprint(i)+`0`) {
					t.Errorf("value 0.10%d0 not byte for byte in %s", i, raw)
				}
			}
			// The source record is untouched, and holds nothing of johnny.
			if got := e.readAll(t, alice, johnHost, "Observation"); len(got) != 3 {
				t.Errorf("john holds %d Observations after the import", len(got))
			}
		})
	}
}

// TestImportRefusals: a failed import leaves the record as it was.
func TestImportRefusals(t *testing.T) {
	e := newExportEnv(t, false, gateway.BulkConfig{})
	alice := e.token(t, "alice", "")
	e.createRecord(t, alice, "mary", `{"resourceType":"Patient","name":[{"family":"Major","given":["Mary"]}],"birthDate":"1990-05-05","gender":"female"}`)
	e.write(t, alice, "POST", "/Observation", observation(e.pid, "1"))
	ndjson := e.exportNDJSON(t, alice)

	// Another person's record: the Patients do not match, nothing is written.
	code, body := e.waitImport(t, alice, e.startImport(t, alice, "mary", "application/fhir+ndjson", ndjson, ""))
	if code != http.StatusUnprocessableEntity || !strings.Contains(string(body), "OperationOutcome") {
		t.Errorf("import of john into mary: %d %s", code, body)
	}
	// A line that is not a resource, or a value that cannot round-trip.
	for _, bad := range []string{"{\"resourceType\":\"Observation\"}\nnot json\n", `{"resourceType":"Observation","valueQuantity":{"value":1e999}}`} {
		code, body = e.waitImport(t, alice, e.startImport(t, alice, "john", "application/fhir+ndjson", []byte(string(ndjson)+bad), ""))
		if code != http.StatusBadRequest {
			t.Errorf("a bad line: %d %s", code, body)
		}
	}
	if got := e.readAll(t, alice, "mary.pfr.localhost", "Observation"); len(got) != 0 {
		t.Errorf("mary holds %d Observations after refused imports", len(got))
	}
	if got := e.readAll(t, alice, johnHost, "Observation"); len(got) != 1 {
		t.Errorf("john holds %d Observations after refused imports", len(got))
	}
	// The upstream fails in the middle of the transaction's answer: the
	// transaction is one, nothing of it stays.
	hook := func(r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/fhir" {
			panic(http.ErrAbortHandler)
		}
	}
	e.hook.Store(&hook)
	e.createRecord(t, alice, "johnny", "")
	code, body = e.waitImport(t, alice, e.startImport(t, alice, "johnny", "application/fhir+ndjson", ndjson, ""))
	e.hook.Store(nil)
	if code < 500 || !strings.Contains(string(body), "OperationOutcome") {
		t.Errorf("import with the upstream failing: %d %s", code, body)
	}
	if got := e.readAll(t, alice, "johnny.pfr.localhost", "Observation"); len(got) != 0 {
		t.Errorf("johnny holds %d Observations after a failed import", len(got))
	}
	// Unsupported bodies and strangers.
	if res := e.do(t, alice, "POST", "pfr.localhost", "/pfr/v1/records/john/import", []byte("x"), "Content-Type", "text/csv"); res.Code != http.StatusUnsupportedMediaType {
		t.Errorf("text/csv: %d", res.Code)
	}
	if res := e.do(t, e.token(t, "mallory", ""), "POST", "pfr.localhost", "/pfr/v1/records/john/import", ndjson, "Content-Type", "application/fhir+ndjson"); res.Code != http.StatusNotFound && res.Code != http.StatusForbidden {
		t.Errorf("a stranger's import: %d", res.Code)
	}
}

// TestImportResumes: an import whose transaction committed but whose job
// was not marked done (the process died in between) is run again by the
// next process, which finds its resources and writes nothing twice.
func TestImportResumes(t *testing.T) {
	e := newExportEnv(t, true, gateway.BulkConfig{})
	alice := e.token(t, "alice", "")
	for i := range 4 {
		e.write(t, alice, "POST", "/Observation", observation(e.pid, fmt.Sprint(i)))
	}
	ndjson := e.exportNDJSON(t, alice)
	e.createRecord(t, alice, "johnny", "")
	status := e.startImport(t, alice, "johnny", "application/fhir+ndjson", ndjson, "")
	if code, body := e.waitImport(t, alice, status); code != http.StatusOK {
		t.Fatalf("import: %d %s", code, body)
	}
	// Back to the state on disk of a job whose transaction committed just
	// before the process died: in progress, with its input.
	jobDir := filepath.Join(e.cfg.Bulk.Dir, status[strings.LastIndexByte(status, '/')+1:])
	raw, err := os.ReadFile(filepath.Join(jobDir, "job.json"))
	if err != nil {
		t.Fatal(err)
	}
	var job map[string]any
	_ = json.Unmarshal(raw, &job)
	job["status"] = "in-progress"
	delete(job, "result")
	delete(job, "finished")
	delete(job, "expires")
	raw, _ = json.Marshal(job)
	if err := os.WriteFile(filepath.Join(jobDir, "job.json"), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(jobDir, "input"), ndjson, 0o600); err != nil {
		t.Fatal(err)
	}
	e.restart(t)
	code, body := e.waitImport(t, alice, status)
	if code != http.StatusOK || !strings.Contains(string(body), `"resumed":true`) {
		t.Fatalf("the resumed import: %d %s", code, body)
	}
	if got := e.readAll(t, alice, "johnny.pfr.localhost", "Observation"); len(got) != 4 {
		t.Errorf("johnny holds %d Observations, want 4 (each once)", len(got))
	}
}

// TestImportBundleAndFiles imports a Synthea transaction Bundle, and NDJSON
// files as a multipart form.
func TestImportBundleAndFiles(t *testing.T) {
	e := newExportEnv(t, true, gateway.BulkConfig{})
	alice := e.token(t, "alice", "")
	raw := testkit.ReadFHIR(t, "synthea/Ned_Hintz_e4b9259d-0f54-48d1-a35d-b526729a4dfe.json")
	var b struct {
		Entry []struct {
			Resource map[string]any `json:"resource"`
		} `json:"entry"`
	}
	_ = json.Unmarshal(raw, &b)
	var patient []byte
	counts := map[string]int{}
	for _, en := range b.Entry {
		typ := en.Resource["resourceType"].(string)
		counts[typ]++
		if typ == "Patient" {
			p := map[string]any{"resourceType": "Patient", "name": en.Resource["name"], "birthDate": en.Resource["birthDate"], "gender": en.Resource["gender"]}
			patient, _ = json.Marshal(p)
		}
	}
	e.createRecord(t, alice, "ned", string(patient))
	code, body := e.waitImport(t, alice, e.startImport(t, alice, "ned", "application/fhir+json", raw, ""))
	if code != http.StatusOK {
		t.Fatalf("Bundle import: %d %.2000s", code, body)
	}
	for _, typ := range []string{"Encounter", "Observation", "Condition"} {
		if got := e.readAll(t, alice, "ned.pfr.localhost", typ); len(got) != counts[typ] {
			t.Errorf("%s: %d imported, the Bundle holds %d", typ, len(got), counts[typ])
		}
	}

	// Two NDJSON files in one form.
	for i := range 2 {
		e.write(t, alice, "POST", "/Observation", observation(e.pid, fmt.Sprint(i)))
	}
	m := e.poll(t, alice, e.kickOff(t, alice, "/$export"))
	var form bytes.Buffer
	mw := multipart.NewWriter(&form)
	for _, o := range m.Output {
		part, _ := mw.CreateFormFile("file", o.Type+".ndjson")
		part.Write(e.do(t, alice, "GET", johnHost, strings.TrimPrefix(o.URL, "http://"+johnHost), nil).Body.Bytes())
	}
	mw.Close()
	e.createRecord(t, alice, "johnny", "")
	code, body = e.waitImport(t, alice, e.startImport(t, alice, "johnny", mw.FormDataContentType(), form.Bytes(), ""))
	if code != http.StatusOK {
		t.Fatalf("multipart import: %d %s", code, body)
	}
	if got := e.readAll(t, alice, "johnny.pfr.localhost", "Observation"); len(got) != 2 {
		t.Errorf("johnny holds %d Observations", len(got))
	}
}

// serve puts the gateway on a loopback HTTP server and returns a client
// that dials it for every host (*.pfr.localhost) and the server's port.
func (e *exportEnv) serve(t testing.TB) (*http.Client, string) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := e.gw.ServeHTTP(w, r, e.up); err != nil {
			t.Error(err)
		}
	}))
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	_, port, _ := net.SplitHostPort(addr)
	dialer := &net.Dialer{}
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return dialer.DialContext(ctx, network, addr)
	}}}, port
}

// TestBulkClientMovesARecord: the Bulk Data client (what pfr export and pfr
// import run) exports john over HTTP, checks and writes the files with
// their checksums, and imports the directory into johnny; a damaged file
// is refused before anything is sent.
func TestBulkClientMovesARecord(t *testing.T) {
	e := newExportEnv(t, false, gateway.BulkConfig{})
	alice := e.token(t, "alice", "")
	for i := range 3 {
		e.write(t, alice, "POST", "/Observation", observation(e.pid, fmt.Sprintf("5.%d0", i)))
	}
	e.createRecord(t, alice, "johnny", "")
	hc, port := e.serve(t)
	var events []bulkclient.Event
	c := &bulkclient.Client{HTTP: hc, Token: alice, PollMin: 10 * time.Millisecond, PollMax: 50 * time.Millisecond,
		Progress: func(ev bulkclient.Event) { events = append(events, ev) }}
	dir := t.TempDir()
	res, err := c.Export(context.Background(), "http://john.pfr.localhost:"+port+"/fhir", bulkclient.ExportOptions{OutDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if res.Resources != 4 || len(res.Files) != 2 {
		t.Errorf("export: %+v", res)
	}
	for _, f := range []string{"manifest.json", "SHA256SUMS", "Observation.ndjson", "Patient.ndjson"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	phases := map[string]bool{}
	for _, ev := range events {
		phases[ev.Phase] = true
	}
	for _, p := range []string{"kick-off", "waiting", "download", "done"} {
		if !phases[p] {
			t.Errorf("no %s progress in %+v", p, events)
		}
	}
	done, err := c.Import(context.Background(), "http://johnny.pfr.localhost:"+port+"/fhir", dir, false)
	if err != nil {
		t.Fatal(err)
	}
	if done.Status != "complete" || done.Resources != 4 || !strings.Contains(string(done.Result), `"imported":3`) {
		t.Errorf("import: %+v %s", done, done.Result)
	}
	if got := e.readAll(t, alice, "johnny.pfr.localhost", "Observation"); len(got) != 3 {
		t.Errorf("johnny holds %d Observations", len(got))
	}
	// A damaged file: refused by its checksum, nothing sent.
	f := filepath.Join(dir, "Observation.ndjson")
	raw, _ := os.ReadFile(f)
	if err := os.WriteFile(f, bytes.Replace(raw, []byte("5.10"), []byte("5.11"), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Import(context.Background(), "http://johnny.pfr.localhost:"+port+"/fhir", dir, false); err == nil || !strings.Contains(err.Error(), "SHA-256") {
		t.Errorf("a damaged export was imported: %v", err)
	}
	if got := e.readAll(t, alice, "johnny.pfr.localhost", "Observation"); len(got) != 3 {
		t.Errorf("johnny holds %d Observations after the refused import", len(got))
	}
	// A server's refusal comes back with its status and diagnostics.
	_, err = (&bulkclient.Client{HTTP: hc, Token: e.token(t, "mallory", "")}).Export(context.Background(), "http://john.pfr.localhost:"+port+"/fhir", bulkclient.ExportOptions{OutDir: t.TempDir()})
	var be *bulkclient.Error
	if !errors.As(err, &be) || be.Status != http.StatusForbidden {
		t.Errorf("a stranger's export: %v", err)
	}
}
