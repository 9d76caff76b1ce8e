package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// peerGatewaySite is one more gateway in the same Caddy, at *.%[2]s over
// https with Caddy's internal CA, on the embedded store in %[1]s, that
// may dial loopback (webhook_allow); %[3]s more export lines (import_ca),
// %[4]d the HTTPS port.
const peerGatewaySite = `
https://%[2]s:%[4]d, https://*.%[2]s:%[4]d {
	tls internal
	pfr {
		base_domain %[2]s
		data_dir %[1]s
		dev_issuer
		webhook_allow 127.0.0.1/32 ::1/128
		upstream pfr_store {
			path %[1]s/store.db
		}
		export {
			import_chunk 25
%[3]s
		}
	}
}
`

// TestImportManifestOverHTTPS moves a record between two gateways of real
// Caddy over https, through the manifest URL: the destination fetches the
// source's $export (its status URL and files at *.pfr.localhost, served
// with a certificate of Caddy's `tls internal` CA) because its
// `export { import_ca }` names that CA's root; a gateway without it fails
// the same import on the certificate and its record stays empty. The
// source record is itself loaded by a chunked import of a Synthea Bundle
// (import_chunk 20: several transactions), and both records then hold the
// same resources with the same reference graph.
func TestImportManifestOverHTTPS(t *testing.T) {
	dirA, dirB, dirC := t.TempDir(), t.TempDir(), t.TempDir()
	devB, err := auth.LoadOrCreateDevIssuer(dirB)
	if err != nil {
		t.Fatal(err)
	}
	devC, err := auth.LoadOrCreateDevIssuer(dirC)
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(caddyStorage, "pki", "authorities", "local", "root.crt")
	sites := fmt.Sprintf(peerGatewaySite, dirB, "dest.localhost", "\t\t\timport_ca "+root, httpsPort) +
		fmt.Sprintf(peerGatewaySite, dirC, "untrusting.localhost", "", httpsPort)
	e := loadGateway(t, dirA, withStore(dirA, "")+"\n\t\texport {\n\t\t\timport_chunk 20\n\t\t}", sites)
	e.client.Timeout = 5 * time.Minute

	raw := testkit.ReadFHIR(t, "synthea/Ned_Hintz_e4b9259d-0f54-48d1-a35d-b526729a4dfe.json")
	var b struct {
		Entry []struct {
			Resource map[string]any `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	person := map[string]any{"resourceType": "Patient"}
	for _, en := range b.Entry {
		if en.Resource["resourceType"] == "Patient" {
			for _, k := range []string{"name", "gender", "birthDate"} {
				person[k] = en.Resource[k]
			}
		}
	}
	create := func(apexURL, token string) string {
		res := e.do("POST", apexURL+"/pfr/v1/records", token, map[string]any{"slug": "ned", "patient": person})
		res.Expect(t, http.StatusCreated, "create ned at "+apexURL)
		return res.Body["patientId"].(string)
	}
	// importInto posts body to a gateway's import and waits for its end.
	importInto := func(apexURL, token, contentType string, body []byte) response {
		t.Helper()
		res := e.do("POST", apexURL+"/pfr/v1/records/ned/import", token, body, "Content-Type", contentType)
		res.Expect(t, http.StatusAccepted, "import at "+apexURL)
		status := res.Header.Get("Content-Location")
		testkit.WaitFor(t, "the import at "+apexURL+" to end", 200*time.Millisecond, func() error {
			if res = e.do("GET", status, token, nil); res.Status == http.StatusAccepted {
				return errors.New("it is in progress")
			}
			return nil
		})
		return res
	}
	alice := e.token("alice")
	apexA := apex("")
	apexB := fmt.Sprintf("https://dest.localhost:%d", port())
	apexC := fmt.Sprintf("https://untrusting.localhost:%d", port())
	pidA := create(apexA, alice)

	loaded := importInto(apexA, alice, "application/fhir+json", raw).Expect(t, http.StatusOK, "the Synthea Bundle into ned")
	result, _ := loaded.Body["result"].(map[string]any)
	if n, _ := result["transactions"].(float64); n < 3 {
		t.Errorf("the Synthea import took %v transactions, want several (import_chunk 20): %.300s", result["transactions"], loaded.Raw)
	}

	kick := e.do("GET", recordURL("ned", "/$export"), alice, nil, "Prefer", "respond-async", "Accept", "application/fhir+json")
	kick.Expect(t, http.StatusAccepted, "kick-off")
	status := kick.Header.Get("Content-Location")
	testkit.WaitFor(t, "the export to finish", 100*time.Millisecond, func() error {
		res := e.do("GET", status, alice, nil)
		if res.Status != http.StatusOK && res.Status != http.StatusAccepted {
			t.Fatalf("the export: %d %.300s", res.Status, res.Raw)
		}
		if res.Status != http.StatusOK {
			return errors.New("it is in progress")
		}
		return nil
	})
	manifestRequest, _ := json.Marshal(map[string]string{"manifest": status, "token": alice})

	// Without the source's CA: the certificate is refused, nothing is written.
	tokC, err := devC.Mint("carol", "openid patient/*.cruds", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	create(apexC, tokC)
	failed := importInto(apexC, tokC, "application/json", manifestRequest)
	if failed.Status != http.StatusBadGateway || !strings.Contains(string(failed.Raw), "certificate") {
		t.Errorf("the import without import_ca: %d %.400s", failed.Status, failed.Raw)
	}
	if res := e.do("GET", fmt.Sprintf("https://ned.untrusting.localhost:%d/fhir/Observation?_count=1", port()), tokC, nil); len(anySlice(res.Body["entry"])) != 0 {
		t.Errorf("the failed import wrote: %.300s", res.Raw)
	}

	// With it: the record moves.
	tokB, err := devB.Mint("bob", "openid patient/*.cruds", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pidB := create(apexB, tokB)
	moved := importInto(apexB, tokB, "application/json", manifestRequest).Expect(t, http.StatusOK, "the import from the manifest URL over https")
	t.Logf("moved: %.300s", moved.Raw)
	baseB := fmt.Sprintf("https://ned.dest.localhost:%d/fhir", port())
	compareGraphs(t, e.graphOf(t, recordURL("ned", ""), alice, pidA), e.graphOf(t, baseB, tokB, pidB))
}
