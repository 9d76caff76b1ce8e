package gateway

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestFHIRSubpathRefusesSeparators: an encoded separator in any spelling
// (either case, alone or beside other escapes), a backslash and a method
// override header are refused; escapes of other bytes pass.
func TestFHIRSubpathRefusesSeparators(t *testing.T) {
	g := &Gateway{cfg: Config{FHIRPath: "/fhir"}}
	for _, target := range []string{
		"/fhir/Patient%2F1", "/fhir/Patient%2f1", "/fhir/Patient%5C1", "/fhir/Patient%5c1",
		"/fhir/Observation/%2e%2e/Patient/1", "/fhir/Observation/%2E%2E/Patient/1",
		"/fhir/Patient/a%20b%2Fc", "/fhir/Patient%20x%5c1", "/fhir/Patient\\1", "/fhir//Patient/1",
	} {
		r := httptest.NewRequest("GET", "http://john.pfr.localhost"+target, nil)
		if rest, err := g.fhirSubpath(r); err == nil {
			t.Errorf("%s: accepted as %q", target, rest)
		}
	}
	for target, want := range map[string]string{
		"/fhir/Patient/a%20b": "/Patient/a b", "/fhir/Patient/%C3%A9": "/Patient/é", "/fhir": "", "/fhir/": "",
		"/fhir/Observation?code=a%2Fb": "/Observation",
	} {
		r := httptest.NewRequest("GET", "http://john.pfr.localhost"+target, nil)
		if rest, err := g.fhirSubpath(r); err != nil || rest != want {
			t.Errorf("%s: %q, %v; want %q", target, rest, err, want)
		}
	}
	for _, h := range []string{"X-HTTP-Method-Override", "x-http-method", "X-METHOD-OVERRIDE"} {
		r := httptest.NewRequest("GET", "http://john.pfr.localhost/fhir/Patient/1", nil)
		r.Header.Set(h, "DELETE")
		if _, err := g.fhirSubpath(r); err == nil || !strings.Contains(err.Error(), "method overrides") {
			t.Errorf("%s: %v", h, err)
		}
	}
	// A header spelled as it arrives on the wire is keyed canonically.
	r := httptest.NewRequest("GET", "http://john.pfr.localhost/fhir/Patient/1", nil)
	r.Header = http.Header{http.CanonicalHeaderKey("x-http-method-override"): {"PUT"}}
	if _, err := g.fhirSubpath(r); err == nil {
		t.Error("a canonical X-Http-Method-Override passed")
	}
}
