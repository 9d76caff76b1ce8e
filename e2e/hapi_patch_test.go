package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/fhir/fhirpath"
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

// fhirPathPatchCases are FHIRPath Patch operations on small resources,
// applied by HAPI itself and by the gateway (fhir.Patch) in
// patchDifferential. The FHIR test suite's cases are in fhir's
// TestApplyFHIRPathPatch; these are the shapes clients send.
var fhirPathPatchCases = []struct{ name, doc, params string }{
	{"replace a primitive", `{"resourceType":"Patient","birthDate":"1920-01-01"}`,
		`{"resourceType":"Parameters","parameter":[{"name":"operation","part":[{"name":"type","valueCode":"replace"},{"name":"path","valueString":"Patient.birthDate"},{"name":"value","valueDate":"1930-01-01"}]}]}`},
	{"delete a primitive", `{"resourceType":"Patient","birthDate":"1920-01-01","gender":"male"}`,
		`{"resourceType":"Parameters","parameter":[{"name":"operation","part":[{"name":"type","valueCode":"delete"},{"name":"path","valueString":"Patient.birthDate"}]}]}`},
	{"add a primitive", `{"resourceType":"Patient","gender":"male"}`,
		`{"resourceType":"Parameters","parameter":[{"name":"operation","part":[{"name":"type","valueCode":"add"},{"name":"path","valueString":"Patient"},{"name":"name","valueString":"birthDate"},{"name":"value","valueDate":"1930-01-01"}]}]}`},
	{"add to a list", `{"resourceType":"Patient","identifier":[{"value":"1"}]}`,
		`{"resourceType":"Parameters","parameter":[{"name":"operation","part":[{"name":"type","valueCode":"add"},{"name":"path","valueString":"Patient"},{"name":"name","valueString":"identifier"},{"name":"value","valueIdentifier":{"value":"2"}}]}]}`},
	{"add a list", `{"resourceType":"Patient","gender":"male"}`,
		`{"resourceType":"Parameters","parameter":[{"name":"operation","part":[{"name":"type","valueCode":"add"},{"name":"path","valueString":"Patient"},{"name":"name","valueString":"identifier"},{"name":"value","valueIdentifier":{"value":"2"}}]}]}`},
	{"insert into a list", `{"resourceType":"Patient","identifier":[{"value":"1"},{"value":"2"}]}`,
		`{"resourceType":"Parameters","parameter":[{"name":"operation","part":[{"name":"type","valueCode":"insert"},{"name":"path","valueString":"Patient.identifier"},{"name":"index","valueInteger":1},{"name":"value","valueIdentifier":{"value":"3"}}]}]}`},
	{"move in a list", `{"resourceType":"Patient","identifier":[{"value":"1"},{"value":"2"},{"value":"3"},{"value":"4"}]}`,
		`{"resourceType":"Parameters","parameter":[{"name":"operation","part":[{"name":"type","valueCode":"move"},{"name":"path","valueString":"Patient.identifier"},{"name":"source","valueInteger":3},{"name":"destination","valueInteger":1}]}]}`},
	{"delete a list item", `{"resourceType":"Patient","identifier":[{"value":"1"},{"value":"2"}]}`,
		`{"resourceType":"Parameters","parameter":[{"name":"operation","part":[{"name":"type","valueCode":"delete"},{"name":"path","valueString":"Patient.identifier[0]"}]}]}`},
	{"replace a nested primitive", `{"resourceType":"Patient","contact":[{"name":{"text":"a"},"gender":"male"}]}`,
		`{"resourceType":"Parameters","parameter":[{"name":"operation","part":[{"name":"type","valueCode":"replace"},{"name":"path","valueString":"Patient.contact[0].gender"},{"name":"value","valueCode":"female"}]}]}`},
	{"add an anonymous element", `{"resourceType":"Patient","gender":"male"}`,
		`{"resourceType":"Parameters","parameter":[{"name":"operation","part":[{"name":"type","valueCode":"add"},{"name":"path","valueString":"Patient"},{"name":"name","valueString":"contact"},{"name":"value","part":[{"name":"name","valueHumanName":{"text":"a"}}]}]}]}`},
	{"replace through where()", `{"resourceType":"Patient","name":[{"use":"official","family":"A"},{"use":"nickname","family":"B"}]}`,
		`{"resourceType":"Parameters","parameter":[{"name":"operation","part":[{"name":"type","valueCode":"replace"},{"name":"path","valueString":"Patient.name.where(use='nickname').family"},{"name":"value","valueString":"C"}]}]}`},
	{"add a choice element", `{"resourceType":"Observation","status":"final","code":{"text":"x"}}`,
		`{"resourceType":"Parameters","parameter":[{"name":"operation","part":[{"name":"type","valueCode":"add"},{"name":"path","valueString":"Observation"},{"name":"name","valueString":"value"},{"name":"value","valueQuantity":{"value":1.50,"unit":"mg"}}]}]}`},
	{"replace a choice element's value", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":1}}`,
		`{"resourceType":"Parameters","parameter":[{"name":"operation","part":[{"name":"type","valueCode":"replace"},{"name":"path","valueString":"Observation.value"},{"name":"value","valueQuantity":{"value":2}}]}]}`},
	{"delete an extension by url", `{"resourceType":"Patient","extension":[{"url":"http://a","valueString":"1"},{"url":"http://b","valueString":"2"}]}`,
		`{"resourceType":"Parameters","parameter":[{"name":"operation","part":[{"name":"type","valueCode":"delete"},{"name":"path","valueString":"Patient.extension('http://a')"}]}]}`},
	{"add an extension as parts", `{"resourceType":"Patient","gender":"male"}`,
		`{"resourceType":"Parameters","parameter":[{"name":"operation","part":[{"name":"type","valueCode":"add"},{"name":"path","valueString":"Patient"},{"name":"name","valueString":"extension"},{"name":"value","part":[{"name":"url","valueUri":"http://e"},{"name":"value","valueString":"v"}]}]}]}`},
	{"delete what is not there", `{"resourceType":"Patient","gender":"male"}`,
		`{"resourceType":"Parameters","parameter":[{"name":"operation","part":[{"name":"type","valueCode":"delete"},{"name":"path","valueString":"Patient.birthDate"}]}]}`},
	{"replace what is not there", `{"resourceType":"Patient","gender":"male"}`,
		`{"resourceType":"Parameters","parameter":[{"name":"operation","part":[{"name":"type","valueCode":"replace"},{"name":"path","valueString":"Patient.birthDate"},{"name":"value","valueDate":"1930-01-01"}]}]}`},
	{"insert beyond the end", `{"resourceType":"Patient","identifier":[{"value":"1"}]}`,
		`{"resourceType":"Parameters","parameter":[{"name":"operation","part":[{"name":"type","valueCode":"insert"},{"name":"path","valueString":"Patient.identifier"},{"name":"index","valueInteger":5},{"name":"value","valueIdentifier":{"value":"3"}}]}]}`},
	{"an unknown operation type", `{"resourceType":"Patient","gender":"male"}`,
		`{"resourceType":"Parameters","parameter":[{"name":"operation","part":[{"name":"type","valueCode":"merge"},{"name":"path","valueString":"Patient"}]}]}`},
}

// hapiPatchDiffers lists the cases where HAPI's answer differs from the
// gateway's, and why the gateway's follows the R4 text. Through the
// gateway none of them reaches HAPI as a patch: the gateway applies it and
// sends the PUT of the result.
var hapiPatchDiffers = map[string]string{
	// HAPI 8.8.0 answers 500 (HAPI-0389, a NullPointerException in its
	// patch engine) to a path through extension(url); extension() is
	// FHIRPath that the R4 FHIRPath Patch page allows, and the one
	// extension it finds is deleted.
	"delete an extension by url": "HAPI fails with a 500 on extension(url) in a patch path",
}

// patchDifferential applies every fhirPathPatchCases entry in HAPI itself
// (a partition of its own) and with fhir.Patch, and compares: the same
// resource (meta aside), or both refuse with a 4xx.
func (c *hapiCase) patchDifferential() {
	t := c.t
	if c.mode != "header" {
		return
	}
	do := func(method, path, partition, body string) (int, []byte) {
		req, err := http.NewRequest(method, c.h.base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set(partitionHeader, partition)
		if body != "" {
			req.Header.Set("Content-Type", "application/fhir+json")
		}
		res, err := c.h.client.Do(req)
		if err != nil {
			t.Fatalf("HAPI directly: %v", err)
		}
		defer res.Body.Close()
		raw, _ := io.ReadAll(res.Body)
		return res.StatusCode, raw
	}
	if status, raw := do("POST", "/$partition-management-create-partition", "DEFAULT",
		`{"resourceType":"Parameters","parameter":[{"name":"id","valueInteger":4242},{"name":"name","valueCode":"patch-differential"}]}`); status != http.StatusOK {
		t.Fatalf("creating HAPI's partition for the patch differential: %d %.300s", status, raw)
	}
	for i, pc := range fhirPathPatchCases {
		id := fmt.Sprintf("patchdiff-%d", i)
		doc, err := fhir.DecodeResource([]byte(pc.doc))
		if err != nil {
			t.Fatal(err)
		}
		doc["id"] = id
		body, _ := json.Marshal(doc)
		if status, raw := do("PUT", "/"+doc["resourceType"].(string)+"/"+id, "4242", string(body)); status != http.StatusCreated && status != http.StatusOK {
			t.Fatalf("%s: HAPI refused the input: %d %.300s", pc.name, status, raw)
		}
		var want map[string]any
		patch, err := fhir.ParsePatch("application/fhir+json", []byte(pc.params))
		if err == nil {
			want, err = patch.Apply(doc)
		}
		status, raw := do("PATCH", "/"+doc["resourceType"].(string)+"/"+id, "4242", pc.params)
		var got map[string]any
		if status == http.StatusOK {
			got, _ = fhir.DecodeResource(raw)
			delete(got, "meta")
			delete(got, "text")
		}
		agree := err != nil && status >= 400 && status < 500 ||
			err == nil && status == http.StatusOK && fhirpath.JSONEqual(got, want)
		reason, listed := hapiPatchDiffers[pc.name]
		switch {
		case !agree && !listed:
			wantJSON, _ := json.Marshal(want)
			t.Errorf("FHIRPath Patch %q: HAPI answered %d %.400s; the gateway: %s %v", pc.name, status, raw, wantJSON, err)
		case agree && listed:
			t.Errorf("FHIRPath Patch %q: HAPI now agrees; drop it from hapiPatchDiffers (%s)", pc.name, reason)
		}
	}
}
