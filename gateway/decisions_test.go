package gateway_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestDecisions runs the pipeline without Caddy, in front of the embedded
// store, on a table of requests and the decision each must get (the
// status, and for every refusal an OperationOutcome), on an upstream
// trusted to keep partitions apart and on one that is not.
func TestDecisions(t *testing.T) {
	for _, trusted := range []bool{true, false} {
		wp := newPipeline(t, trusted)
		mint := func(sub, scope string) string {
			tok, err := wp.dev.Mint(sub, scope, nil, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}
		owner := wp.token
		stranger := mint("stranger", "openid patient/*.cruds")
		readOnly := mint("fuzzer", "openid patient/*.rs")
		obsOnly := mint("fuzzer", "openid patient/Observation.rs")
		own := `{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/` + wp.pid + `"}}`
		other := `{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/someone-else"}}`
		const host = "fuzz.pfr.localhost"
		for _, c := range []struct {
			name, token, method, host, path, body string
			want                                  int
		}{
			{"the CapabilityStatement is public", "", "GET", host, "/fhir/metadata", "", 200},
			{"no token", "", "GET", host, "/fhir/Patient/{pid}", "", 401},
			{"a stranger", stranger, "GET", host, "/fhir/Patient/{pid}", "", 403},
			{"a host that is no record", owner, "GET", "nobody.pfr.localhost", "/fhir/Patient/{pid}", "", 404},
			{"a host outside the base domain", owner, "GET", "fuzz.example.com", "/fhir/Patient/{pid}", "", 404},
			{"the owner reads her Patient", owner, "GET", host, "/fhir/Patient/{pid}", "", 200},
			{"the owner searches", owner, "GET", host, "/fhir/Observation?subject=Patient/{pid}", "", 200},
			{"an unknown resource type", owner, "GET", host, "/fhir/Hacker/1", "", 404},
			{"a dot segment", owner, "GET", host, "/fhir/Patient/../Patient/{pid}", "", 400},
			{"an id of dots", owner, "GET", host, "/fhir/Observation/...", "", 400},
			{"an encoded slash", owner, "GET", host, "/fhir/Patient%2F{pid}", "", 400},
			{"not a FHIR interaction", owner, "POST", host, "/fhir/Observation/1", own, 400},
			{"a write of her own", owner, "POST", host, "/fhir/Observation", own, 201},
			{"a write about someone else", owner, "POST", host, "/fhir/Observation", other, 422},
			{"a Patient that is not hers", owner, "PUT", host, "/fhir/Patient/p2", `{"resourceType":"Patient","id":"p2"}`, 422},
			{"write without a write scope", readOnly, "POST", host, "/fhir/Observation", own, 403},
			{"read outside the scopes", obsOnly, "GET", host, "/fhir/Condition?subject=Patient/{pid}", "", 403},
			{"a chain into a type outside the scopes", obsOnly, "GET", host, "/fhir/Observation?subject:Patient.name=x", "", 403},
			{"a stranger's Bundle without drop-offs", stranger, "POST", host, "/fhir", `{"resourceType":"Bundle","type":"transaction","entry":[]}`, 403},
			{"a document posted to the base", owner, "POST", host, "/fhir", `{"resourceType":"Bundle","type":"document","entry":[]}`, 400},
			{"XML", owner, "GET", host, "/fhir/Patient/{pid}?_format=xml", "", 406},
		} {
			path := strings.ReplaceAll(c.path, "{pid}", wp.pid)
			req := httptest.NewRequest(c.method, "http://"+c.host+path, bytes.NewReader([]byte(c.body)))
			req.Host = c.host
			if c.token != "" {
				req.Header.Set("Authorization", "Bearer "+c.token)
			}
			if c.body != "" {
				req.Header.Set("Content-Type", "application/fhir+json")
			}
			res := httptest.NewRecorder()
			if err := wp.gw.ServeHTTP(res, req, wp.up); err != nil {
				t.Fatal(err)
			}
			if res.Code != c.want {
				t.Errorf("trusted=%v, %s: %s %s = %d %.300s, want %d", trusted, c.name, c.method, path, res.Code, res.Body, c.want)
				continue
			}
			if res.Code >= 400 && !strings.Contains(res.Body.String(), `"OperationOutcome"`) {
				t.Errorf("trusted=%v, %s: %d without an OperationOutcome: %.300s", trusted, c.name, res.Code, res.Body)
			}
			if res.Code == http.StatusUnauthorized && res.Header().Get("WWW-Authenticate") == "" {
				t.Errorf("trusted=%v, %s: 401 without WWW-Authenticate", trusted, c.name)
			}
		}
	}
}
