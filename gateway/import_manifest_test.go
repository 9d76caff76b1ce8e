package gateway_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/egress"
	"github.com/pfrgateway/caddy-pfr/gateway"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// manifestPolicy is the destination policy of the manifest tests:
// 127.0.0.1 allowed (plain http too), names resolved by the table (every
// *.pfr.localhost to 127.0.0.1), anything else unknown.
func manifestPolicy(names map[string]string) *egress.Policy {
	return &egress.Policy{
		Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
		LookupNetIP: func(_ context.Context, _, host string) ([]netip.Addr, error) {
			if strings.HasSuffix(host, ".pfr.localhost") {
				return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
			}
			if a, ok := names[host]; ok {
				return []netip.Addr{netip.MustParseAddr(a)}, nil
			}
			return nil, fmt.Errorf("no such host %s", host)
		},
	}
}

// TestImportFromManifestURL imports john's record into johnny from the
// gateway's own Bulk Data export over HTTP: POST …/import with the
// manifest URL (the export's status URL) and a token. The gateway fetches
// the manifest and its files under the destination policy and imports
// them as an upload.
func TestImportFromManifestURL(t *testing.T) {
	e := newExportEnv(t, false, gateway.BulkConfig{ImportPolicy: manifestPolicy(nil)})
	alice := e.token(t, "alice", "")
	for i := range 3 {
		e.write(t, alice, "POST", "/Observation", observation(e.pid, fmt.Sprintf("7.%d0", i)))
	}
	e.createRecord(t, alice, "johnny", "")
	hc, port := e.serve(t)
	status := httpKickOff(t, hc, alice, "http://john.pfr.localhost:"+port+"/fhir/$export")
	waitManifest(t, hc, alice, status)

	code, body := e.waitImport(t, alice, e.startImport(t, alice, "johnny", "application/json",
		[]byte(`{"manifest":"`+status+`","token":"`+alice+`"}`), ""))
	if code != http.StatusOK || !bytes.Contains(body, []byte(`"imported":3`)) {
		t.Fatalf("import from the manifest: %d %s", code, body)
	}
	got := e.readAll(t, alice, "johnny.pfr.localhost", "Observation")
	values := map[string]bool{}
	for _, o := range got {
		values[fmt.Sprint(o["valueQuantity"].(map[string]any)["value"])] = true
	}
	if len(got) != 3 || !values["7.1"] {
		t.Errorf("johnny holds %d Observations: %v", len(got), values)
	}

	// Without a token the export's status URL answers 401: the import
	// fails, saying so, and johnny is as it was.
	code, body = e.waitImport(t, alice, e.startImport(t, alice, "johnny", "application/json",
		[]byte(`{"manifest":"`+status+`"}`), ""))
	if code != http.StatusBadGateway || !bytes.Contains(body, []byte("OperationOutcome")) || !bytes.Contains(body, []byte("401")) {
		t.Errorf("an import without the token: %d %s", code, body)
	}
	if n := len(e.readAll(t, alice, "johnny.pfr.localhost", "Observation")); n != 3 {
		t.Errorf("johnny holds %d Observations after the failed import", n)
	}
}

// httpKickOff starts an export over HTTP and returns its status URL.
func httpKickOff(t testing.TB, hc *http.Client, token, kick string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", kick, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Prefer", "respond-async")
	res, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusAccepted {
		t.Fatalf("kick-off: %d", res.StatusCode)
	}
	return res.Header.Get("Content-Location")
}

// waitManifest polls an export's status URL over HTTP until it is done.
func waitManifest(t testing.TB, hc *http.Client, token, status string) {
	t.Helper()
	testkit.Wait(t, "the export to finish", func() bool {
		req, _ := http.NewRequest("GET", status, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK && res.StatusCode != http.StatusAccepted {
			t.Fatalf("export status: %d", res.StatusCode)
		}
		return res.StatusCode == http.StatusOK
	})
}

// bulkSource is a Bulk Data server's files, for asserting what the
// gateway sends: each request's path, Authorization and partition header.
type bulkSource struct {
	srv        *httptest.Server
	host       string // name:port, the name resolving to its address
	mu         sync.Mutex
	seen       []string // "path Authorization"
	partitions []string // X-Request-Partition-IDs of each request
}

func newBulkSource(t *testing.T, name string, serve http.HandlerFunc) *bulkSource {
	t.Helper()
	s := &bulkSource{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.seen = append(s.seen, r.URL.Path+" "+r.Header.Get("Authorization"))
		s.partitions = append(s.partitions, r.Header.Get("X-Request-Partition-IDs"))
		s.mu.Unlock()
		serve(w, r)
	}))
	t.Cleanup(s.srv.Close)
	_, port, _ := net.SplitHostPort(s.srv.Listener.Addr().String())
	s.host = name + ":" + port
	return s
}

// serveFiles answers each path of files with its content, others 404.
func serveFiles(files map[string]string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(body))
	}
}

func (s *bulkSource) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.seen...)
}

func (s *bulkSource) partitionHeaders() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.partitions...)
}

// TestImportFromManifestPolicy: the token goes to the manifest's origin
// only (a file at another origin gets none; a relative file URL is the
// manifest's origin); a manifest or file URL at a destination the policy
// refuses is refused with an OperationOutcome, the refused address never
// dialled and the record left as it was; what a manifest names is capped
// at the import's size limit.
func TestImportFromManifestPolicy(t *testing.T) {
	const patient = `{"resourceType":"Patient","id":"p1","name":[{"family":"Doe","given":["John"]}],"birthDate":"1970-01-01"}`
	obs := func(v string) string {
		return `{"resourceType":"Observation","id":"o` + v + `","status":"final","code":{"text":"weight"},"subject":{"reference":"Patient/p1"},"valueQuantity":{"value":` + v + `}}`
	}
	// A refused address (127.0.0.2: loopback, not allowed) where a server
	// listens and counts: nothing may reach it.
	inside, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.2 here: %v", err)
	}
	var reached atomic.Int32
	innerSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached.Add(1) }), ReadHeaderTimeout: time.Second}
	go func() { _ = innerSrv.Serve(inside) }()
	t.Cleanup(func() { _ = innerSrv.Close() })
	_, insidePort, _ := net.SplitHostPort(inside.Addr().String())

	big := strings.Repeat(obs("1.0")+"\n", 2000) // ≈ 300 KB, over the cap below
	files := newBulkSource(t, "files.example", serveFiles(map[string]string{"/obs.ndjson": obs("2.5") + "\n", "/big.ndjson": big}))
	manifestFor := func(urls ...string) string {
		var out []string
		for _, u := range urls {
			out = append(out, `{"type":"Observation","url":"`+u+`"}`)
		}
		return `{"transactionTime":"2026-01-01T00:00:00Z","request":"x","requiresAccessToken":true,"output":[` + strings.Join(out, ",") + `],"error":[]}`
	}
	source := newBulkSource(t, "source.example", serveFiles(map[string]string{
		// a relative file URL (the manifest's origin) and one at another origin
		"/ok/manifest": manifestFor("../files/patient.ndjson", "http://"+files.host+"/obs.ndjson"),
		// a file at a refused address
		"/inside/manifest":      manifestFor("../files/patient.ndjson", "http://inside.example:"+insidePort+"/obs.ndjson"),
		"/big/manifest":         manifestFor("../files/patient.ndjson", "http://"+files.host+"/big.ndjson"),
		"/files/patient.ndjson": patient + "\n" + obs("1.5") + "\n",
	}))
	e := newExportEnv(t, false, gateway.BulkConfig{MaxImportBytes: 64 << 10, ImportPolicy: manifestPolicy(map[string]string{
		"source.example": "127.0.0.1", "files.example": "127.0.0.1", "inside.example": "127.0.0.2", "metadata.example": "169.254.169.254",
	})})
	alice := e.token(t, "alice", "")
	e.createRecord(t, alice, "johnny", "")
	importFrom := func(manifest string) (int, []byte) {
		return e.waitImport(t, alice, e.startImport(t, alice, "johnny", "application/json",
			[]byte(`{"manifest":"`+manifest+`","token":"secret-token","headers":{"x-request-partition-ids":"7"}}`), ""))
	}

	code, body := importFrom("http://" + source.host + "/ok/manifest")
	if code != http.StatusOK || !bytes.Contains(body, []byte(`"imported":2`)) {
		t.Fatalf("import: %d %s", code, body)
	}
	for _, seen := range source.requests() {
		if !strings.HasSuffix(seen, " Bearer secret-token") {
			t.Errorf("the manifest's origin got %q, not the token", seen)
		}
	}
	if got := files.requests(); len(got) != 1 || got[0] != "/obs.ndjson " {
		t.Errorf("the file server at another origin got %q: the token must not go there", got)
	}
	// The headers the request names go where the token goes, only there.
	for _, p := range source.partitionHeaders() {
		if p != "7" {
			t.Errorf("the manifest's origin got the partition header %q, want 7", p)
		}
	}
	if got := files.partitionHeaders(); len(got) != 1 || got[0] != "" {
		t.Errorf("the file server at another origin got the partition header %q", got)
	}
	// Headers an import may not name: refused when posted.
	for _, h := range []string{`{"Host":"evil.example"}`, `{"Authorization":"Basic x"}`, `{"bad name":"1"}`, `{"X-Ok":"a\r\nInjected: 1"}`, `{"Proxy-Authorization":"x"}`} {
		res := e.do(t, alice, "POST", "pfr.localhost", "/pfr/v1/records/johnny/import",
			[]byte(`{"manifest":"http://`+source.host+`/ok/manifest","headers":`+h+`}`), "Content-Type", "application/json")
		if res.Code != http.StatusBadRequest || !strings.Contains(res.Body.String(), "OperationOutcome") {
			t.Errorf("headers %s: %d %s", h, res.Code, res.Body)
		}
	}
	if n := len(e.readAll(t, alice, "johnny.pfr.localhost", "Observation")); n != 2 {
		t.Fatalf("johnny holds %d Observations, want 2", n)
	}

	// A manifest URL the policy refuses: 422 at once, no job.
	for _, u := range []string{"http://metadata.example/manifest", "http://inside.example:" + insidePort + "/manifest", "file:///etc/passwd"} {
		res := e.do(t, alice, "POST", "pfr.localhost", "/pfr/v1/records/johnny/import",
			[]byte(`{"manifest":"`+u+`","token":"secret-token"}`), "Content-Type", "application/json")
		if res.Code != http.StatusUnprocessableEntity || !strings.Contains(res.Body.String(), "OperationOutcome") || !strings.Contains(res.Body.String(), "refused") {
			t.Errorf("manifest %s: %d %s", u, res.Code, res.Body)
		}
	}
	// A file the policy refuses, and files over the size cap: the job
	// fails with an OperationOutcome saying why, nothing written.
	for _, c := range []struct {
		path string
		code int
		says string
	}{
		{"/inside/manifest", http.StatusUnprocessableEntity, "refused"},
		{"/big/manifest", http.StatusRequestEntityTooLarge, "larger than"},
	} {
		code, body := importFrom("http://" + source.host + c.path)
		if code != c.code || !bytes.Contains(body, []byte("OperationOutcome")) || !bytes.Contains(body, []byte(c.says)) {
			t.Errorf("%s: %d %s", c.path, code, body)
		}
	}
	if n := reached.Load(); n != 0 {
		t.Errorf("the refused address was dialled %d times", n)
	}
	if n := len(e.readAll(t, alice, "johnny.pfr.localhost", "Observation")); n != 2 {
		t.Errorf("johnny holds %d Observations after the refused imports, want 2", n)
	}
}
