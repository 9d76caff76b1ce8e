package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// issue9Attacks are the classes a second attack suite found (issue 9):
// values that cannot round-trip, conditional creates used as an oracle,
// record creation around the ownership rules, malleable tokens, scopes
// escaped through what an answer adds, and answers that were not FHIR.
func issue9Attacks() []attack {
	subj := `"subject":{"reference":"Patient/{alice}"}`
	dropOff := func(resource string) string { return bundle("collection", `{"resource":`+resource+`}`) }
	record := func(patient string) string { return `{"slug":"alice-second","patient":` + patient + `}` }
	return []attack{
		// --- Values that cannot round-trip, on every write path -----------------------------------
		{name: "create: a number beyond a double (1e999)", method: "POST", path: "/fhir/Observation",
			body: obs(subj + `,"valueQuantity":{"value":1e999}`), want: badRequest, check: namesPath("Observation.valueQuantity.value")},
		{name: "create: a number below a double's range (1e-400)", method: "POST", path: "/fhir/Observation",
			body: obs(subj + `,"valueQuantity":{"value":1e-400}`), want: badRequest, check: namesPath("Observation.valueQuantity.value")},
		{name: "create: a decimal with 19 significant digits", method: "POST", path: "/fhir/Observation",
			body: obs(subj + `,"valueQuantity":{"value":1.234567890123456789}`), want: badRequest, check: namesPath("Observation.valueQuantity.value")},
		{name: "create: a lone high surrogate escape (\\ud800)", method: "POST", path: "/fhir/Observation",
			body: obs(subj + `,"note":[{"text":"a\ud800b"}]`), want: badRequest, check: namesPath("Observation.note[0].text")},
		{name: "create: a lone low surrogate escape (\\udfff)", method: "POST", path: "/fhir/Observation",
			body: obs(subj + `,"note":[{"text":"\udfff"}]`), want: badRequest},
		{name: "create: a high surrogate followed by a non-surrogate escape", method: "POST", path: "/fhir/Observation",
			body: obs(subj + `,"note":[{"text":"\ud83d\u0041"}]`), want: badRequest},
		{name: "create: invalid UTF-8 in a note", method: "POST", path: "/fhir/Observation",
			body: obs(subj + ",\"note\":[{\"text\":\"\xc3\x28\"}]"), want: badRequest},
		{name: "create: a UTF-8 encoded surrogate (CESU-8)", method: "POST", path: "/fhir/Observation",
			body: obs(subj + ",\"note\":[{\"text\":\"\xed\xa0\x80\"}]"), want: badRequest},
		{name: "update of alice's Observation with -1e999", method: "PUT", path: "/fhir/Observation/{aliceObs}",
			body: obs(`"id":"{aliceObs}",` + subj + `,"valueQuantity":{"value":-1e999}`), want: badRequest},
		{name: "JSON Patch adding 1e999", method: "PATCH", path: "/fhir/Observation/{aliceObs}", headers: jsonPatch,
			body: `[{"op":"add","path":"/valueQuantity","value":{"value":1e999}}]`, want: badRequest},
		{name: "JSON Patch adding a lone surrogate", method: "PATCH", path: "/fhir/Observation/{aliceObs}", headers: jsonPatch,
			body: `[{"op":"add","path":"/note","value":[{"text":"\ud800"}]}]`, want: badRequest},
		{name: "JSON Patch with a repeated op member", method: "PATCH", path: "/fhir/Observation/{aliceObs}", headers: jsonPatch,
			body: `[{"op":"add","op":"remove","path":"/valueQuantity","value":{}}]`, want: badRequest},
		{name: "transaction: an entry with 1e999", method: "POST", path: "/fhir",
			body: bundle("transaction", entry("", "POST", "Observation", obs(subj+`,"valueQuantity":{"value":1e999}`))),
			want: badRequest, check: namesPath("Bundle.entry[0].resource.valueQuantity.value")},
		{name: "batch: an entry with a lone surrogate", method: "POST", path: "/fhir",
			body: bundle("batch", entry("", "POST", "Observation", obs(subj+`,"note":[{"text":"\ud800"}]`))), want: badRequest},
		{name: "transaction: an entry with invalid UTF-8", method: "POST", path: "/fhir",
			body: bundle("transaction", entry("", "POST", "Observation", obs(subj+",\"note\":[{\"text\":\"\xff\"}]"))), want: badRequest},
		{name: "batch: an entry with a repeated member", method: "POST", path: "/fhir",
			body: bundle("batch", entry("", "POST", "Observation", obs(subj+`,"status":"final"`))), want: badRequest},
		{name: "drop-off (no token): 1e999", as: "none", method: "POST", path: "/fhir",
			body: dropOff(obs(subj + `,"valueQuantity":{"value":1e999}`)), want: badRequest},
		{name: "drop-off (no token): a lone surrogate", as: "none", method: "POST", path: "/fhir",
			body: dropOff(obs(subj + `,"note":[{"text":"\udbff"}]`)), want: badRequest},
		{name: "drop-off (no token): invalid UTF-8", as: "none", method: "POST", path: "/fhir/Bundle",
			body: dropOff(obs(subj + ",\"note\":[{\"text\":\"\xfe\"}]")), want: badRequest},
		{name: "drop-off (no token): a repeated member", as: "none", method: "POST", path: "/fhir",
			body: dropOff(obs(subj + `,"subject":{"reference":"Patient/{bob}"}`)), want: badRequest},
		{name: "drop-off (no token): 25 significant digits", as: "none", method: "POST", path: "/fhir",
			body: dropOff(obs(subj + `,"valueInteger":1234567890123456789012345`)), want: badRequest},
		{name: "Observation search after the poison attempts still answers", method: "GET", path: "/fhir/Observation?_count=100", want: harmless(200)},
		{name: "$everything after the poison attempts still answers", method: "GET", path: "/fhir/Patient/{alice}/$everything", want: harmless(200)},

		// --- Conditional creates used as an oracle (If-None-Exist, ifNoneExist) ----------------------
		{name: "If-None-Exist: code=<bob-only code> (only bob's matches on a shared upstream)", method: "POST", path: "/fhir/Observation",
			headers: []string{"If-None-Exist", "code=http://loinc.org|{bobOnlyCode}", "Prefer", "return=representation"},
			body:    obsAbout("Patient/{alice}"), want: harmless(200, 201, 412, 422)},
		{name: "If-None-Exist: _id=<bob's Observation>", method: "POST", path: "/fhir/Observation",
			headers: []string{"If-None-Exist", "_id={bobObs}"}, body: obsAbout("Patient/{alice}"), want: harmless(200, 201, 412, 422)},
		{name: "If-None-Exist: value-quantity=72 (alice's and bob's match)", method: "POST", path: "/fhir/Observation",
			headers: []string{"If-None-Exist", "value-quantity=72", "Prefer", "return=representation"},
			body:    obsAbout("Patient/{alice}"), want: harmless(200, 201, 412, 422)},
		{name: "If-None-Exist: performer=Practitioner/<bob's doctor>", method: "POST", path: "/fhir/Observation",
			headers: []string{"If-None-Exist", "performer=Practitioner/{bobPract}"}, body: obsAbout("Patient/{alice}"), want: harmless(200, 201, 412, 422)},
		{name: "If-None-Exist on a Practitioner: family=<bob's doctor>", method: "POST", path: "/fhir/Practitioner",
			headers: []string{"If-None-Exist", "family=" + bobDoctor, "Prefer", "return=representation"},
			body:    `{"resourceType":"Practitioner","name":[{"family":"Someone"}]}`, want: harmless(200, 201, 412, 422)},
		{name: "transaction: ifNoneExist code=<bob-only code>", method: "POST", path: "/fhir",
			headers: []string{"Prefer", "return=representation"},
			body: `{"resourceType":"Bundle","type":"transaction","entry":[{"resource":` + obsAbout("Patient/{alice}") +
				`,"request":{"method":"POST","url":"Observation","ifNoneExist":"code=http://loinc.org|{bobOnlyCode}"}}]}`,
			want: harmless(200, 412, 422)},
		{name: "batch: ifNoneExist _id=<bob's Observation>", method: "POST", path: "/fhir",
			body: `{"resourceType":"Bundle","type":"batch","entry":[{"resource":` + obsAbout("Patient/{alice}") +
				`,"request":{"method":"POST","url":"Observation","ifNoneExist":"_id={bobObs}"}}]}`,
			want: harmless(200, 412, 422)},
		{name: "batch: ifNoneExist on a Practitioner by bob's doctor's name", method: "POST", path: "/fhir",
			body: `{"resourceType":"Bundle","type":"batch","entry":[{"resource":{"resourceType":"Practitioner","name":[{"family":"Other"}]}` +
				`,"request":{"method":"POST","url":"Practitioner","ifNoneExist":"family=` + bobDoctor + `"}}]}`,
			want: harmless(200, 412, 422)},

		{name: "DELETE Observation?code=<a code both have>: confined, it deletes alice's own and nothing of bob's", on: shared,
			method: "DELETE", path: "/fhir/Observation?code=http://loinc.org|{sharedCode}", want: harmless(200, 204, 404)},

		// --- Record creation goes through the ownership rules ------------------------------------------
		{name: "record created with a Patient linked to bob's Patient", host: "apex", method: "POST", path: "/pfr/v1/records",
			body: record(`{"resourceType":"Patient","link":[{"other":{"reference":"Patient/{bob}"},"type":"seealso"}]}`), want: unprocessable},
		{name: "record created with bob's doctor as general practitioner", host: "apex", method: "POST", path: "/pfr/v1/records",
			body: record(`{"resourceType":"Patient","generalPractitioner":[{"reference":"Practitioner/{bobPract}"}]}`), want: unprocessable},
		{name: "record created with bob's Patient by absolute URL", host: "apex", method: "POST", path: "/pfr/v1/records",
			body: record(`{"resourceType":"Patient","link":[{"other":{"reference":"{bobBase}/Patient/{bob}"},"type":"refer"}]}`), want: unprocessable},
		{name: "record created with a contained Patient", host: "apex", method: "POST", path: "/pfr/v1/records",
			body: record(`{"resourceType":"Patient","contained":[{"resourceType":"Patient","id":"x"}],"link":[{"other":{"reference":"#x"}}]}`), want: unprocessable},
		{name: "record created with a Patient holding 1e999", host: "apex", method: "POST", path: "/pfr/v1/records",
			body: record(`{"resourceType":"Patient","extension":[{"url":"x","valueDecimal":1e999}]}`), want: badRequest},
		{name: "record created with a Patient with repeated members", host: "apex", method: "POST", path: "/pfr/v1/records",
			body: record(`{"resourceType":"Patient","link":[],"link":[{"other":{"reference":"Patient/{bob}"}}]}`), want: badRequest},

		// --- Token malleability ---------------------------------------------------------------------
		{name: "alice's token with unused bits of the signature set", as: "alice-malleable", method: "GET",
			path: "/fhir/Patient/{alice}", want: unauthorized},

		// --- Scopes apply to every resource returned --------------------------------------------------
		{name: "Observation-only token: _include of the performer", as: "alice-obs-only", method: "GET",
			path: "/fhir/Observation?_include=Observation:performer", want: harmless(200), check: onlyTypes("Observation")},
		{name: "Observation-only token: _include of the subject", as: "alice-obs-only", method: "GET",
			path: "/fhir/Observation?_include=Observation:subject", want: harmless(200), check: onlyTypes("Observation")},
		{name: "Observation-only token: _include=*", as: "alice-obs-only", method: "GET",
			path: "/fhir/Observation?_include=*", want: harmless(200, 400), check: onlyTypes("Observation")},
		{name: "Observation-only token: GET Observation/_search with _include", as: "alice-obs-only", method: "GET",
			path: "/fhir/Observation/_search?_include=Observation:performer", want: harmless(200), check: onlyTypes("Observation")},
		{name: "Observation-only token: batch search with _include of the performer", as: "alice-obs-only", method: "POST", path: "/fhir",
			body: bundle("batch", entry("", "GET", "Observation?_include=Observation:performer", "")), want: harmless(200, 403), check: onlyTypes("Observation")},
		{name: "Observation-only token: system history", as: "alice-obs-only", method: "GET",
			path: "/fhir/_history", want: harmless(200, 403), check: onlyTypes("Observation")},
		{name: "Observation-only token: reads a Practitioner", as: "alice-obs-only", method: "GET", path: "/fhir/Practitioner", want: forbidden},
		{name: "Patient-only token: _revinclude of Observations and Conditions", as: "alice-patient-only", method: "GET",
			path: "/fhir/Patient?_revinclude=Observation:subject&_revinclude=Condition:subject", want: harmless(200), check: onlyTypes("Patient")},
		{name: "Patient-only token: _revinclude=*", as: "alice-patient-only", method: "GET",
			path: "/fhir/Patient?_revinclude=*", want: harmless(200, 400), check: onlyTypes("Patient")},
		{name: "Patient-only token: $everything", as: "alice-patient-only", method: "GET",
			path: "/fhir/Patient/{alice}/$everything", want: harmless(200, 403), check: onlyTypes("Patient")},
		{name: "Patient-only token: batch with a search of Observations", as: "alice-patient-only", method: "POST", path: "/fhir",
			body: bundle("batch", entry("", "GET", "Observation", "")), want: forbidden},
		{name: "lab-only token: has-member brings in a vital sign", as: "alice-lab-only", method: "GET",
			path: "/fhir/Observation?category=laboratory&_include=Observation:has-member", want: harmless(200), check: onlyCategory("laboratory")},
		{name: "lab-only token: _include of the performer from a lab search", as: "alice-lab-only", method: "GET",
			path: "/fhir/Observation?category=laboratory&_include=Observation:performer&_include:iterate=Observation:has-member",
			want: harmless(200), check: onlyCategory("laboratory")},
		{name: "lab-only token: batch search with has-member", as: "alice-lab-only", method: "POST", path: "/fhir",
			body: bundle("batch", entry("", "GET", "Observation?category=laboratory&_include=Observation:has-member", "")),
			want: harmless(200, 403), check: onlyCategory("laboratory")},
		{name: "lab-only token: search without the category", as: "alice-lab-only", method: "GET", path: "/fhir/Observation", want: forbidden},

		// --- Answers that were not FHIR, and routes the gateway and the store disagreed on ------------
		{name: "GET Observation/_search (the store answered 405)", method: "GET",
			path: "/fhir/Observation/_search?subject=Patient/{bob}", want: harmless(200), check: countsNothing},
		{name: "batch: GET Observation?_include=... (one _include rule with plain searches)", method: "POST", path: "/fhir",
			body: bundle("batch", entry("", "GET", "Observation?_include=Observation:performer", "")), want: harmless(200)},
		// The gateway checks FHIR JSON only, so it speaks JSON only: an
		// answer in XML would reach the client unchecked (HAPI serves XML).
		{name: "search asking for XML through _format", method: "GET", path: "/fhir/Observation?_format=xml", want: refused(406)},
		{name: "search asking for FHIR XML through Accept", method: "GET", path: "/fhir/Observation",
			headers: []string{"Accept", "application/fhir+xml"}, want: refused(406)},
		{name: "read of bob's Patient asking for XML", method: "GET", path: "/fhir/Patient/{bob}?_format=application/fhir%2Bxml", want: refused(404, 406)},
		{name: "$everything asking for XML", method: "GET", path: "/fhir/Patient/{alice}/$everything",
			headers: []string{"Accept", "application/xml+fhir"}, want: refused(406)},
		{name: "search with _format=json and other parameters (the upstream gets JSON)", method: "GET",
			path: "/fhir/Observation?_format=json&subject=Patient/{bob}", want: harmless(200), check: countsNothing},
		// Go's net/http answers a Host it cannot parse before Caddy runs
		// (README, "Errors are OperationOutcomes"): a plain 400, no data.
		{name: "a malformed Host header (a space)", method: "GET", target: "/fhir/metadata", hostHeader: "alice home", want: limited(400)},
		{name: "a Host header with two ports (parses; no such record)", method: "GET", target: "/fhir/metadata", hostHeader: "{aliceHost}:1", want: refused(400, 404)},
		{name: "a Host header naming an unknown record", method: "GET", target: "/fhir/Patient", hostHeader: "nobody-home.pfr.localhost", want: notFound},
		// _elements and _summary cut the resources down after they are
		// judged whole: her own come back shaped (an Observation without its
		// subject was dropped as unprovable before), bob's never.
		{name: "search with _elements=code: her own Observations, shaped", method: "GET", path: "/fhir/Observation?_elements=code&_count=1000",
			want: harmless(200), check: shapedOwn("aliceObs", "code")},
		{name: "search with _summary=text: her own Observations, shaped", method: "GET", path: "/fhir/Observation?_summary=text&_count=1000",
			want: harmless(200), check: shapedOwn("aliceObs", "text", "status", "code")},
		// (On the shared upstream an earlier row deleted her Observation.)
		{name: "read with _elements=code: her own Observation, shaped", method: "GET", path: "/fhir/Observation/{aliceObs}?_elements=code",
			want: harmless(200), wantShared: &gone410, check: shapedOwn("aliceObs", "code")},
		{name: "read with _elements=gender: her own Patient, shaped", method: "GET", path: "/fhir/Patient/{alice}?_elements=gender",
			want: harmless(200), check: shapedOwn("alice", "gender")},
		{name: "read of bob's Observation with _elements=code", method: "GET", path: "/fhir/Observation/{bobObs}?_elements=code", want: notFound},
		{name: "search for bob's Observations by subject with _elements=code", method: "GET",
			path: "/fhir/Observation?subject=Patient/{bob}&_elements=code&_count=1000", want: harmless(200), check: countsNothing},
		{name: "_elements with an invalid element name", method: "GET", path: "/fhir/Observation?_elements=code.text", want: badRequest},
		{name: "_summary with an invalid value", method: "GET", path: "/fhir/Observation?_summary=everything", want: badRequest},
	}
}

// gone410 is the answer to a read of a resource deleted before.
var gone410 = refused(410)

// shapedOwn checks a 200 answer: a read holds the resource named by the
// world variable v, a searchset at least one match; each match holds no
// top-level element but resourceType, id, meta and those named, and is
// marked SUBSETTED; a searchset's links keep asking for the same shape.
// Other statuses are judged by the attack's want.
func shapedOwn(v string, elements ...string) func(*world, response) string {
	return func(w *world, r response) string {
		if r.Status != 200 {
			return ""
		}
		matches := []map[string]any{r.Body}
		if r.Body["resourceType"] == "Bundle" {
			matches = nil
			entries, _ := r.Body["entry"].([]any)
			for _, e := range entries {
				em, _ := e.(map[string]any)
				search, _ := em["search"].(map[string]any)
				if res, _ := em["resource"].(map[string]any); res != nil && (search["mode"] == nil || search["mode"] == "match") {
					matches = append(matches, res)
				}
			}
			links, _ := r.Body["link"].([]any)
			for _, l := range links {
				lm, _ := l.(map[string]any)
				if u, _ := lm["url"].(string); !strings.Contains(u, "_elements=") && !strings.Contains(u, "_summary=") {
					return fmt.Sprintf("link %v lost the shaping parameters", lm)
				}
			}
		}
		found := r.Body["resourceType"] == "Bundle" && len(matches) > 0
		for _, res := range matches {
			if res["id"] == w.vars[v] {
				found = true
			}
			for key := range res {
				if key != "resourceType" && key != "id" && key != "meta" && !slices.Contains(elements, key) {
					return fmt.Sprintf("%v/%v keeps %s", res["resourceType"], res["id"], key)
				}
			}
			if !strings.Contains(fmt.Sprint(res["meta"]), "SUBSETTED") {
				return fmt.Sprintf("%v/%v is not marked SUBSETTED", res["resourceType"], res["id"])
			}
		}
		if !found {
			return fmt.Sprintf("her own %s (%s) is missing, or no match at all (%d)", v, w.vars[v], len(matches))
		}
		return ""
	}
}

// namesPath checks that a refusal names path in its OperationOutcome.
func namesPath(path string) func(*world, response) string {
	return func(_ *world, r response) string {
		if !strings.Contains(string(r.Raw), path) {
			return fmt.Sprintf("the refusal does not name the path %s", path)
		}
		return ""
	}
}

// resources returns every resource of a 200 Bundle answer, the entries of
// Bundles nested in a batch answer included.
func resources(body map[string]any) []map[string]any {
	var out []map[string]any
	entries, _ := body["entry"].([]any)
	for _, e := range entries {
		em, _ := e.(map[string]any)
		res, _ := em["resource"].(map[string]any)
		if res == nil {
			continue
		}
		if res["resourceType"] == "Bundle" {
			out = append(out, resources(res)...)
			continue
		}
		out = append(out, res)
	}
	return out
}

// onlyTypes checks that an answer carries resources of the given types
// only (and OperationOutcomes).
func onlyTypes(types ...string) func(*world, response) string {
	return func(_ *world, r response) string {
		if r.Status != http.StatusOK {
			return ""
		}
		for _, res := range resources(r.Body) {
			typ, _ := res["resourceType"].(string)
			if typ != "OperationOutcome" && !slices.Contains(types, typ) {
				return fmt.Sprintf("the answer carries a %s, outside the token's scopes (%v)", typ, types)
			}
		}
		return ""
	}
}

// onlyCategory checks that every Observation of an answer has the category
// code, and that nothing but Observations is in it.
func onlyCategory(code string) func(*world, response) string {
	return func(w *world, r response) string {
		if p := onlyTypes("Observation")(w, r); p != "" {
			return p
		}
		for _, res := range resources(r.Body) {
			if res["resourceType"] == "Observation" && !strings.Contains(fmt.Sprint(res["category"]), code) {
				return fmt.Sprintf("Observation/%v is outside category %s", res["id"], code)
			}
		}
		return ""
	}
}
