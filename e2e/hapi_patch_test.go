package e2e

import (
	"encoding/base64"
	"net/http"
	"strings"
)

// patch sends PATCHes of both kinds through the gateway to HAPI: direct,
// conditional and inside a transaction. What the gateway judged is what
// HAPI stores (read back from HAPI itself: the new version, the value, the
// untouched decimal); a patch that would move alice's Observation to bob,
// or drop its subject, is refused and HAPI keeps the old version; alice
// cannot patch bob's Observation by its id.
func (c *hapiCase) patch() {
	t, e := c.t, c.e
	url := recordURL(aliceSlug, "/Observation/"+c.aliceObs)
	jsonPatch := []string{"Content-Type", "application/json-patch+json"}
	fhirPath := func(typ, path string, parts ...string) string {
		all := append([]string{`{"name":"type","valueCode":"` + typ + `"}`, `{"name":"path","valueString":"` + path + `"}`}, parts...)
		return `{"resourceType":"Parameters","parameter":[{"name":"operation","part":[` + strings.Join(all, ",") + `]}]}`
	}
	inHAPI := func() string {
		return string(c.h.direct(t, c.mode, c.alicePart.key(c.mode), "/Observation/"+c.aliceObs))
	}
	version := func(raw string) string {
		_, after, _ := strings.Cut(raw, `"versionId":"`)
		v, _, _ := strings.Cut(after, `"`)
		return v
	}
	start := inHAPI()
	v0 := version(start)

	e.do("PATCH", url, c.alice, `[{"op":"replace","path":"/status","value":"amended"},{"op":"add","path":"/valueQuantity/comparator","value":"<"}]`, jsonPatch...).
		Expect(t, http.StatusOK, "JSON Patch of alice's Observation")
	e.do("PATCH", url, c.alice, fhirPath("add", "Observation", `{"name":"name","valueString":"note"}`, `{"name":"value","valueAnnotation":{"text":"patched"}}`)).
		Expect(t, http.StatusOK, "FHIRPath Patch of alice's Observation")
	e.do("PATCH", recordURL(aliceSlug, "/Observation?_id="+c.aliceObs+"&code=http://loinc.org|"+aliceCode), c.alice,
		fhirPath("replace", "Observation.valueQuantity.value", `{"name":"value","valueDecimal":72.50}`)).
		Expect(t, http.StatusOK, "conditional FHIRPath Patch")
	tx := `{"resourceType":"Bundle","type":"transaction","entry":[` +
		`{"resource":{"resourceType":"Binary","contentType":"application/json-patch+json","data":"` +
		base64.StdEncoding.EncodeToString([]byte(`[{"op":"replace","path":"/status","value":"final"}]`)) + `"},` +
		`"request":{"method":"PATCH","url":"Observation/` + c.aliceObs + `"}}]}`
	e.do("POST", recordURL(aliceSlug, ""), c.alice, tx).Expect(t, http.StatusOK, "a transaction with a JSON Patch entry")
	got := inHAPI()
	for _, want := range []string{`"status":"final"`, `"comparator":"<"`, `"text":"patched"`, `"value":72.50`, `"reference":"Patient/` + c.alicePID + `"`} {
		if !strings.Contains(got, want) {
			t.Errorf("HAPI holds %s, without %s", got, want)
		}
	}
	judged := version(got)
	if judged == v0 || judged == "" {
		t.Errorf("the patches made no new version in HAPI (%s → %s)", v0, judged)
	}

	// Refused, and HAPI keeps the version it had.
	for _, r := range []struct{ name, ct, body, path string }{
		{"JSON Patch re-pointing the subject at bob", "application/json-patch+json", `[{"op":"replace","path":"/subject/reference","value":"Patient/` + c.bobPID + `"}]`, url},
		{"FHIRPath Patch re-pointing the subject at bob", "application/fhir+json",
			fhirPath("replace", "Observation.subject", `{"name":"value","valueReference":{"reference":"Patient/`+c.bobPID+`"}}`), url},
		{"FHIRPath Patch deleting the subject", "application/fhir+json", fhirPath("delete", "Observation.subject"), url},
		{"a transaction whose FHIRPath Patch entry re-points the subject at bob", "application/fhir+json",
			`{"resourceType":"Bundle","type":"transaction","entry":[{"resource":` +
				fhirPath("replace", "Observation.subject.reference", `{"name":"value","valueString":"Patient/`+c.bobPID+`"}`) +
				`,"request":{"method":"PATCH","url":"Observation/` + c.aliceObs + `"}}]}`, recordURL(aliceSlug, "")},
	} {
		method := "PATCH"
		if !strings.HasSuffix(r.path, c.aliceObs) {
			method = "POST"
		}
		e.do(method, r.path, c.alice, r.body, "Content-Type", r.ct).ExpectOutcome(t, http.StatusUnprocessableEntity, r.name)
	}
	e.do("PATCH", recordURL(aliceSlug, "/Observation/"+c.bobObs), c.alice, `[{"op":"replace","path":"/subject/reference","value":"Patient/`+c.alicePID+`"}]`, jsonPatch...).
		ExpectOutcome(t, http.StatusNotFound, "alice patches bob's Observation by id")
	if after := inHAPI(); version(after) != judged {
		t.Errorf("a refused patch reached HAPI: version %s → %s: %s", judged, version(after), after)
	}
	bob := string(c.h.direct(t, c.mode, c.bobPart.key(c.mode), "/Observation/"+c.bobObs))
	if !strings.Contains(bob, `"reference":"Patient/`+c.bobPID+`"`) || version(bob) != "1" {
		t.Errorf("bob's Observation changed in HAPI: %s", bob)
	}
}
