package store

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

const patchObs = `{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"glucose"},` +
	`"subject":{"reference":"Patient/p1"},"valueQuantity":{"value":0.1000,"unit":"mmol/L"},` +
	`"component":[{"code":{"text":"a"},"valueQuantity":{"value":1.50}},{"code":{"text":"b"},"valueQuantity":{"value":2E+1}}],` +
	`"note":[{"text":"<b>&amp; \u00e9</b>"}]}`

// fp builds a FHIRPath Patch Parameters from operations given as parts.
func fp(ops ...string) string {
	return `{"resourceType":"Parameters","parameter":[` + strings.Join(ops, ",") + `]}`
}

func fpo(typ, path string, parts ...string) string {
	all := append([]string{`{"name":"type","valueCode":"` + typ + `"}`, `{"name":"path","valueString":"` + path + `"}`}, parts...)
	return `{"name":"operation","part":[` + strings.Join(all, ",") + `]}`
}

// TestPatch: PATCH Type/id with a JSON Patch and with a FHIRPath Patch,
// every error a client can cause, If-Match, history, and the untouched
// values byte for byte.
func TestPatch(t *testing.T) {
	s := newTestServer(t)
	s.must(http.StatusCreated, "PUT", "/fhir/Observation/o1", "DEFAULT", patchObs)
	jp := []string{"Content-Type", "application/json-patch+json"}

	type row struct {
		name        string
		contentType string
		body        string
		headers     []string
		status      int
		// want is a substring of the stored JSON (success) or of the
		// OperationOutcome (error).
		want string
	}
	rows := []row{
		// JSON Patch, every operation.
		{"json add", "application/json-patch+json", `[{"op":"add","path":"/issued","value":"2020-01-01T00:00:00Z"}]`, nil, 200, `"issued":"2020-01-01T00:00:00Z"`},
		{"json replace", "application/json-patch+json", `[{"op":"replace","path":"/status","value":"amended"}]`, nil, 200, `"status":"amended"`},
		{"json remove", "application/json-patch+json", `[{"op":"remove","path":"/issued"}]`, nil, 200, `"status":"amended"`},
		{"json copy", "application/json-patch+json", `[{"op":"copy","from":"/component/0","path":"/component/-"}]`, nil, 200, `{"code":{"text":"a"},"valueQuantity":{"value":1.50}}]`},
		{"json move", "application/json-patch+json", `[{"op":"move","from":"/component/2","path":"/component/0"}]`, nil, 200, `"component":[{"code":{"text":"a"},"valueQuantity":{"value":1.50}},{"code":{"text":"a"}`},
		{"json test then replace", "application/json-patch+json", `[{"op":"test","path":"/status","value":"amended"},{"op":"replace","path":"/status","value":"final"}]`, nil, 200, `"status":"final"`},
		{"json escaped pointer", "application/json-patch+json", `[{"op":"add","path":"/extension","value":[{"url":"a/b~c","valueString":"x"}]},{"op":"replace","path":"/extension/0/url","value":"d"},{"op":"test","path":"/extension/0/url","value":"d"}]`, nil, 200, `"url":"d"`},
		{"json test fails", "application/json-patch+json", `[{"op":"test","path":"/status","value":"cancelled"},{"op":"replace","path":"/status","value":"cancelled"}]`, nil, 422, "test failed"},
		{"json bad pointer", "application/json-patch+json", `[{"op":"remove","path":"status"}]`, nil, 400, "must be empty or start with /"},
		{"json missing path", "application/json-patch+json", `[{"op":"remove","path":"/nope"}]`, nil, 422, "no member"},
		{"json not an array", "application/json-patch+json", `{"op":"remove","path":"/status"}`, nil, 400, "JSON array"},
		{"json changes id", "application/json-patch+json", `[{"op":"replace","path":"/id","value":"o2"}]`, nil, 422, "resourceType or id"},
		{"json changes type", "application/json-patch+json", `[{"op":"replace","path":"/resourceType","value":"Condition"}]`, nil, 422, "resourceType or id"},
		{"json invalid id in result", "application/json-patch+json", `[{"op":"replace","path":"/meta","value":"x"}]`, nil, 422, "meta must be an object"},
		{"json big number refused", "application/json-patch+json", `[{"op":"replace","path":"/status","value":1e999}]`, nil, 400, "outside the range"},

		// FHIRPath Patch, every operation.
		{"fhirpath add", "application/fhir+json", fp(fpo("add", "Observation", `{"name":"name","valueString":"issued"}`, `{"name":"value","valueInstant":"2021-01-01T00:00:00Z"}`)), nil, 200, `"issued":"2021-01-01T00:00:00Z"`},
		{"fhirpath insert", "application/fhir+json", fp(fpo("insert", "Observation.note", `{"name":"index","valueInteger":0}`, `{"name":"value","valueAnnotation":{"text":"first"}}`)), nil, 200, `"note":[{"text":"first"},{"text":"<b>&amp; é</b>"}]`},
		{"fhirpath move", "application/fhir+json", fp(fpo("move", "Observation.note", `{"name":"source","valueInteger":0}`, `{"name":"destination","valueInteger":1}`)), nil, 200, `"note":[{"text":"<b>&amp; é</b>"},{"text":"first"}]`},
		{"fhirpath replace", "application/fhir+json", fp(fpo("replace", "Observation.code.text", `{"name":"value","valueString":"glucose (fasting)"}`)), nil, 200, `"code":{"text":"glucose (fasting)"}`},
		{"fhirpath delete", "application/fhir+json", fp(fpo("delete", "Observation.note[1]")), nil, 200, `"note":[{"text":"<b>&amp; é</b>"}]`},
		{"fhirpath as application/json", "application/json", fp(fpo("replace", "Observation.status", `{"name":"value","valueCode":"amended"}`)), nil, 200, `"status":"amended"`},
		{"fhirpath no match", "application/fhir+json", fp(fpo("replace", "Observation.bodySite", `{"name":"value","valueCodeableConcept":{"text":"x"}}`)), nil, 422, "finds no element"},
		{"fhirpath wrong type", "application/fhir+json", fp(fpo("replace", "Observation.status", `{"name":"value","valueQuantity":{"value":1}}`)), nil, 422, "takes code"},
		{"fhirpath bad operation", "application/fhir+json", fp(fpo("upsert", "Observation.status")), nil, 400, "upsert"},
		{"fhirpath changes id", "application/fhir+json", fp(fpo("replace", "Observation.id", `{"name":"value","valueId":"o9"}`)), nil, 422, "resourceType or id"},
		{"fhirpath not parameters", "application/fhir+json", patchObs, nil, 400, "Parameters"},

		// Media types and versions.
		{"xml refused", "application/fhir+xml", `<Parameters/>`, nil, 415, "JSON Patch"},
		{"merge patch refused", "application/merge-patch+json", `{}`, nil, 415, "JSON Patch"},
		{"if-match stale", "application/json-patch+json", `[{"op":"replace","path":"/status","value":"final"}]`, []string{"If-Match", `W/"1"`}, 412, "is at version"},
		{"if-match bad", "application/json-patch+json", `[{"op":"replace","path":"/status","value":"final"}]`, []string{"If-Match", `W/"x"`}, 400, "If-Match"},
	}
	version := 1
	for _, r := range rows {
		headers := append([]string{"Content-Type", r.contentType}, r.headers...)
		resp := s.do("PATCH", "/fhir/Observation/o1", "DEFAULT", r.body, headers...)
		if r.status != 200 {
			expectOutcome(t, resp, r.status, r.want)
			continue
		}
		if resp.Status != 200 {
			t.Fatalf("%s: %d %s", r.name, resp.Status, resp.Body)
		}
		version++
		if resp.Header.Get("ETag") != `W/"`+itoa(version)+`"` {
			t.Fatalf("%s: ETag %q, want version %d", r.name, resp.Header.Get("ETag"), version)
		}
		if !strings.Contains(string(resp.Body), r.want) {
			t.Fatalf("%s: %s lacks %s", r.name, resp.Body, r.want)
		}
		// Untouched values byte for byte, decimals with their text.
		for _, kept := range []string{`"valueQuantity":{"unit":"mmol/L","value":0.1000}`, `{"value":1.50}`, `"subject":{"reference":"Patient/p1"}`} {
			if !strings.Contains(string(resp.Body), kept) {
				t.Fatalf("%s: %s lost %s", r.name, resp.Body, kept)
			}
		}
	}
	// If-Match with the current version; the history has every version.
	s.must(200, "PATCH", "/fhir/Observation/o1", "DEFAULT", `[{"op":"replace","path":"/status","value":"final"}]`,
		append(jp, "If-Match", `W/"`+itoa(version)+`"`)...)
	version++
	hist := s.must(200, "GET", "/fhir/Observation/o1/_history", "DEFAULT", nil).JSON(t)
	if total, _ := hist["total"].(float64); int(total) != version {
		t.Fatalf("history has %v versions, want %d", hist["total"], version)
	}
	if v1 := s.must(200, "GET", "/fhir/Observation/o1/_history/1", "DEFAULT", nil); !strings.Contains(string(v1.Body), `"status":"final","subject"`) ||
		!strings.Contains(string(v1.Body), `"value":0.1000`) || strings.Contains(string(v1.Body), `issued`) {
		t.Fatalf("version 1 changed: %s", v1.Body)
	}
	// 2E+1 is written back as it came.
	if r := s.must(200, "GET", "/fhir/Observation/o1", "DEFAULT", nil); !strings.Contains(string(r.Body), `2E+1`) {
		t.Fatalf("exponent lost: %s", r.Body)
	}

	// Missing, deleted, wrong partition.
	expectOutcome(t, s.do("PATCH", "/fhir/Observation/nope", "DEFAULT", `[]`, jp...), 404, "nope")
	s.must(201, "PUT", "/fhir/Observation/gone", "DEFAULT", `{"resourceType":"Observation","id":"gone","status":"final"}`)
	s.must(200, "DELETE", "/fhir/Observation/gone", "DEFAULT", nil)
	expectOutcome(t, s.do("PATCH", "/fhir/Observation/gone", "DEFAULT", `[]`, jp...), 410, "gone")
	s.createPartition(7)
	expectOutcome(t, s.do("PATCH", "/fhir/Observation/o1", "7", `[]`, jp...), 404, "o1")
}

// TestConditionalPatch: PATCH Type?criteria patches the one match; none is
// 404, several 412.
func TestConditionalPatch(t *testing.T) {
	s := newTestServer(t)
	jp := []string{"Content-Type", "application/json-patch+json"}
	s.must(201, "PUT", "/fhir/Observation/a", "DEFAULT", `{"resourceType":"Observation","id":"a","status":"final","identifier":[{"value":"one"}]}`)
	s.must(201, "PUT", "/fhir/Observation/b", "DEFAULT", `{"resourceType":"Observation","id":"b","status":"final","identifier":[{"value":"two"}]}`)
	r := s.must(200, "PATCH", "/fhir/Observation?identifier=one", "DEFAULT", `[{"op":"replace","path":"/status","value":"amended"}]`, jp...)
	if !strings.Contains(string(r.Body), `"id":"a"`) || !strings.Contains(string(r.Body), `"amended"`) {
		t.Fatalf("%s", r.Body)
	}
	// The indexes follow the patch (it is written like any update).
	for q, want := range map[string]string{"status=amended": `"total":1`, "status=final": `"total":1`, "status=amended&identifier=two": `"total":0`} {
		if r := s.must(200, "GET", "/fhir/Observation?"+q, "DEFAULT", nil); !strings.Contains(string(r.Body), want) {
			t.Fatalf("%s after the patch: %s", q, r.Body)
		}
	}
	expectOutcome(t, s.do("PATCH", "/fhir/Observation?identifier=three", "DEFAULT", `[]`, jp...), 404, "matches no resource")
	expectOutcome(t, s.do("PATCH", "/fhir/Observation?status=final,amended", "DEFAULT", `[]`, jp...), 412, "matches 2")
}

// TestPatchInBundles: PATCH entries (a Binary JSON Patch, a Parameters
// FHIRPath Patch, conditional) in a transaction are atomic with the rest;
// in a batch each entry stands alone.
func TestPatchInBundles(t *testing.T) {
	s := newTestServer(t)
	s.must(201, "PUT", "/fhir/Observation/a", "DEFAULT", `{"resourceType":"Observation","id":"a","status":"final","valueQuantity":{"value":0.1000}}`)
	s.must(201, "PUT", "/fhir/Observation/b", "DEFAULT", `{"resourceType":"Observation","id":"b","status":"final","identifier":[{"value":"bee"}]}`)
	binary := func(p string) string {
		return `{"resourceType":"Binary","contentType":"application/json-patch+json","data":"` + base64.StdEncoding.EncodeToString([]byte(p)) + `"}`
	}
	tx := func(typ string, entries ...string) string {
		return `{"resourceType":"Bundle","type":"` + typ + `","entry":[` + strings.Join(entries, ",") + `]}`
	}
	entry := func(method, url, res string, extra ...string) string {
		req := `"method":"` + method + `","url":"` + url + `"` + strings.Join(extra, "")
		if res == "" {
			return `{"request":{` + req + `}}`
		}
		return `{"resource":` + res + `,"request":{` + req + `}}`
	}
	// A transaction with a POST, a JSON Patch, a conditional FHIRPath
	// Patch that refers to the POSTed Patient by its placeholder.
	body := tx("transaction",
		`{"fullUrl":"urn:uuid:11111111-1111-4111-8111-111111111111","resource":{"resourceType":"Patient","active":true},"request":{"method":"POST","url":"Patient"}}`,
		entry("PATCH", "Observation/a", binary(`[{"op":"replace","path":"/status","value":"amended"}]`), `,"ifMatch":"W/\"1\""`),
		entry("PATCH", "Observation?identifier=bee", fp(fpo("add", "Observation", `{"name":"name","valueString":"subject"}`, `{"name":"value","valueReference":{"reference":"urn:uuid:11111111-1111-4111-8111-111111111111"}}`))),
	)
	r := s.must(200, "POST", "/fhir", "DEFAULT", body)
	resp := string(r.Body)
	if strings.Count(resp, `"status":"200 OK"`) != 2 || strings.Count(resp, `"status":"201 Created"`) != 1 {
		t.Fatalf("transaction response %s", resp)
	}
	a := string(s.must(200, "GET", "/fhir/Observation/a", "DEFAULT", nil).Body)
	if !strings.Contains(a, `"status":"amended"`) || !strings.Contains(a, `"value":0.1000`) || !strings.Contains(a, `"versionId":"2"`) {
		t.Fatalf("a: %s", a)
	}
	b := string(s.must(200, "GET", "/fhir/Observation/b", "DEFAULT", nil).Body)
	if !strings.Contains(b, `"subject":{"reference":"Patient/`) || strings.Contains(b, "urn:uuid") {
		t.Fatalf("b: %s", b)
	}

	// All or nothing: a failing test op rolls back the PUT beside it.
	before := dumpPartition(t, s.db, "DEFAULT")
	body = tx("transaction",
		entry("PUT", "Observation/c", `{"resourceType":"Observation","id":"c","status":"final"}`),
		entry("PATCH", "Observation/a", binary(`[{"op":"test","path":"/status","value":"final"}]`)),
	)
	expectOutcome(t, s.do("POST", "/fhir", "DEFAULT", body), 422, "Bundle.entry[1]")
	// A stale ifMatch: 412, nothing written.
	body = tx("transaction",
		entry("PUT", "Observation/c", `{"resourceType":"Observation","id":"c","status":"final"}`),
		entry("PATCH", "Observation/a", binary(`[]`), `,"ifMatch":"W/\"1\""`),
	)
	expectOutcome(t, s.do("POST", "/fhir", "DEFAULT", body), 412, "version 2")
	// A patch that is not one: 400, nothing written.
	body = tx("transaction", entry("PATCH", "Observation/a", `{"resourceType":"Observation","status":"final"}`))
	expectOutcome(t, s.do("POST", "/fhir", "DEFAULT", body), 400, "Binary")
	body = tx("transaction", entry("PATCH", "Observation/a", `{"resourceType":"Binary","contentType":"text/plain","data":"W10="}`))
	expectOutcome(t, s.do("POST", "/fhir", "DEFAULT", body), 400, "contentType")
	body = tx("transaction", entry("PATCH", "Observation", binary(`[]`)))
	expectOutcome(t, s.do("POST", "/fhir", "DEFAULT", body), 400, "needs an id or search criteria")
	body = tx("transaction", entry("PUT", "Observation/a", `{"resourceType":"Observation","id":"a","status":"final"}`), entry("PATCH", "Observation/a", binary(`[]`)))
	expectOutcome(t, s.do("POST", "/fhir", "DEFAULT", body), 400, "both write")
	body = tx("transaction", entry("PUT", "Observation/b", `{"resourceType":"Observation","id":"b","status":"final"}`), entry("PATCH", "Observation?identifier=bee", binary(`[]`)))
	expectOutcome(t, s.do("POST", "/fhir", "DEFAULT", body), 400, "both write")
	if after := dumpPartition(t, s.db, "DEFAULT"); after != before {
		t.Fatal("a failed transaction changed the store")
	}

	// A batch: the failing patch fails alone.
	body = tx("batch",
		entry("PATCH", "Observation/a", binary(`[{"op":"test","path":"/status","value":"final"}]`)),
		entry("PATCH", "Observation/b", fp(fpo("replace", "Observation.status", `{"name":"value","valueCode":"cancelled"}`))),
	)
	resp = string(s.must(200, "POST", "/fhir", "DEFAULT", body).Body)
	if !strings.Contains(resp, `"status":"422 Unprocessable Entity"`) || !strings.Contains(resp, `"status":"200 OK"`) {
		t.Fatalf("batch response %s", resp)
	}
	if b := string(s.must(200, "GET", "/fhir/Observation/b", "DEFAULT", nil).Body); !strings.Contains(b, `"cancelled"`) {
		t.Fatalf("b: %s", b)
	}
}

// TestCapabilityStatementPatch: every type advertises patch and both formats.
func TestCapabilityStatementPatch(t *testing.T) {
	s := newTestServer(t)
	cs := s.must(200, "GET", "/fhir/metadata", "", nil).JSON(t)
	formats, _ := cs["patchFormat"].([]any)
	if len(formats) != 2 || formats[0] != "application/json-patch+json" || formats[1] != "application/fhir+json" {
		t.Fatalf("patchFormat %v", cs["patchFormat"])
	}
	for _, res := range cs["rest"].([]any)[0].(map[string]any)["resource"].([]any) {
		r := res.(map[string]any)
		found := false
		for _, i := range r["interaction"].([]any) {
			found = found || i.(map[string]any)["code"] == "patch"
		}
		if !found {
			t.Fatalf("%v does not advertise patch", r["type"])
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestPatchUnreadable: a stored resource that does not read back as FHIR
// JSON (written before the door) is not patched: a 409 OperationOutcome,
// never a 500, and nothing changes.
func TestPatchUnreadable(t *testing.T) {
	s := newTestServer(t)
	poison := resource{"resourceType": "Observation", "status": "final", "valueQuantity": map[string]any{"value": json.Number("1e999")}}
	if err := s.db.update("DEFAULT", func(p *ptx) error {
		_, err := p.write("Observation", "poison", poison, nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	before := dumpPartition(t, s.db, "DEFAULT")
	expectOutcome(t, s.do("PATCH", "/fhir/Observation/poison", "DEFAULT", `[{"op":"replace","path":"/status","value":"amended"}]`,
		"Content-Type", "application/json-patch+json"), http.StatusConflict, "PUT instead")
	if dumpPartition(t, s.db, "DEFAULT") != before {
		t.Fatal("the refused patch changed the store")
	}
}
