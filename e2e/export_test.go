package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// exportAll runs a Bulk Data export at base with token through the whole
// asynchronous exchange (kick-off, polling, download) and returns the
// manifest and every exported line by type.
func (e *env) exportAll(base, query, token string) (map[string]any, map[string][]json.RawMessage) {
	t := e.t
	t.Helper()
	kick := e.do("GET", base+"/$export"+query, token, nil, "Prefer", "respond-async", "Accept", "application/fhir+json")
	kick.Expect(t, http.StatusAccepted, "kick-off")
	status := kick.Header.Get("Content-Location")
	if !strings.HasPrefix(status, base+"/$export-status/") {
		t.Fatalf("Content-Location %q", status)
	}
	var manifest map[string]any
	testkit.WaitFor(t, "the export to finish", 100*time.Millisecond, func() error {
		res := e.do("GET", status, token, nil)
		switch res.Status {
		case http.StatusAccepted:
			if res.Header.Get("X-Progress") == "" || res.Header.Get("Retry-After") == "" {
				t.Fatalf("a 202 without X-Progress or Retry-After: %v", res.Header)
			}
			return fmt.Errorf("it says %q", res.Header.Get("X-Progress"))
		case http.StatusOK:
			manifest = res.Body
			return nil
		default:
			t.Fatalf("status: %d %s", res.Status, res.Raw)
			return nil
		}
	})
	out := map[string][]json.RawMessage{}
	outputs, _ := manifest["output"].([]any)
	for _, o := range outputs {
		item := o.(map[string]any)
		res := e.do("GET", item["url"].(string), token, nil).Expect(t, http.StatusOK, "download")
		if ct := res.Header.Get("Content-Type"); ct != "application/fhir+ndjson" {
			t.Errorf("Content-Type %q", ct)
		}
		sc := bufio.NewScanner(bytes.NewReader(res.Raw))
		sc.Buffer(nil, 16<<20)
		for sc.Scan() {
			out[item["type"].(string)] = append(out[item["type"].(string)], append(json.RawMessage(nil), sc.Bytes()...))
		}
	}
	return manifest, out
}

// TestExportThroughCaddy exports a record through real Caddy, the jobs'
// reads going through Caddy's reverse_proxy to an upstream that keeps every
// record in one partition: the export holds the record's resources and
// nothing of the other record's.
func TestExportThroughCaddy(t *testing.T) {
	dir := t.TempDir()
	h := startSharedUpstream(t, filepath.Join(dir, "shared.db"))
	e := startGateway(t, "\t\tupstream reverse_proxy "+strings.TrimPrefix(h.server.URL, "http://"))
	alice, bob := e.token("alice"), e.token("bob")
	john := e.createRecord(alice, "john", "Doe", "John")
	jane := e.createRecord(bob, "jane", "Roe", "Jane")
	for i := range 5 {
		e.do("POST", recordURL("john", "/Observation"), alice, fmt.Sprintf(
			`{"resourceType":"Observation","status":"final","code":{"text":"john %d"},"subject":{"reference":"Patient/%s"},"valueQuantity":{"value":7.10}}`,
			i, john["patientId"])).Expect(t, http.StatusCreated, "john's Observation")
		e.do("POST", recordURL("jane", "/Observation"), bob, fmt.Sprintf(
			`{"resourceType":"Observation","status":"final","code":{"text":"jane %d"},"subject":{"reference":"Patient/%s"}}`,
			i, jane["patientId"])).Expect(t, http.StatusCreated, "jane's Observation")
	}
	e.do("POST", recordURL("jane", "/Practitioner"), bob, `{"resourceType":"Practitioner","name":[{"family":"Secret"}]}`).
		Expect(t, http.StatusCreated, "jane's Practitioner")

	manifest, got := e.exportAll(recordURL("john", ""), "", alice)
	if manifest["requiresAccessToken"] != true || manifest["transactionTime"] == nil {
		t.Errorf("manifest: %v", manifest)
	}
	if len(got["Observation"]) != 5 || len(got["Patient"]) != 1 || len(got) != 2 {
		t.Errorf("john's export: %d Observations, %d Patients, %d types", len(got["Observation"]), len(got["Patient"]), len(got))
	}
	for typ, lines := range got {
		for _, l := range lines {
			if bytes.Contains(l, []byte("jane")) || bytes.Contains(l, []byte("Secret")) || bytes.Contains(l, []byte(jane["patientId"].(string))) {
				t.Errorf("john's export holds jane's %s: %s", typ, l)
			}
			if typ == "Observation" && !bytes.Contains(l, []byte(`"value":7.10`)) {
				t.Errorf("a value not byte for byte: %s", l)
			}
		}
	}
	// Bob is no member of john's record: no export, no status.
	e.do("GET", recordURL("john", "/$export"), bob, nil, "Prefer", "respond-async").ExpectOutcome(t, http.StatusForbidden, "bob exports john")
}
