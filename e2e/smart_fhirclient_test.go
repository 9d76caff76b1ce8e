package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// launchTimeout bounds the fhirclient script (it also stops itself at 45 s).
const launchTimeout = 90 * time.Second

// TestSMARTFhirClientStandaloneLaunch: fhirclient, the SMART JS client a
// real app would use, discovers the PFR's authorization server from the
// FHIR base alone, launches standalone with PKCE, and reads the record's
// Patient (the launch context) and Observations.
func TestSMARTFhirClientStandaloneLaunch(t *testing.T) {
	node := requireNode(t, "fhirclient")
	p := startProvider(t)
	e := startSmartGateway(t, p.issuer, "")

	mgmt := p.userToken(t, url.Values{"scope": {"openid"}, "resource": {managementAudience()}})
	rec := e.createRecord(mgmt.AccessToken, "john-launch", "Doe", "John")
	base := rec["fhirBase"].(string)
	patientID := rec["patientId"].(string)
	p.setLaunchPatient(t, base, patientID)
	writer := p.userToken(t, url.Values{"scope": {"openid patient/*.cruds"}, "aud": {base}})
	for _, code := range []string{"29463-7", "8302-2", "8867-4"} {
		e.do("POST", recordURL("john-launch", "/Observation"), writer.AccessToken, observation("Patient/"+patientID, code)).
			Expect(t, http.StatusCreated, "write "+code)
	}
	// Another person's record on the same gateway must stay out of reach.
	alice := e.createRecord(e.token("alice"), "alice-launch", "Smith", "Alice")
	p.setLaunchPatient(t, alice["fhirBase"].(string), alice["patientId"].(string))

	caFile := filepath.Join(caddyStorage, "pki", "authorities", "local", "root.crt")
	if _, err := os.Stat(caFile); err != nil {
		t.Fatalf("Caddy's local CA root: %v", err)
	}
	run := func(t *testing.T, fhirBase, password string) (map[string]any, string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), launchTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, node, "standalone-launch.mjs")
		cmd.Dir = smartDir
		cmd.Env = append(os.Environ(), "FHIR_BASE="+fhirBase, "CA_FILE="+caFile,
			"SMART_USER="+smartUser, "SMART_PASSWORD="+password, "CLIENT_ID="+appClientID)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		for _, line := range strings.Split(stdout.String(), "\n") {
			if rest, ok := strings.CutPrefix(line, "result "); ok {
				var out map[string]any
				if jerr := json.Unmarshal([]byte(rest), &out); jerr != nil {
					t.Fatalf("script result: %v: %s", jerr, rest)
				}
				return out, stderr.String(), err
			}
		}
		return nil, stderr.String(), err
	}

	out, stderr, err := run(t, base, smartPassword)
	if err != nil || out == nil {
		t.Fatalf("fhirclient standalone launch: %v\n%s", err, stderr)
	}
	patient, _ := out["patient"].(map[string]any)
	if patient["resourceType"] != "Patient" || patient["id"] != patientID || out["launchPatient"] != patientID {
		t.Fatalf("fhirclient read %v (launch patient %v), want Patient/%s", patient["id"], out["launchPatient"], patientID)
	}
	if names, _ := json.Marshal(patient["name"]); !strings.Contains(string(names), `"Doe"`) {
		t.Errorf("Patient name %s", names)
	}
	if out["serverUrl"] != base {
		t.Errorf("fhirclient server %v, want %s", out["serverUrl"], base)
	}
	if n, _ := out["observations"].(float64); n != 3 {
		t.Errorf("fhirclient found %v Observations, want 3", out["observations"])
	}
	if scope, _ := out["tokenScope"].(string); !strings.Contains(scope, "patient/*.rs") || strings.Contains(scope, "cruds") {
		t.Errorf("granted scope %q", scope)
	}

	// The same app launched at Alice's record: the provider issues a token
	// for it, but John is no member there, so the gateway refuses the read.
	out, stderr, err = run(t, recordURL("alice-launch", ""), smartPassword)
	if err == nil || out != nil || !strings.Contains(stderr, "403") {
		t.Errorf("launch against another person's record: %v %v\n%s", err, out, stderr)
	}
	// A wrong password ends the launch at the login page.
	out, _, err = run(t, base, "not-the-password")
	if err == nil || out != nil {
		t.Errorf("launch with a wrong password succeeded: %v", out)
	}
}
