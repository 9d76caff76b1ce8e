package gateway

import (
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
)

// TestOutboundRequest: the request sent upstream is the client's minus
// its credentials and partition headers, with the record's partition, the
// upstream's path and JSON asked for; the client's request is left as it
// was (the upstream's copy is built directly, not cloned whole).
func TestOutboundRequest(t *testing.T) {
	g := newTestGateway(t)
	r := httptest.NewRequest(http.MethodGet, "https://john.pfr.localhost/fhir/Observation/o%201?_format=xml&code=a", nil)
	r.Header.Set("Authorization", "Bearer secret")
	r.Header.Add("Cookie", "session=1")
	r.Header.Set("X-Request-Partition-IDs", "7")
	r.Header.Set("Accept", "application/fhir+xml")
	r.Header.Add("X-Custom", "a")
	r.Header.Add("X-Custom", "b")
	r.Trailer = http.Header{"X-Fhir-Tenant-Id": {"other"}, "X-Kept": {"1"}}
	before := r.Header.Clone()
	beforeURL := *r.URL
	rq := &request{r: r, rec: testRecord(), base: "https://john.pfr.localhost/fhir", rest: "/Observation/o 1"}
	out, _, err := g.outbound(rq, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"Authorization", "Cookie"} {
		if out.Header.Get(h) != "" {
			t.Errorf("%s sent upstream", h)
		}
	}
	if got := out.Header.Get("X-Request-Partition-IDs"); got != "1" {
		t.Errorf("partition %q, want the record's 1", got)
	}
	if got := out.Header.Get("Accept"); got != "application/fhir+json" {
		t.Errorf("Accept %q", got)
	}
	if got := out.Header.Values("X-Custom"); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Errorf("X-Custom %q", got)
	}
	if out.Trailer.Get("X-Fhir-Tenant-Id") != "" || out.Trailer.Get("X-Kept") != "1" {
		t.Errorf("trailer %v", out.Trailer)
	}
	if out.URL.EscapedPath() != "/fhir/Observation/o%201" || out.URL.RawQuery != "code=a" || out.RequestURI != "" {
		t.Errorf("upstream URL %s (%q)", out.URL, out.RequestURI)
	}
	if out.Context() != r.Context() || out.Host != r.Host {
		t.Error("the upstream request lost the client request's context or host")
	}
	// The client's request is as it was.
	if !reflect.DeepEqual(r.Header, before) || *r.URL != beforeURL || r.Trailer.Get("X-Fhir-Tenant-Id") != "other" {
		t.Errorf("the client's request changed: %v %v %v", r.Header, r.URL, r.Trailer)
	}
	out.Header["X-Custom"][0] = "changed"
	if r.Header.Get("X-Custom") != "a" {
		t.Error("the upstream request shares header values with the client's")
	}
}

// TestOutboundKeepsEscaping: the upstream's path is spelled as the client
// spelled the rest of it, escapes that are not the default encoding
// included, and unescaped where the client did not escape.
func TestOutboundKeepsEscaping(t *testing.T) {
	g := newTestGateway(t)
	for target, want := range map[string]string{
		"/fhir/Observation/o-1":              "/fhir/Observation/o-1",
		"/fhir/Observation/o%201":            "/fhir/Observation/o%201",
		"/fhir/Observation/o%2D1":            "/fhir/Observation/o%2D1",
		"/fhir/Observation/o%2d1":            "/fhir/Observation/o%2d1",
		"/fhir/Observation/%C3%A9":           "/fhir/Observation/%C3%A9",
		"/fhir/Observation/o%2D1/_history/2": "/fhir/Observation/o%2D1/_history/2",
	} {
		r := httptest.NewRequest(http.MethodGet, "https://john.pfr.localhost"+target, nil)
		rest, err := g.fhirSubpath(r)
		if err != nil {
			t.Fatalf("%s: %v", target, err)
		}
		out, _, err := g.outbound(&request{r: r, rec: testRecord(), base: "https://john.pfr.localhost/fhir", rest: rest}, false)
		if err != nil {
			t.Fatal(err)
		}
		if got := out.URL.EscapedPath(); got != want {
			t.Errorf("%s: upstream path %s, want %s", target, got, want)
		}
	}
}
