package gateway_test

import (
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/fhir/fhirjson"
)

const (
	ctJSONPatch = "application/json-patch+json"
	ctFHIR      = "application/fhir+json"
	patchHost   = "fuzz.pfr.localhost"
)

// fhirPathPatch is a FHIRPath Patch Parameters with one operation.
func fhirPathPatch(typ, path string, parts ...string) string {
	all := append([]string{`{"name":"type","valueCode":"` + typ + `"}`, `{"name":"path","valueString":"` + path + `"}`}, parts...)
	return `{"resourceType":"Parameters","parameter":[{"name":"operation","part":[` + strings.Join(all, ",") + `]}]}`
}

// binaryPatch is a Bundle entry's Binary holding a JSON Patch.
func binaryPatch(p string) string {
	return `{"resourceType":"Binary","contentType":"application/json-patch+json","data":"` + base64.StdEncoding.EncodeToString([]byte(p)) + `"}`
}

// TestPatchOwnership: every PATCH (JSON Patch, FHIRPath Patch, direct,
// conditional, inside a transaction or batch) is judged as the update it
// becomes, on a trusted upstream and on one that is not: a result that no
// longer belongs to the record's Patient is refused with an
// OperationOutcome and nothing is written; what is stored is what was
// judged, untouched values byte for byte.
func TestPatchOwnership(t *testing.T) {
	for _, trusted := range []bool{true, false} {
		wp := newPipeline(t, trusted)
		// The record's CapabilityStatement (the store's, passed through)
		// advertises both formats and the interaction.
		if md := wp.do(t, "GET", patchHost, "/fhir/metadata", nil).Body.String(); !strings.Contains(md, `"patchFormat":["application/json-patch+json","application/fhir+json"]`) ||
			!strings.Contains(md, `{"code":"patch"}`) {
			t.Errorf("trusted=%v: metadata does not advertise patch: %.300s", trusted, md)
		}
		own := `{"resourceType":"Observation","status":"final","code":{"text":"glucose"},"identifier":[{"value":"own-1"}],` +
			`"subject":{"reference":"Patient/` + wp.pid + `"},"valueQuantity":{"value":0.1000,"unit":"mmol/L"}}`
		res := wp.do(t, "POST", patchHost, "/fhir/Observation", []byte(own), "Prefer", "return=representation")
		if res.Code != http.StatusCreated {
			t.Fatalf("create: %d %s", res.Code, res.Body)
		}
		created, _ := fhirjson.DecodeObject(res.Body.Bytes())
		oid, _ := created["id"].(string)
		obsPath := "/fhir/Observation/" + oid
		read := func() string {
			r := wp.do(t, "GET", patchHost, obsPath, nil)
			if r.Code != 200 {
				t.Fatalf("read: %d %s", r.Code, r.Body)
			}
			return r.Body.String()
		}
		version := 1
		tx := func(typ string, entries ...string) []byte {
			return []byte(`{"resourceType":"Bundle","type":"` + typ + `","entry":[` + strings.Join(entries, ",") + `]}`)
		}
		entry := func(url, res string, extra string) string {
			return `{"resource":` + res + `,"request":{"method":"PATCH","url":"` + url + `"` + extra + `}}`
		}
		other := "Patient/someone-else"
		for _, c := range []struct {
			name, method, path, contentType, body string
			headers                               []string
			want                                  int
			stored                                string // a substring of the stored Observation after a 200
		}{
			{"JSON Patch of her own", "PATCH", obsPath, ctJSONPatch, `[{"op":"replace","path":"/status","value":"amended"}]`, nil, 200, `"status":"amended"`},
			{"FHIRPath Patch of her own", "PATCH", obsPath, ctFHIR, fhirPathPatch("replace", "Observation.status", `{"name":"value","valueCode":"final"}`), nil, 200, `"status":"final"`},
			{"JSON Patch: subject to another Patient", "PATCH", obsPath, ctJSONPatch, `[{"op":"replace","path":"/subject/reference","value":"` + other + `"}]`, nil, 422, ""},
			{"JSON Patch: remove the subject", "PATCH", obsPath, ctJSONPatch, `[{"op":"remove","path":"/subject"}]`, nil, 422, ""},
			{"JSON Patch: a performer that is another Patient", "PATCH", obsPath, ctJSONPatch, `[{"op":"add","path":"/performer","value":[{"reference":"` + other + `"}]}]`, nil, 422, ""},
			{"FHIRPath Patch: subject to another Patient", "PATCH", obsPath, ctFHIR,
				fhirPathPatch("replace", "Observation.subject", `{"name":"value","valueReference":{"reference":"`+other+`"}}`), nil, 422, ""},
			{"FHIRPath Patch: delete the subject", "PATCH", obsPath, ctFHIR, fhirPathPatch("delete", "Observation.subject"), nil, 422, ""},
			{"FHIRPath Patch: add a contained Patient", "PATCH", obsPath, ctFHIR,
				fhirPathPatch("add", "Observation", `{"name":"name","valueString":"contained"}`, `{"name":"value","resource":{"resourceType":"Patient","id":"p"}}`), nil, 422, ""},
			{"JSON Patch: into another resource type", "PATCH", obsPath, ctJSONPatch, `[{"op":"replace","path":"/resourceType","value":"Condition"}]`, nil, 422, ""},
			{"stale If-Match", "PATCH", obsPath, ctJSONPatch, `[{"op":"replace","path":"/status","value":"amended"}]`, []string{"If-Match", `W/"1"`}, 412, ""},
			{"If-Match of the current version", "PATCH", obsPath, ctJSONPatch, `[{"op":"replace","path":"/status","value":"amended"}]`, []string{"If-Match", `W/"3"`}, 200, `"status":"amended"`},
			{"a failed test", "PATCH", obsPath, ctJSONPatch, `[{"op":"test","path":"/status","value":"final"}]`, nil, 422, ""},
			{"XML", "PATCH", obsPath, "application/fhir+xml", `<Parameters/>`, nil, 415, ""},
			{"no such resource", "PATCH", "/fhir/Observation/nobody", ctJSONPatch, `[]`, nil, 404, ""},
			{"conditional PATCH of her own", "PATCH", "/fhir/Observation?identifier=own-1", ctFHIR,
				fhirPathPatch("replace", "Observation.status", `{"name":"value","valueCode":"final"}`), nil, 200, `"status":"final"`},
			{"conditional PATCH matching nothing", "PATCH", "/fhir/Observation?identifier=none", ctJSONPatch, `[]`, nil, 404, ""},
			{"conditional PATCH naming another Patient", "PATCH", "/fhir/Observation?subject=" + other, ctJSONPatch, `[]`, nil, 422, ""},
			{"conditional PATCH of a Patient", "PATCH", "/fhir/Patient?name=Fuzz", ctJSONPatch, `[]`, nil, 422, ""},
			{"a Patient that is not hers", "PATCH", "/fhir/Patient/p2", ctJSONPatch, `[]`, nil, 404, ""},
			{"her Patient's birth date without the owner's confirmation", "PATCH", "/fhir/Patient/" + wp.pid, ctFHIR,
				fhirPathPatch("replace", "Patient.birthDate", `{"name":"value","valueDate":"1999-01-01"}`), nil, 422, ""},
			{"transaction: a JSON Patch entry of her own", "POST", "/fhir", ctFHIR,
				string(tx("transaction", entry("Observation/"+oid, binaryPatch(`[{"op":"replace","path":"/status","value":"amended"}]`), ""))), nil, 200, `"status":"amended"`},
			{"transaction: a FHIRPath Patch entry of her own with ifMatch", "POST", "/fhir", ctFHIR,
				string(tx("transaction", entry("Observation/"+oid, fhirPathPatch("replace", "Observation.status", `{"name":"value","valueCode":"final"}`), `,"ifMatch":"W/\"6\""`))), nil, 200, `"status":"final"`},
			{"transaction: a patch entry re-pointing the subject", "POST", "/fhir", ctFHIR,
				string(tx("transaction",
					`{"resource":{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/`+wp.pid+`"}},"request":{"method":"POST","url":"Observation"}}`,
					entry("Observation/"+oid, binaryPatch(`[{"op":"replace","path":"/subject/reference","value":"`+other+`"}]`), ""))), nil, 422, ""},
			{"transaction: a FHIRPath Patch entry deleting the subject", "POST", "/fhir", ctFHIR,
				string(tx("transaction", entry("Observation/"+oid, fhirPathPatch("delete", "Observation.subject"), ""))), nil, 422, ""},
			{"transaction: a conditional patch entry re-pointing the subject", "POST", "/fhir", ctFHIR,
				string(tx("transaction", entry("Observation?identifier=own-1", fhirPathPatch("replace", "Observation.subject.reference", `{"name":"value","valueString":"`+other+`"}`), ""))), nil, 422, ""},
			{"transaction: a stale ifMatch", "POST", "/fhir", ctFHIR,
				string(tx("transaction", entry("Observation/"+oid, binaryPatch(`[]`), `,"ifMatch":"W/\"1\""`))), nil, 412, ""},
			{"transaction: a patch entry on a resource not in the record", "POST", "/fhir", ctFHIR,
				string(tx("transaction", entry("Observation/nobody", binaryPatch(`[]`), ""))), nil, 404, ""},
			{"transaction: a patch entry that is no patch", "POST", "/fhir", ctFHIR,
				string(tx("transaction", entry("Observation/"+oid, `{"resourceType":"Observation","status":"final"}`, ""))), nil, 400, ""},
			{"batch: a patch entry re-pointing the subject", "POST", "/fhir", ctFHIR,
				string(tx("batch", entry("Observation/"+oid, binaryPatch(`[{"op":"replace","path":"/subject/reference","value":"`+other+`"}]`), ""))), nil, 422, ""},
			{"transaction: a patch entry referring to a Practitioner the transaction creates", "POST", "/fhir", ctFHIR,
				string(tx("transaction",
					`{"fullUrl":"urn:uuid:5b8e0a4e-0000-4000-8000-000000000001","resource":{"resourceType":"Practitioner","name":[{"family":"Doc"}]},"request":{"method":"POST","url":"Practitioner"}}`,
					entry("Observation/"+oid, fhirPathPatch("add", "Observation", `{"name":"name","valueString":"performer"}`,
						`{"name":"value","valueReference":{"reference":"urn:uuid:5b8e0a4e-0000-4000-8000-000000000001"}}`), ""))), nil, 200, `"performer":[{"reference":"Practitioner/`},
		} {
			before := read()
			r := wp.do(t, c.method, patchHost, c.path, []byte(c.body), append([]string{"Content-Type", c.contentType}, c.headers...)...)
			if r.Code != c.want {
				t.Errorf("trusted=%v, %s: %d %.400s, want %d", trusted, c.name, r.Code, r.Body, c.want)
				continue
			}
			after := read()
			if c.want != 200 {
				if !strings.Contains(r.Body.String(), `"OperationOutcome"`) {
					t.Errorf("trusted=%v, %s: %d without an OperationOutcome: %.300s", trusted, c.name, r.Code, r.Body)
				}
				if after != before {
					t.Errorf("trusted=%v, %s: refused, but the Observation changed:\n%s\n%s", trusted, c.name, before, after)
				}
				continue
			}
			version++
			if !strings.Contains(after, c.stored) || !strings.Contains(after, `"versionId":"`+strconv.Itoa(version)+`"`) {
				t.Errorf("trusted=%v, %s: stored %s, want %s at version %d", trusted, c.name, after, c.stored, version)
			}
			for _, kept := range []string{`"value":0.1000`, `"subject":{"reference":"Patient/` + wp.pid + `"}`} {
				if !strings.Contains(after, kept) {
					t.Errorf("trusted=%v, %s: lost %s: %s", trusted, c.name, kept, after)
				}
			}
		}
		// The owner confirms a change of her Patient's identity, by patch too.
		if r := wp.do(t, "PATCH", patchHost, "/fhir/Patient/"+wp.pid, []byte(fhirPathPatch("replace", "Patient.birthDate", `{"name":"value","valueDate":"1970-01-02"}`)),
			"Content-Type", ctFHIR, "X-PFR-Identity-Change", "confirm"); r.Code != http.StatusOK || !strings.Contains(r.Body.String(), `"birthDate":"1970-01-02"`) {
			t.Errorf("trusted=%v: the owner's confirmed patch of her birth date: %d %.300s", trusted, r.Code, r.Body)
		}
	}
}

// TestPatchScopes: a PATCH needs the update permission (.u, v1 write) on
// its type, direct and in a Bundle.
func TestPatchScopes(t *testing.T) {
	wp := newPipeline(t, false)
	res := wp.do(t, "POST", patchHost, "/fhir/Observation", []byte(`{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/`+wp.pid+`"}}`),
		"Prefer", "return=representation")
	created, _ := fhirjson.DecodeObject(res.Body.Bytes())
	oid, _ := created["id"].(string)
	for scope, want := range map[string]int{
		"openid patient/Observation.rs":    403,
		"openid patient/Observation.cs":    403,
		"openid patient/Condition.u":       403,
		"openid patient/Observation.read":  403,
		"openid patient/Observation.ru":    200,
		"openid patient/Observation.write": 200,
	} {
		tok, err := wp.dev.Mint("fuzzer", scope, nil, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		for _, req := range []struct{ path, ct, body string }{
			{"/fhir/Observation/" + oid, ctJSONPatch, `[]`},
			{"/fhir", ctFHIR, `{"resourceType":"Bundle","type":"batch","entry":[{"resource":` + binaryPatch(`[]`) + `,"request":{"method":"PATCH","url":"Observation/` + oid + `"}}]}`},
		} {
			r := httptest.NewRequest("PATCH", "http://"+patchHost+req.path, strings.NewReader(req.body))
			if req.path == "/fhir" {
				r.Method = "POST"
			}
			r.Host = patchHost
			r.Header.Set("Authorization", "Bearer "+tok)
			r.Header.Set("Content-Type", req.ct)
			w := httptest.NewRecorder()
			wp.gw.ServeHTTP(w, r, wp.up)
			if w.Code != want {
				t.Errorf("%s, %s %s: %d %.300s, want %d", scope, r.Method, req.path, w.Code, w.Body, want)
			}
		}
	}
}

// TestPatchRace: a write that lands between the gateway's read of the
// resource and its PUT of the judged result makes the PUT fail (412,
// If-Match names the version judged); the other write stays.
func TestPatchRace(t *testing.T) {
	for _, trusted := range []bool{true, false} {
		wp := newPipeline(t, trusted)
		res := wp.do(t, "POST", patchHost, "/fhir/Observation", []byte(`{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/`+wp.pid+`"}}`),
			"Prefer", "return=representation")
		created, _ := fhirjson.DecodeObject(res.Body.Bytes())
		oid, _ := created["id"].(string)
		inner := wp.up
		var raced atomic.Bool
		wp.up = func(w http.ResponseWriter, r *http.Request) error {
			if r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/Observation/"+oid) && !raced.Swap(true) {
				// Another client's update lands first, straight upstream.
				body := `{"resourceType":"Observation","id":"` + oid + `","status":"cancelled","code":{"text":"x"},"subject":{"reference":"Patient/` + wp.pid + `"}}`
				c := httptest.NewRequest(http.MethodPut, r.URL.String(), strings.NewReader(body))
				c.Header = r.Header.Clone()
				c.Header.Del("If-Match")
				rec := httptest.NewRecorder()
				if err := inner(rec, c); err != nil || rec.Code != http.StatusOK {
					t.Fatalf("the competing write: %v %d %s", err, rec.Code, rec.Body)
				}
			}
			return inner(w, r)
		}
		r := wp.do(t, "PATCH", patchHost, "/fhir/Observation/"+oid, []byte(`[{"op":"replace","path":"/status","value":"amended"}]`), "Content-Type", ctJSONPatch)
		if r.Code != http.StatusPreconditionFailed || !raced.Load() {
			t.Fatalf("trusted=%v: the raced patch answered %d %s (raced %v), want 412", trusted, r.Code, r.Body, raced.Load())
		}
		wp.up = inner
		got := wp.do(t, "GET", patchHost, "/fhir/Observation/"+oid, nil)
		if !strings.Contains(got.Body.String(), `"status":"cancelled"`) || !strings.Contains(got.Body.String(), `"versionId":"2"`) {
			t.Fatalf("trusted=%v: after the race: %s", trusted, got.Body)
		}
	}
}
