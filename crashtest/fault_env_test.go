package crashtest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/pfrproc"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// The fault tests run the real pfr binary as the gateway in front of the
// real pfr binary serving the embedded store alone (testdata/Caddyfile.store,
// as the README runs it), and break the upstream the ways operators meet:
// misconfigured, answering the wrong thing, cut short, frozen, dead, out of
// disk.

// storeCaddyfile is the README's standalone store configuration.
func storeCaddyfile(t *testing.T) string {
	t.Helper()
	return string(testkit.ReadFile(t, filepath.Join(testkit.Root(t), "testdata", "Caddyfile.store")))
}

// hostBoundStoreCaddyfile is the standalone store configuration the README
// pointed to before: a site bound to the host 127.0.0.1, which leaves a
// gateway's requests (they carry the record's host name) unmatched, and
// Caddy answers those with an empty 200.
const hostBoundStoreCaddyfile = `{
	admin off
	auto_https off
	default_bind 127.0.0.1
}

http://127.0.0.1:{$PFR_STORE_PORT:8095} {
	pfr_store {
		path {$PFR_STORE_PATH:./pfr-data/standalone-store.db}
	}
}
`

// storeProcess is the real pfr binary serving pfr_store alone.
type storeProcess struct {
	t      *testing.T
	dir    string
	port   int
	config string
	proc   *pfrproc.Process
}

// startStore runs config (a Caddyfile reading PFR_STORE_PORT and
// PFR_STORE_PATH, as testdata/Caddyfile.store does) on a fresh work
// directory and waits until its FHIR base answers.
func startStore(t *testing.T, config string) *storeProcess {
	t.Helper()
	s := &storeProcess{t: t, dir: t.TempDir(), port: freePort(t), config: config}
	t.Cleanup(func() {
		if s.proc != nil {
			_ = s.proc.Signal(syscall.SIGCONT) // a frozen process cannot die
			_ = s.proc.Kill()
		}
	})
	s.start()
	return s
}

func (s *storeProcess) start() {
	s.t.Helper()
	// The child reads the variables when it adapts the Caddyfile.
	s.t.Setenv("PFR_STORE_PORT", strconv.Itoa(s.port))
	s.t.Setenv("PFR_STORE_PATH", filepath.Join(s.dir, "store.db"))
	proc, err := pfrproc.Start(context.Background(), pfrBinary(s.t), s.dir, s.config)
	if err != nil {
		s.t.Fatal(err)
	}
	s.proc = proc
	if err := proc.WaitReady(context.Background(), fmt.Sprintf("http://127.0.0.1:%d/fhir/metadata", s.port), http.StatusOK, 30*time.Second); err != nil {
		s.t.Fatalf("store: %v\n%s", err, proc.LogTail(20))
	}
}

func (s *storeProcess) addr() string { return fmt.Sprintf("127.0.0.1:%d", s.port) }

// proxiedGateway is the gateway of the fault tests: reverse_proxy to the
// upstream at 127.0.0.1:%[3]d; %[4]s is more pfr options (shortTimeouts,
// so that the tests do not wait the defaults out).
var proxiedGateway = withUpstream("%[4]s\n\t\tupstream reverse_proxy 127.0.0.1:%[3]d")

// shortTimeouts are the fault tests' upstream timeouts.
const shortTimeouts = `		upstream_timeouts {
			response_header 2s
			read 4s
			call 4s
			inbox 1s
		}`

// tamperProxy stands between the gateway and the store and breaks the
// upstream's answers on demand (see its modes).
type tamperProxy struct {
	server    *httptest.Server
	mode      atomic.Value // string
	store     *httputil.ReverseProxy
	misrouted *httputil.ReverseProxy
	storeURL  string
}

// Modes of the tamper proxy.
const (
	modePass        = "pass"         // the store answers
	modeMisrouted   = "empty-200"    // the host-bound store configuration: Caddy answers an empty 200
	modeLogin       = "wrong-status" // a 302 to a login page, as an authenticating proxy answers
	modeUnavailable = "unavailable"  // 503 with an HTML page and Retry-After
	modeTruncated   = "truncated"    // the store's answer, cut in the middle of its body
)

func newTamperProxy(t *testing.T, store, misrouted string) *tamperProxy {
	t.Helper()
	p := &tamperProxy{storeURL: "http://" + store}
	p.mode.Store(modePass)
	to := func(addr string) *httputil.ReverseProxy {
		u, _ := url.Parse("http://" + addr)
		return &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = pr.In.Host // the record's host name, as reverse_proxy sends it
		}}
	}
	p.store, p.misrouted = to(store), to(misrouted)
	p.server = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.server.Close)
	return p
}

func (p *tamperProxy) set(mode string) { p.mode.Store(mode) }

func (p *tamperProxy) port() int {
	u, _ := url.Parse(p.server.URL)
	n, _ := strconv.Atoi(u.Port())
	return n
}

func (p *tamperProxy) serve(w http.ResponseWriter, r *http.Request) {
	switch p.mode.Load().(string) {
	case modeMisrouted:
		p.misrouted.ServeHTTP(w, r)
	case modeLogin:
		w.Header().Set("Location", "/login?next="+url.QueryEscape(r.URL.Path))
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusFound)
		_, _ = io.WriteString(w, "<html><body>Please sign in</body></html>")
	case modeUnavailable:
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("Retry-After", "7")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "<html><body>Down for maintenance</body></html>")
	case modeTruncated:
		out, _ := http.NewRequestWithContext(r.Context(), r.Method, p.storeURL+r.URL.RequestURI(), r.Body)
		out.Header = r.Header.Clone()
		out.Host = r.Host
		res, err := http.DefaultTransport.RoundTrip(out)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		for k, vs := range res.Header {
			w.Header()[k] = vs
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(res.StatusCode)
		_, _ = w.Write(body[:len(body)/2])
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		panic(http.ErrAbortHandler) // the connection closes mid-body
	default:
		p.store.ServeHTTP(w, r)
	}
}

// probe is one request of a fault test and what it must get.
type probe struct {
	name    string
	method  string
	url     string
	token   string
	body    any
	header  http.Header
	status  int    // the status the client must get
	says    string // in the OperationOutcome's diagnostics ("" for a 2xx)
	aborted bool   // the answer must be cut (a streamed body cut short): a transport error or a short read
}

// run sends p, checks the answer and returns it with how long it took.
func (g *gatewayProcess) run(t *testing.T, fault string, p probe) (response, time.Duration) {
	t.Helper()
	start := time.Now()
	res, err := g.sendWith(context.Background(), p.method, p.url, p.token, p.body, p.header)
	took := time.Since(start)
	if p.aborted {
		if err == nil && res.Status < 300 {
			t.Errorf("%s / %s: a complete %d answer, want it cut short: %.300s", fault, p.name, res.Status, res.Raw)
		}
		t.Logf("%-14s %-26s cut after %v (status %d, %v)", fault, p.name, took.Round(time.Millisecond), res.Status, err)
		return res, took
	}
	if err != nil {
		t.Errorf("%s / %s: no answer after %v: %v", fault, p.name, took, err)
		return res, took
	}
	t.Logf("%-14s %-30s %d in %v: %s", fault, p.name, res.Status, took.Round(time.Millisecond), outcomeText(res))
	if res.Status != p.status {
		t.Errorf("%s / %s: status %d, want %d; body %.500s", fault, p.name, res.Status, p.status, res.Raw)
		return res, took
	}
	if p.status >= 400 {
		if res.Body["resourceType"] != "OperationOutcome" {
			t.Errorf("%s / %s: %d without an OperationOutcome: %.300s", fault, p.name, res.Status, res.Raw)
		}
		if !strings.Contains(outcomeText(res), p.says) {
			t.Errorf("%s / %s: diagnostics %q lack %q", fault, p.name, outcomeText(res), p.says)
		}
	}
	return res, took
}

// faultObservation is an Observation of the record's Patient that carries
// marker as its identifier, so that the test can find it.
func faultObservation(patientID, marker string) map[string]any {
	return map[string]any{
		"resourceType": "Observation", "status": "final",
		"identifier":    []any{map[string]any{"system": faultSystem, "value": marker}},
		"code":          map[string]any{"coding": []any{map[string]any{"system": "http://loinc.org", "code": "29463-7"}}},
		"subject":       map[string]any{"reference": "Patient/" + patientID},
		"valueQuantity": map[string]any{"value": 72.50, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"},
	}
}

// faultSystem is the identifier system of the fault tests' Observations.
const faultSystem = "urn:pfr:faulttest"

// faultTransaction is a transaction creating one Observation per marker.
func faultTransaction(patientID string, markers ...string) map[string]any {
	entries := make([]any, 0, len(markers))
	for _, m := range markers {
		entries = append(entries, map[string]any{
			"resource": faultObservation(patientID, m),
			"request":  map[string]any{"method": "POST", "url": "Observation"},
		})
	}
	return map[string]any{"resourceType": "Bundle", "type": "transaction", "entry": entries}
}

// stored counts the record's Observations with marker (the upstream must
// answer).
func (g *gatewayProcess) stored(token, slug, marker string) int {
	g.t.Helper()
	res := g.do("GET", g.recordURL(slug, "/Observation?identifier="+url.QueryEscape(faultSystem+"|"+marker)), token, nil).
		Expect(g.t, http.StatusOK, "search "+marker)
	entries, _ := res.Body["entry"].([]any)
	return len(entries)
}

// faultDropOff is a small collection Bundle about the record's person.
func faultDropOff(marker string) []byte {
	return []byte(`{"resourceType":"Bundle","type":"collection","identifier":{"system":"` + faultSystem + `","value":"` + marker + `"},"entry":[
	 {"fullUrl":"urn:uuid:0b1f6c8e-8d0a-4c6e-9d7e-1d2f3a4b5c6d","resource":{"resourceType":"Patient",
	  "name":[{"family":"Faulty","given":["Fred"]}],"birthDate":"1961-02-03","gender":"male"}},
	 {"resource":{"resourceType":"Observation","status":"final","identifier":[{"system":"` + faultSystem + `","value":"` + marker + `-obs"}],
	  "code":{"coding":[{"system":"http://loinc.org","code":"2339-0"}]},
	  "subject":{"reference":"urn:uuid:0b1f6c8e-8d0a-4c6e-9d7e-1d2f3a4b5c6d"},
	  "valueQuantity":{"value":95,"unit":"mg/dL","system":"http://unitsofmeasure.org","code":"mg/dL"}}}]}`)
}

// faultPatient is the record's Patient.
func faultPatient() map[string]any {
	return map[string]any{"resourceType": "Patient", "name": []any{map[string]any{"family": "Faulty", "given": []any{"Fred"}}},
		"birthDate": "1961-02-03", "gender": "male"}
}

// idFromLocation is the id in a create's Location.
func idFromLocation(t *testing.T, r response) string {
	t.Helper()
	loc := r.Header.Get("Location")
	parts := strings.Split(strings.TrimSuffix(loc, "/"), "/")
	for i := len(parts) - 2; i > 0; i-- {
		if parts[i] == "Observation" {
			return parts[i+1]
		}
	}
	t.Fatalf("no Observation id in Location %q", loc)
	return ""
}
