package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// recordingUpstream is a stand-in FHIR server that records every request it
// receives and answers with absolute URLs of its own address, to assert the
// exact requests the gateway sends through Caddy's reverse_proxy.
type recordingUpstream struct {
	*httptest.Server
	mu   sync.Mutex
	seen []*http.Request
}

func newRecordingUpstream(t *testing.T) *recordingUpstream {
	u := &recordingUpstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.Close)
	return u
}

func (u *recordingUpstream) serve(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	u.seen = append(u.seen, r.Clone(r.Context()))
	u.mu.Unlock()
	self := "http://" + r.Host
	w.Header().Set("Content-Type", "application/fhir+json")
	switch {
	case strings.HasSuffix(r.URL.Path, "$partition-management-create-partition"):
		fmt.Fprint(w, `{"resourceType":"Parameters","parameter":[]}`)
	case r.Method == "POST" && strings.HasSuffix(r.URL.Path, "/Patient"):
		w.Header().Set("Location", self+r.URL.Path+"/p1/_history/1")
		w.WriteHeader(http.StatusCreated)
	default:
		base := self + strings.TrimSuffix(r.URL.Path, "/Observation")
		body, _ := json.Marshal(map[string]any{
			"resourceType": "Bundle", "type": "searchset", "total": 1,
			"link": []any{map[string]any{"relation": "self", "url": base + "/Observation?_count=20"}},
			"entry": []any{map[string]any{
				"fullUrl": base + "/Observation/o1",
				"resource": map[string]any{"resourceType": "Observation", "id": "o1",
					"subject": map[string]any{"reference": base + "/Patient/p1"}},
			}},
		})
		w.Header().Set("Content-Location", base+"/Observation")
		_, _ = w.Write(body)
	}
}

func (u *recordingUpstream) last() *http.Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.seen[len(u.seen)-1]
}

// TestUpstreamRequests checks, per partition mode, the exact request the
// upstream receives through Caddy's reverse_proxy and that its absolute URLs
// come back as the record's address.
func TestUpstreamRequests(t *testing.T) {
	for _, mode := range []struct {
		name, lines string // %s: the upstream's host:port
		check       func(t *testing.T, r *http.Request)
	}{
		{"header", "\t\tpartition header\n\t\tupstream reverse_proxy %s", func(t *testing.T, r *http.Request) {
			if v := r.Header.Values("X-Request-Partition-IDs"); len(v) != 1 || v[0] != "1" {
				t.Errorf("partition header %q, want exactly [1]", v)
			}
			if r.URL.Path != "/fhir/Observation" {
				t.Errorf("path %q", r.URL.Path)
			}
		}},
		{"url_prefix", "\t\tpartition url_prefix\n\t\tupstream reverse_proxy %s", func(t *testing.T, r *http.Request) {
			if !strings.HasPrefix(r.URL.Path, "/fhir/pfr-") || !strings.HasSuffix(r.URL.Path, "/Observation") {
				t.Errorf("path %q, want /fhir/pfr-<record id>/Observation", r.URL.Path)
			}
			if v := r.Header.Values("X-Request-Partition-IDs"); len(v) != 0 {
				t.Errorf("partition header %q reached the upstream", v)
			}
		}},
		{"tenant_header", "\t\tpartition tenant_header X-FHIR-TENANT-ID {\n\t\t\tdatastore_id default\n\t\t}\n\t\tupstream reverse_proxy %s", func(t *testing.T, r *http.Request) {
			if v := r.Header.Values("X-FHIR-TENANT-ID"); len(v) != 1 || !strings.HasPrefix(v[0], "pfr-") {
				t.Errorf("tenant header %q", v)
			}
			if v := r.Header.Values("X-FHIR-DSID"); len(v) != 1 || v[0] != "default" {
				t.Errorf("datastore header %q", v)
			}
			if v := r.Header.Values("X-Request-Partition-IDs"); len(v) != 0 {
				t.Errorf("partition header %q reached the upstream", v)
			}
		}},
		{"per_record_url", "\t\tpartition per_record_url http://%[1]s/r/{record_id}/fhir\n\t\tupstream reverse_proxy {http.vars.pfr_upstream}", func(t *testing.T, r *http.Request) {
			if !strings.HasPrefix(r.URL.Path, "/r/") || !strings.HasSuffix(r.URL.Path, "/fhir/Observation") {
				t.Errorf("path %q, want /r/<record id>/fhir/Observation", r.URL.Path)
			}
			for _, h := range []string{"X-Request-Partition-IDs", "X-FHIR-TENANT-ID", "X-FHIR-DSID"} {
				if v := r.Header.Values(h); len(v) != 0 {
					t.Errorf("%s %q reached the upstream", h, v)
				}
			}
		}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			up := newRecordingUpstream(t)
			e := startGateway(t, fmt.Sprintf(mode.lines, strings.TrimPrefix(up.URL, "http://")))
			alice := e.token("alice")
			rec := e.createRecord(alice, "alice-home", "Smith", "Alice")
			if rec["patientId"] != "p1" {
				t.Fatalf("patient id from the upstream's Location: %v", rec["patientId"])
			}
			res := e.do("GET", recordURL("alice-home", "/Observation"), alice, nil,
				"X-Request-Partition-IDs", "7", "X-FHIR-TENANT-ID", "someone-else", "X-FHIR-DSID", "other")
			res.Expect(t, http.StatusOK, "search")
			got := up.last()
			mode.check(t, got)
			if got.Header.Get("Authorization") != "" {
				t.Errorf("the client's bearer token reached the upstream")
			}
			body := string(res.Raw)
			if strings.Contains(body, up.URL) {
				t.Errorf("upstream address leaked: %s", body)
			}
			for _, want := range []string{
				recordURL("alice-home", "/Observation?_count=20"),
				recordURL("alice-home", "/Observation/o1"),
				recordURL("alice-home", "/Patient/p1"),
			} {
				if !strings.Contains(body, want) {
					t.Errorf("response lacks %s: %s", want, body)
				}
			}
			if cl := res.Header.Get("Content-Location"); cl != recordURL("alice-home", "/Observation") {
				t.Errorf("Content-Location %q", cl)
			}
		})
	}
}

// TestFailedProvisioningLeavesNothing: when the upstream refuses the
// Patient, the record, its slug and its partition are all undone.
func TestFailedProvisioningLeavesNothing(t *testing.T) {
	var failPatient sync.Map
	failPatient.Store("on", true)
	up := &recordingUpstream{}
	up.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if on, _ := failPatient.Load("on"); on == true && r.Method == "POST" && strings.HasSuffix(r.URL.Path, "/Patient") {
			up.mu.Lock()
			up.seen = append(up.seen, r.Clone(r.Context()))
			up.mu.Unlock()
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		up.serve(w, r)
	}))
	t.Cleanup(up.Close)
	e := startGateway(t, "\t\tupstream reverse_proxy "+strings.TrimPrefix(up.URL, "http://"))
	alice := e.token("alice")
	res := e.do("POST", apex("/pfr/v1/records"), alice, map[string]any{
		"slug": "failed-once", "patient": map[string]any{"resourceType": "Patient"},
	})
	res.ExpectOutcome(t, http.StatusBadGateway, "provisioning against a failing upstream")

	deleted := false
	up.mu.Lock()
	for _, r := range up.seen {
		deleted = deleted || strings.HasSuffix(r.URL.Path, "$partition-management-delete-partition")
	}
	up.mu.Unlock()
	if !deleted {
		t.Error("the partition created upstream was not deleted after the failure")
	}
	if n := len(e.do("GET", apex("/pfr/v1/records"), alice, nil).Body["records"].([]any)); n != 0 {
		t.Errorf("%d records after a failed provisioning", n)
	}
	// No certificate for the half-made record (a slug no other test uses:
	// certificates stay cached across the tests' configs), and the slug is
	// free again.
	if _, err := tlsHandshake("failed-once." + baseDomain); err == nil {
		t.Error("a certificate was issued for a record whose provisioning failed")
	}
	failPatient.Store("on", false)
	e.createRecord(alice, "failed-once", "Smith", "Alice")
}

// TestDevIssuerRefusedInProduction: dev_issuer with a real domain does not load.
func TestDevIssuerRefusedInProduction(t *testing.T) {
	startGateway(t, "") // make sure Caddy runs
	cfg := fmt.Sprintf(`{
%s}
http://pfr.example.com:%d {
	pfr {
		base_domain pfr.example.com
		data_dir %s
		dev_issuer
		upstream pfr_store {
			path %s/store.db
		}
	}
}`, processOptions(), httpPort, t.TempDir(), t.TempDir())
	if err := loadCaddy(cfg, "caddyfile"); err == nil || !strings.Contains(err.Error(), "dev_issuer is only allowed") {
		t.Errorf("loading dev_issuer for pfr.example.com: %v, want an error saying dev_issuer is only allowed for local names", err)
	}
}
