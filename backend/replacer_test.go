package backend

import (
	"strings"
	"testing"
)

const testPublic = "https://john.pfr.localhost:8443/fhir"

// referenceRewrite is the obviously-correct, non-streaming rewrite the
// streaming code is checked against: at each position, the longest pattern
// that matches and ends at a boundary (or at the end) wins.
func referenceRewrite(rp *replacer, in string) string {
	var out strings.Builder
	for i := 0; i < len(in); {
		hit := -1
		for k, p := range rp.patterns {
			from := string(p.from)
			if strings.HasPrefix(in[i:], from) &&
				(i+len(from) == len(in) || !isPathChar(in[i+len(from)])) {
				if hit < 0 || len(from) > len(rp.patterns[hit].from) {
					hit = k
				}
			}
		}
		if hit < 0 {
			out.WriteByte(in[i])
			i++
			continue
		}
		out.Write(rp.patterns[hit].to)
		i += len(rp.patterns[hit].from)
	}
	return out.String()
}

func TestReplaceStringBoundaries(t *testing.T) {
	rp := newReplacer([]string{"http://hapi:8080/fhir"}, testPublic)
	cases := []struct{ in, want string }{
		{"http://hapi:8080/fhir/Patient/1", testPublic + "/Patient/1"},
		{"https://hapi:8080/fhir/Patient/1", testPublic + "/Patient/1"},
		{"http://hapi:8080/fhir", testPublic},
		{"http://hapi:8080/fhir?_getpages=abc", testPublic + "?_getpages=abc"},
		{"http://hapi:8080/fhir#x", testPublic + "#x"},
		{`"http://hapi:8080/fhir"`, `"` + testPublic + `"`},
		{`http:\/\/hapi:8080\/fhir\/Patient\/1`, `https:\/\/john.pfr.localhost:8443\/fhir\/Patient\/1`},
		{"<http://hapi:8080/fhir/x>; rel=next", "<" + testPublic + "/x>; rel=next"},
		// Not a base: no boundary, other host, other port, other path.
		{"http://hapi:8080/fhir2/Patient/1", "http://hapi:8080/fhir2/Patient/1"},
		{"http://hapi:8080/fhir.json", "http://hapi:8080/fhir.json"},
		{"http://hapi:8080/fhir@evil.example/x", "http://hapi:8080/fhir@evil.example/x"},
		{"http://hapi:80800/fhir/x", "http://hapi:80800/fhir/x"},
		{"http://hapi.evil:8080/fhir/x", "http://hapi.evil:8080/fhir/x"},
		{"http://hapi:8081/fhir/x", "http://hapi:8081/fhir/x"},
		{"http://hl7.org/fhir/StructureDefinition/x", "http://hl7.org/fhir/StructureDefinition/x"},
		{"http://hapi:8080/fhi", "http://hapi:8080/fhi"},
		{"", ""},
	}
	for _, c := range cases {
		if got, _ := rp.replaceString(c.in); got != c.want {
			t.Errorf("replace(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestReplacePortAndHostVariants(t *testing.T) {
	rp := newReplacer([]string{"http://Hapi/fhir", "https://[::1]:443/base"}, testPublic)
	for _, in := range []string{
		"http://Hapi/fhir/x", "http://hapi/fhir/x", "http://hapi:80/fhir/x",
		"https://hapi/fhir/x", "https://hapi:443/fhir/x",
		"https://[::1]/base/x", "https://[::1]:443/base/x", "http://[::1]:80/base/x",
	} {
		if got, _ := rp.replaceString(in); got != testPublic+"/x" {
			t.Errorf("replace(%q) = %q, want the public base", in, got)
		}
	}
	if got, changed := rp.replaceString("http://hapi:8080/fhir/x"); changed {
		t.Errorf("a non-default port must not match: %q", got)
	}
}

func TestReplaceLongestBaseWins(t *testing.T) {
	rp := newReplacer([]string{"http://h/fhir", "http://h/fhir/p1"}, testPublic)
	cases := map[string]string{
		"http://h/fhir/p1/Patient/1": testPublic + "/Patient/1",
		"http://h/fhir/p12/Patient":  testPublic + "/p12/Patient",
		"http://h/fhir/Patient":      testPublic + "/Patient",
	}
	for in, want := range cases {
		if got, _ := rp.replaceString(in); got != want {
			t.Errorf("replace(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestReplacerSkipsIdentityAndBadBases(t *testing.T) {
	if rp := newReplacer([]string{testPublic}, testPublic+"/"); rp == nil {
		t.Fatal("the other-scheme variant of the public base should still be a pattern")
	} else if got, changed := rp.replaceString(testPublic + "/x"); changed || got != testPublic+"/x" {
		t.Errorf("the public base itself must not count as a change: %q %v", got, changed)
	}
	if rp := newReplacer([]string{"ftp://h/fhir", "not a url", "http:///fhir"}, testPublic); rp != nil {
		t.Errorf("bases that are not http(s) URLs with a host must be ignored, got %d patterns", len(rp.patterns))
	}
	if rp := newReplacer(nil, testPublic); rp != nil {
		t.Error("no bases: no replacer")
	}
}

// With every occurrence at a boundary, the rewrite is a plain ReplaceAll.
func TestReplaceMatchesReplaceAll(t *testing.T) {
	base := "http://hapi:8080/fhir"
	rp := newReplacer([]string{base}, testPublic)
	in := strings.Repeat(`{"fullUrl":"`+base+`/Observation/1","x":"http://loinc.org"},`, 100)
	got, _ := rp.replaceString(in)
	if want := strings.ReplaceAll(in, base, testPublic); got != want {
		t.Fatalf("rewrite differs from ReplaceAll")
	}
}

// TestCachedReplacer: one replacer per public base and list of upstream
// bases, whether one base or several.
func TestCachedReplacer(t *testing.T) {
	one := cachedReplacer([]string{"http://hapi:8080/fhir"}, "https://john.pfr.example/fhir")
	if one == nil || cachedReplacer([]string{"http://hapi:8080/fhir"}, "https://john.pfr.example/fhir") != one {
		t.Fatal("the same bases built twice")
	}
	two := cachedReplacer([]string{"http://hapi:8080/fhir", "http://other/fhir"}, "https://john.pfr.example/fhir")
	if two == one || cachedReplacer([]string{"http://hapi:8080/fhir"}, "https://mary.pfr.example/fhir") == one {
		t.Fatal("other bases got the same replacer")
	}
	if got, _ := two.replaceString("http://other/fhir/Patient/1"); got != "https://john.pfr.example/fhir/Patient/1" {
		t.Errorf("second base not rewritten: %s", got)
	}
}

// TestMatchAtHostFirst: passing over candidates by the first byte of
// their host changes no verdict of matchAt.
func TestMatchAtHostFirst(t *testing.T) {
	rp := newReplacer([]string{"http://Upstream.example:8080/fhir", "https://[::1]/base"}, "https://john.pfr.example/fhir")
	all := *rp
	for c := range all.hostFirst {
		all.hostFirst[c] = true // compares every candidate with every pattern
	}
	var candidates []string
	for _, p := range rp.patterns {
		from := string(p.from)
		for n := len(candidatePrefix); n <= len(from); n++ {
			candidates = append(candidates, from[:n], from[:n]+"/x", from[:n]+"2", from[:n]+`"`)
		}
	}
	candidates = append(candidates, "http://loinc.org", `http:\/\/loinc.org`, "https://unitsofmeasure.org", "http", "https:", "https:/",
		"http://", `http:\/`, "http://u", "httpx://upstream.example:8080/fhir", "http://upstream.example:8080/fhir/Patient/1")
	for _, c := range candidates {
		for _, atEOF := range []bool{false, true} {
			k1, s1 := rp.matchAt([]byte(c), atEOF)
			k2, s2 := all.matchAt([]byte(c), atEOF)
			if k1 != k2 || s1 != s2 {
				t.Errorf("%q (atEOF %v): %d %v, without passing over %d %v", c, atEOF, k1, s1, k2, s2)
			}
		}
	}
}
