package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
)

// TestSMARTDiscovery: a record's SMART configuration and CapabilityStatement
// name the real provider's endpoints, without a token, so an app can find
// where to authorize from the FHIR base alone.
func TestSMARTDiscovery(t *testing.T) {
	p := startProvider(t)
	// Without patient_context the configuration does not claim a patient
	// the provider may not supply.
	e := startSmartGateway(t, p.issuer, "")
	e.createRecord(e.token("alice"), "alice-disco", "Smith", "Alice")
	plain := e.do("GET", recordURL("alice-disco", "/.well-known/smart-configuration"), "", nil).Expect(t, http.StatusOK, "smart-configuration")
	if slices.Contains(stringList(plain.Body["capabilities"]), "context-standalone-patient") {
		t.Errorf("context-standalone-patient claimed without patient_context: %v", plain.Body["capabilities"])
	}
	// test/smart/provider.mjs does supply it.
	e = startSmartGatewayIn(t, e.dataDir, p.issuer, "\t\tsmart {\n\t\t\tpatient_context\n\t\t}")

	for _, u := range []string{
		fmt.Sprintf("https://alice-disco.%s:%d/.well-known/smart-configuration", baseDomain, httpsPort),
		recordURL("alice-disco", "/.well-known/smart-configuration"),
	} {
		res := e.do("GET", u, "", nil).Expect(t, http.StatusOK, "smart-configuration "+u)
		if ct := res.Header.Get("Content-Type"); ct == "" || !slices.Contains([]string{"application/json", "application/json; charset=utf-8"}, ct) {
			t.Errorf("%s: Content-Type %q", u, ct)
		}
		doc := res.Body
		for k, want := range map[string]string{
			"issuer":                 p.issuer,
			"authorization_endpoint": p.issuer + "/auth",
			"token_endpoint":         p.issuer + "/token",
			"jwks_uri":               p.issuer + "/jwks",
		} {
			if doc[k] != want {
				t.Errorf("%s: %s = %v, want %s", u, k, doc[k], want)
			}
		}
		if m := stringList(doc["code_challenge_methods_supported"]); !slices.Equal(m, []string{"S256"}) {
			t.Errorf("%s: code_challenge_methods_supported = %v, want [S256]", u, m)
		}
		caps := stringList(doc["capabilities"])
		for _, c := range []string{"launch-standalone", "client-public", "client-confidential-symmetric", "permission-v2", "context-standalone-patient"} {
			if !slices.Contains(caps, c) {
				t.Errorf("%s: capabilities %v lack %s", u, caps, c)
			}
		}
		if g := stringList(doc["grant_types_supported"]); !slices.Contains(g, "authorization_code") || !slices.Contains(g, "client_credentials") ||
			slices.Contains(g, "implicit") || slices.Contains(g, "password") {
			t.Errorf("%s: grant_types_supported = %v", u, g)
		}
	}

	// The CapabilityStatement says SMART-on-FHIR and where to authorize.
	md := e.do("GET", recordURL("alice-disco", "/metadata"), "", nil).Expect(t, http.StatusOK, "metadata")
	if md.Body["resourceType"] != "CapabilityStatement" {
		t.Fatalf("metadata: %.300s", md.Raw)
	}
	rest, _ := md.Body["rest"].([]any)
	if len(rest) == 0 {
		t.Fatalf("metadata has no rest: %.300s", md.Raw)
	}
	security, _ := rest[0].(map[string]any)["security"].(map[string]any)
	if !hasCoding(security["service"], "http://terminology.hl7.org/CodeSystem/restful-security-service", "SMART-on-FHIR") {
		t.Errorf("rest.security.service: %v", security["service"])
	}
	uris := map[string]any{}
	for _, ext := range asList(security["extension"]) {
		ext, _ := ext.(map[string]any)
		if ext["url"] != "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris" {
			continue
		}
		for _, sub := range asList(ext["extension"]) {
			sub, _ := sub.(map[string]any)
			uris[fmt.Sprint(sub["url"])] = sub["valueUri"]
		}
	}
	if uris["authorize"] != p.issuer+"/auth" || uris["token"] != p.issuer+"/token" {
		t.Errorf("oauth-uris extension: %v", uris)
	}

	// Unknown records have no SMART configuration (the name is no oracle
	// either: the same 404 as any unknown record).
	req, _ := http.NewRequest("GET", apex("/.well-known/smart-configuration"), nil)
	req.Host = fmt.Sprintf("nobody-here.%s:%d", baseDomain, httpsPort)
	res, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound {
		t.Errorf("unknown record's smart-configuration: %d", res.StatusCode)
	}
	// Only GET.
	e.do("POST", recordURL("alice-disco", "/.well-known/smart-configuration"), "", map[string]any{}).
		ExpectOutcome(t, http.StatusMethodNotAllowed, "POST smart-configuration")
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

// stringList returns the string members of a JSON array.
func stringList(v any) []string {
	var out []string
	for _, x := range asList(v) {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// hasCoding reports whether a list of CodeableConcepts holds system|code.
func hasCoding(concepts any, system, code string) bool {
	for _, c := range asList(concepts) {
		c, _ := c.(map[string]any)
		for _, coding := range asList(c["coding"]) {
			coding, _ := coding.(map[string]any)
			if coding["system"] == system && coding["code"] == code {
				return true
			}
		}
	}
	return false
}
