package backend

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/fhir"
)

// seenRequest is what the test upstream received.
type seenRequest struct {
	method, path, rawPath, requestURI, query, host string
	header                                         http.Header
}

// testUpstream is an httptest FHIR server on 127.0.0.1 that records every
// request and answers with a searchset Bundle whose absolute URLs use the
// bases baseFor returns for the request it got.
type testUpstream struct {
	*httptest.Server
	mu   sync.Mutex
	seen []seenRequest
}

func newTestUpstream(t *testing.T, baseFor func(r *http.Request) []string) *testUpstream {
	up := &testUpstream{}
	up.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up.mu.Lock()
		up.seen = append(up.seen, seenRequest{
			method: r.Method, path: r.URL.Path, rawPath: r.URL.RawPath, requestURI: r.RequestURI,
			query: r.URL.RawQuery, host: r.Host, header: r.Header.Clone(),
		})
		up.mu.Unlock()
		bases := baseFor(r)
		body := upstreamBundle(bases)
		w.Header().Set("Content-Type", "application/fhir+json;charset=UTF-8")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Header().Set("Location", bases[0]+"/Observation/1/_history/1")
		w.Header().Set("Content-Location", bases[len(bases)-1]+"/Observation?code=8867-4")
		w.Header().Set("ETag", `W/"1"`)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(up.Close)
	return up
}

func (up *testUpstream) last(t *testing.T) seenRequest {
	t.Helper()
	up.mu.Lock()
	defer up.mu.Unlock()
	if len(up.seen) == 0 {
		t.Fatal("the upstream received no request")
	}
	return up.seen[len(up.seen)-1]
}

// upstreamBundle is a searchset whose links, fullUrls, references and
// response locations use each base in turn, plus URLs that must survive.
func upstreamBundle(bases []string) string {
	var entries []string
	for i, base := range bases {
		entries = append(entries, fmt.Sprintf(
			`{"fullUrl":"%[1]s/Observation/%[2]d","resource":{"resourceType":"Observation","id":"%[2]d",`+
				`"code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},"subject":{"reference":"%[1]s/Patient/1"},`+
				`"extension":[{"url":"http://example.org/fhir2/x","valueUri":"%[1]s2/not-a-base"}]},`+
				`"response":{"location":"%[1]s/Observation/%[2]d/_history/1"}}`, base, i))
	}
	return fmt.Sprintf(`{"resourceType":"Bundle","type":"searchset",`+
		`"link":[{"relation":"self","url":"%s/Observation?code=8867-4"},{"relation":"next","url":"%s?_getpages=x&_getpagesoffset=2"}],`+
		`"entry":[%s]}`, bases[0], bases[len(bases)-1], strings.Join(entries, ","))
}

// newTestGateway stands in for the gateway pipeline: Outbound, a reverse
// proxy that keeps the client's Host (as Caddy's reverse_proxy does), and
// the response rewriter.
func newTestGateway(t *testing.T, b *Backend, target Target, upstream *url.URL, publicBase string) *httptest.Server {
	transport := &http.Transport{DisableCompression: true} // send exactly what Outbound left
	t.Cleanup(transport.CloseIdleConnections)
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		route, err := b.Outbound(r, target)
		if err != nil {
			fhir.WriteError(w, err)
			return
		}
		dest := upstream
		if route.Upstream != nil {
			dest = route.Upstream
		}
		rw := NewResponseRewriter(w, route.UpstreamBases, publicBase)
		proxy := &httputil.ReverseProxy{
			Transport: transport,
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.Out.URL.Scheme, pr.Out.URL.Host = dest.Scheme, dest.Host
				pr.Out.Host = pr.In.Host
			},
		}
		proxy.ServeHTTP(rw, r)
		if err := rw.Close(); err != nil {
			t.Errorf("rewriter Close: %v", err)
		}
	}))
	t.Cleanup(gw.Close)
	return gw
}

// smuggled are client headers that try to choose a partition or tenant.
var smuggled = []string{
	"X-Request-Partition-IDs: 1,2",
	"x-request-partition-ids: 3",
	"X-REQUEST-PARTITION-IDS: _ALL",
	"X-Request-Partition-IDs: DEFAULT",
	"X_Request_Partition_IDs: 4",
	"X-FHIR-TENANT-ID: other",
	"x-fhir-tenant-id: other2",
	"X-FHIR-DSID: otherdb",
	"X-Custom-Tenant: evil",
	"Accept-Encoding: gzip, br",
}

// rawRequest sends a hand-written HTTP/1.1 request, so header names reach
// the gateway exactly as spelled, and returns the response and its body.
func rawRequest(t *testing.T, gw *httptest.Server, method, target, host string, headers []string) (*http.Response, []byte) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", gw.Listener.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	req := method + " " + target + " HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n" +
		strings.Join(headers, "\r\n") + "\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

const gwHost = "john.pfr.localhost:8443"

var gwPublic = "https://" + gwHost + "/fhir"

var testTarget = Target{RecordID: "rec1", PartitionID: 7, PartitionName: "pfr-rec1"}

// checkForwardedHeaders asserts that of all partition and tenant headers
// only want (normalized name → value) reached the upstream, once each.
func checkForwardedHeaders(t *testing.T, seen seenRequest, want map[string]string) {
	t.Helper()
	for name, vals := range seen.header {
		norm := normalizeHeaderName(name)
		switch {
		case norm == "accept-encoding":
			t.Errorf("Accept-Encoding reached the upstream: %v", vals)
		case want[norm] != "":
			if len(vals) != 1 || vals[0] != want[norm] {
				t.Errorf("%s = %q, want exactly [%q]", name, vals, want[norm])
			}
		case strings.Contains(norm, "partition") || strings.Contains(norm, "tenant") ||
			strings.Contains(norm, "dsid"):
			t.Errorf("client header %s: %q reached the upstream", name, vals)
		}
	}
	for norm, v := range want {
		found := false
		for name := range seen.header {
			found = found || normalizeHeaderName(name) == norm
		}
		if !found {
			t.Errorf("%s: %s missing upstream", norm, v)
		}
	}
}

// checkRewrittenResponse asserts that no upstream base survived in the
// response and that Content-Length matches the rewritten body.
func checkRewrittenResponse(t *testing.T, resp *http.Response, body []byte, upstreamBases ...string) {
	t.Helper()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if resp.ContentLength != int64(len(body)) {
		t.Errorf("Content-Length %d, body %d bytes", resp.ContentLength, len(body))
	}
	for _, name := range []string{"Location", "Content-Location"} {
		if v := resp.Header.Get(name); !strings.HasPrefix(v, gwPublic+"/Observation") {
			t.Errorf("%s = %q, want it under %s", name, v, gwPublic)
		}
	}
	var bundle struct {
		Link []struct {
			URL string `json:"url"`
		} `json:"link"`
		Entry []struct {
			FullURL  string `json:"fullUrl"`
			Resource struct {
				Subject struct {
					Reference string `json:"reference"`
				} `json:"subject"`
				Extension []struct {
					URL      string `json:"url"`
					ValueURI string `json:"valueUri"`
				} `json:"extension"`
			} `json:"resource"`
			Response struct {
				Location string `json:"location"`
			} `json:"response"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(body, &bundle); err != nil {
		t.Fatalf("rewritten body is not JSON: %v\n%s", err, body)
	}
	if len(bundle.Entry) < 2 || len(bundle.Link) != 2 {
		t.Fatalf("bundle lost entries or links: %s", body)
	}
	var urls []string
	for _, l := range bundle.Link {
		urls = append(urls, l.URL)
	}
	for _, e := range bundle.Entry {
		urls = append(urls, e.FullURL, e.Resource.Subject.Reference, e.Response.Location)
		if e.Resource.Extension[0].URL != "http://example.org/fhir2/x" ||
			!strings.HasSuffix(e.Resource.Extension[0].ValueURI, "2/not-a-base") ||
			strings.HasPrefix(e.Resource.Extension[0].ValueURI, gwPublic) {
			t.Errorf("a URL that is not a base was changed: %+v", e.Resource.Extension[0])
		}
	}
	for _, u := range urls {
		if !strings.HasPrefix(u, gwPublic+"/") && !strings.HasPrefix(u, gwPublic+"?") {
			t.Errorf("URL %q not rewritten to %s", u, gwPublic)
		}
	}
	for _, base := range upstreamBases {
		for _, end := range []string{"/", "?", `"`} {
			if strings.Contains(string(body), base+end) {
				t.Errorf("upstream base %s left in body", base)
			}
		}
	}
}

func TestOutboundHeaderMode(t *testing.T) {
	up := newTestUpstream(t, func(r *http.Request) []string {
		return []string{"http://" + r.Host + "/fhir", "http://hapi.internal:8080/fhir"}
	})
	upURL, _ := url.Parse(up.URL)
	b, err := New(Config{UpstreamURLs: []string{"http://hapi.internal:8080/fhir"}, StripHeaders: []string{"X-Custom-Tenant"}})
	if err != nil {
		t.Fatal(err)
	}
	gw := newTestGateway(t, b, testTarget, upURL, gwPublic)
	resp, body := rawRequest(t, gw, "GET", "/fhir/Observation?code=8867-4&_count=2", gwHost, smuggled)
	seen := up.last(t)
	if seen.path != "/fhir/Observation" || seen.query != "code=8867-4&_count=2" {
		t.Errorf("upstream got %s?%s", seen.path, seen.query)
	}
	checkForwardedHeaders(t, seen, map[string]string{"x-request-partition-ids": "7"})
	checkRewrittenResponse(t, resp, body, "http://hapi.internal:8080/fhir", "http://"+gwHost+"/fhir")
}

func TestOutboundURLPrefixMode(t *testing.T) {
	up := newTestUpstream(t, func(r *http.Request) []string {
		// HAPI's UrlBaseTenantIdentificationStrategy puts the tenant in its base.
		tenant := strings.Split(r.URL.Path, "/")[2]
		return []string{"http://" + r.Host + "/fhir/" + tenant, "http://hapi.internal:8080/fhir/" + tenant}
	})
	upURL, _ := url.Parse(up.URL)
	b, err := New(Config{Mode: ModeURLPrefix, UpstreamURLs: []string{"http://hapi.internal:8080/fhir"},
		StripHeaders: []string{"X-Custom-Tenant"}})
	if err != nil {
		t.Fatal(err)
	}
	gw := newTestGateway(t, b, testTarget, upURL, gwPublic)
	resp, body := rawRequest(t, gw, "GET", "/fhir/Observation?code=8867-4", gwHost, smuggled)
	seen := up.last(t)
	if seen.path != "/fhir/pfr-rec1/Observation" || seen.query != "code=8867-4" {
		t.Errorf("upstream got %s?%s", seen.path, seen.query)
	}
	checkForwardedHeaders(t, seen, nil)
	checkRewrittenResponse(t, resp, body, "http://hapi.internal:8080/fhir/pfr-rec1", "http://"+gwHost+"/fhir/pfr-rec1")
	if strings.Contains(string(body), "/pfr-rec1/") || strings.Contains(string(body), `/pfr-rec1"`) {
		t.Error("the partition name leaked into the response")
	}

	// An escaped path stays escaped the same way upstream.
	resp, body = rawRequest(t, gw, "GET", "/fhir/Binary/a%3Ab%20c?x=%2F", gwHost, nil)
	if seen := up.last(t); seen.requestURI != "/fhir/pfr-rec1/Binary/a%3Ab%20c?x=%2F" {
		t.Errorf("upstream request URI %q", seen.requestURI)
	}
	checkRewrittenResponse(t, resp, body)
}

func TestOutboundTenantHeaderMode(t *testing.T) {
	up := newTestUpstream(t, func(r *http.Request) []string {
		return []string{"http://" + r.Host + "/fhir", "https://ibm-fhir:9443/fhir"}
	})
	upURL, _ := url.Parse(up.URL)
	b, err := New(Config{Mode: ModeTenantHeader, DataStoreID: "default",
		UpstreamURLs: []string{"https://ibm-fhir:9443/fhir"}, StripHeaders: []string{"X-Custom-Tenant"}})
	if err != nil {
		t.Fatal(err)
	}
	gw := newTestGateway(t, b, testTarget, upURL, gwPublic)
	resp, body := rawRequest(t, gw, "POST", "/fhir/Observation/_search", gwHost, append(smuggled, "Content-Length: 0"))
	seen := up.last(t)
	if seen.method != "POST" || seen.path != "/fhir/Observation/_search" {
		t.Errorf("upstream got %s %s", seen.method, seen.path)
	}
	checkForwardedHeaders(t, seen, map[string]string{"x-fhir-tenant-id": "pfr-rec1", "x-fhir-dsid": "default"})
	checkRewrittenResponse(t, resp, body, "https://ibm-fhir:9443/fhir", "http://"+gwHost+"/fhir")
}

func TestOutboundPerRecordURLMode(t *testing.T) {
	up := newTestUpstream(t, func(r *http.Request) []string {
		// A per-person server knows its own address only.
		return []string{"http://" + r.Host + "/records/rec1/fhir", "http://" + r.Host + "/records/rec1/fhir"}
	})
	b, err := New(Config{Mode: ModePerRecordURL, StripHeaders: []string{"X-Custom-Tenant"},
		URLTemplate: "http://" + up.Listener.Addr().String() + "/records/{record_id}/fhir"})
	if err != nil {
		t.Fatal(err)
	}
	gw := newTestGateway(t, b, testTarget, nil, gwPublic)
	resp, body := rawRequest(t, gw, "GET", "/fhir/Observation?code=8867-4", gwHost, smuggled)
	seen := up.last(t)
	if seen.path != "/records/rec1/fhir/Observation" || seen.query != "code=8867-4" {
		t.Errorf("upstream got %s?%s", seen.path, seen.query)
	}
	if seen.host != up.Listener.Addr().String() {
		t.Errorf("upstream saw Host %q, want its own", seen.host)
	}
	checkForwardedHeaders(t, seen, nil)
	checkRewrittenResponse(t, resp, body, "http://"+up.Listener.Addr().String()+"/records/rec1/fhir")
}

func TestOutboundRefusesAmbiguousPaths(t *testing.T) {
	for _, mode := range []Mode{ModeHeader, ModeURLPrefix, ModeTenantHeader, ModePerRecordURL} {
		cfg := Config{Mode: mode}
		if mode == ModePerRecordURL {
			cfg.URLTemplate = "https://fhir-{record_id}.internal/fhir"
		}
		b, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		for target, status := range map[string]int{
			"/fhir/../admin":                    http.StatusBadRequest,
			"/fhir/%2e%2e/DEFAULT/Patient":      http.StatusBadRequest,
			"/fhir/Patient/..":                  http.StatusBadRequest,
			"/fhir/./Patient":                   http.StatusBadRequest,
			"/fhir/x/..;/DEFAULT/Patient":       http.StatusBadRequest,
			"/fhir/Patient;jsessionid=1":        http.StatusBadRequest,
			"/fhir//DEFAULT/Patient":            http.StatusBadRequest,
			"/fhir/Patient%2F..%2F..%2FDEFAULT": http.StatusBadRequest,
			"/fhir/Patient%5C..":                http.StatusBadRequest,
			"/fhir/a\\b":                        http.StatusBadRequest,
			"/fhirx/Patient":                    http.StatusNotFound,
			"/other":                            http.StatusNotFound,
			"/":                                 http.StatusNotFound,
		} {
			r := httptest.NewRequest("GET", "http://"+gwHost+"/", nil)
			r.URL.Opaque = ""
			u, err := url.ParseRequestURI(target)
			if err != nil {
				t.Fatalf("%s: %v", target, err)
			}
			r.URL.Path, r.URL.RawPath = u.Path, u.RawPath
			r.Header.Set("X-Request-Partition-IDs", "1")
			_, err = b.Outbound(r, testTarget)
			var fe *fhir.Error
			if !errors.As(err, &fe) || fe.Status != status {
				t.Errorf("%s %s: err %v, want status %d", mode, target, err, status)
			}
			if r.URL.Path != u.Path || r.Header.Get("X-Request-Partition-IDs") != "1" {
				t.Errorf("%s %s: a refused request was modified", mode, target)
			}
		}
	}
}

func TestOutboundRefusesBadTargets(t *testing.T) {
	cases := map[Mode][]Target{
		ModeHeader:       {{PartitionID: 0}, {PartitionID: -1}, {PartitionID: 1 << 31}},
		ModeURLPrefix:    {{PartitionName: ""}, {PartitionName: "DEFAULT"}, {PartitionName: "default"}, {PartitionName: "_ALL"}, {PartitionName: "a/b"}, {PartitionName: "a..b"}, {PartitionName: strings.Repeat("a", 129)}},
		ModeTenantHeader: {{PartitionName: "x\r\nEvil: 1"}, {PartitionName: ""}},
		ModePerRecordURL: {{RecordID: ""}, {RecordID: "a.evil.com"}, {RecordID: "a/b"}, {RecordID: "a@b"}},
	}
	for mode, targets := range cases {
		cfg := Config{Mode: mode}
		if mode == ModePerRecordURL {
			cfg.URLTemplate = "https://fhir-{record_id}.internal/fhir"
		}
		b, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		for _, target := range targets {
			r := httptest.NewRequest("GET", "/fhir/Patient", nil)
			_, err := b.Outbound(r, target)
			var fe *fhir.Error
			if !errors.As(err, &fe) || fe.Status != http.StatusInternalServerError {
				t.Errorf("%s %+v: err %v, want a 500", mode, target, err)
			}
		}
	}
}

func TestOutboundStripsDeclaredTrailers(t *testing.T) {
	b, _ := New(Config{})
	r := httptest.NewRequest("POST", "/fhir", strings.NewReader("{}"))
	r.Trailer = http.Header{"X-Request-Partition-Ids": nil, "x-fhir-tenant-id": nil, "X-Checksum": nil}
	if _, err := b.Outbound(r, testTarget); err != nil {
		t.Fatal(err)
	}
	if len(r.Trailer) != 1 {
		t.Errorf("trailers after Outbound: %v", r.Trailer)
	}
	if _, ok := r.Trailer["X-Checksum"]; !ok {
		t.Error("an unrelated trailer was dropped")
	}
}

func TestOutboundKeepsRequestURIInStep(t *testing.T) {
	b, _ := New(Config{Mode: ModeURLPrefix})
	r := httptest.NewRequest("GET", "/fhir/Patient/a%3Ab?_format=json", nil)
	if _, err := b.Outbound(r, testTarget); err != nil {
		t.Fatal(err)
	}
	if r.RequestURI != "/fhir/pfr-rec1/Patient/a%3Ab?_format=json" || r.URL.Path != "/fhir/pfr-rec1/Patient/a:b" {
		t.Errorf("RequestURI %q Path %q", r.RequestURI, r.URL.Path)
	}
	// The bare base works too.
	r = httptest.NewRequest("POST", "/fhir", nil)
	if _, err := b.Outbound(r, testTarget); err != nil || r.URL.Path != "/fhir/pfr-rec1" {
		t.Errorf("bare base: %v, %q", err, r.URL.Path)
	}
}

func TestRouteBasesAndDialAddress(t *testing.T) {
	b, err := New(Config{Mode: ModePerRecordURL, URLTemplate: "https://fhir-{record_id}.internal/fhir/",
		UpstreamURLs: []string{"https://{partition_name}.cloud.example/base"}})
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("GET", "/fhir/Patient", nil)
	route, err := b.Outbound(r, testTarget)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"https://fhir-rec1.internal/fhir", "https://pfr-rec1.cloud.example/base"}
	if fmt.Sprint(route.UpstreamBases) != fmt.Sprint(want) {
		t.Errorf("bases %v, want %v", route.UpstreamBases, want)
	}
	if route.DialAddress() != "fhir-rec1.internal:443" || r.Host != "fhir-rec1.internal" ||
		r.URL.String() != "https://fhir-rec1.internal/fhir/Patient" {
		t.Errorf("dial %q host %q url %q", route.DialAddress(), r.Host, r.URL)
	}
	// A Host that is not a host cannot become a base.
	hb, _ := New(Config{})
	r = httptest.NewRequest("GET", "/fhir/Patient", nil)
	r.Host = "evil.example/fhir@x"
	route, err = hb.Outbound(r, testTarget)
	if err != nil || len(route.UpstreamBases) != 0 {
		t.Errorf("bases from a bad Host: %v %v", route.UpstreamBases, err)
	}
	if (&Route{}).DialAddress() != "" {
		t.Error("no per-record upstream: no dial address")
	}
}

// TestPlainHost: every Host the fast path accepts, url.Parse accepts as
// the same host; what it leaves out still goes through url.Parse.
func TestPlainHost(t *testing.T) {
	for _, host := range []string{
		"bench.pfr.localhost:8443", "john.pfr.example", "HAPI:8080", "127.0.0.1:1", "a-b.c", "x:65535",
		"", ":80", "a:", "a:123456", "a:8x", "[::1]:80", "user@host", "host/path", "host?q", "h\u00e9te", "a b", "a:80:90",
	} {
		u, err := url.Parse("http://" + host)
		slow := err == nil && u.Host == host && u.Path == "" && u.User == nil && u.Hostname() != ""
		if plainHost(host) && !slow {
			t.Errorf("plainHost(%q) accepts what url.Parse does not", host)
		}
		if validHost(host) != slow {
			t.Errorf("validHost(%q) = %v, url.Parse says %v", host, validHost(host), slow)
		}
	}
}

// TestStripByLength: a header is looked up only when its length is one
// of the stripped names', and every spelling of a stripped name goes.
func TestStripByLength(t *testing.T) {
	b, err := New(Config{StripHeaders: []string{"X-Secret"}})
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{"X_fhir_tenant_id": {"a"}, "x-secret": {"b"}, "Accept-Encoding": {"gzip"}, "X-Kept": {"c"}, "X-Request-Partition-Ids": {"9"}}
	b.stripClientHeaders(h)
	if len(h) != 1 || h.Get("X-Kept") != "c" {
		t.Errorf("left %v", h)
	}
}
