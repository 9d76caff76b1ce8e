package fhir

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

const (
	urnSelf  = "urn:uuid:11111111-1111-1111-1111-111111111111"
	urnOther = "urn:uuid:22222222-2222-2222-2222-222222222222"
	urnObs   = "urn:uuid:33333333-3333-3333-3333-333333333333"
)

// selfEntry writes the PFR's Patient under urnSelf.
const selfEntry = `{"fullUrl":"` + urnSelf + `","resource":{"resourceType":"Patient","id":"pfr-john"},"request":{"method":"PUT","url":"Patient/pfr-john"}}`

// txn returns a transaction Bundle of the given entries.
func txn(entries ...string) string {
	return `{"resourceType":"Bundle","type":"transaction","entry":[` + strings.Join(entries, ",") + `]}`
}

// post returns an entry creating res.
func post(res string) string {
	return `{"resource":` + res + `,"request":{"method":"POST","url":"` + typeOf(res) + `"}}`
}

// entry returns an entry with a request and an optional resource.
func entry(method, url, res string) string {
	if res == "" {
		return `{"request":{"method":"` + method + `","url":"` + url + `"}}`
	}
	return `{"resource":` + res + `,"request":{"method":"` + method + `","url":"` + url + `"}}`
}

func typeOf(res string) string {
	_, rest, _ := strings.Cut(res, `"resourceType":"`)
	typ, _, _ := strings.Cut(rest, `"`)
	return typ
}

func TestCheckBundle(t *testing.T) {
	ownObs := subj(urnSelf)
	tests := []struct {
		name   string
		bundle string
		ok     bool
		expr   string // when refused, an expression one issue must carry
	}{
		{"own Patient and Observation by urn", txn(selfEntry, post(ownObs)), true, ""},
		{"batch", strings.Replace(txn(selfEntry, post(ownObs)), "transaction", "batch", 1), true, ""},
		{"Observation by relative reference", txn(post(subj("Patient/pfr-john"))), true, ""},
		{"update by id", txn(entry("PUT", "Observation/o1", obs(`"id":"o1",`+self))), true, ""},
		{"leading slash", txn(entry("PUT", "/Observation/o1", obs(`"id":"o1",`+self))), true, ""},
		{"conditional update", txn(entry("PUT", "Observation?identifier=http://x|1", obs(self))), true, ""},
		{"conditional update naming self", txn(entry("PUT", "Observation?patient=pfr-john&code=1", obs(self))), true, ""},
		{"conditional create", txn(`{"resource":` + obs(self) + `,"request":{"method":"POST","url":"Observation","ifNoneExist":"identifier=http://x|1"}}`), true, ""},
		{"conditional create with type", txn(`{"resource":` + obs(self) + `,"request":{"method":"POST","url":"Observation","ifNoneExist":"Observation?identifier=1"}}`), true, ""},
		{"delete Observation", txn(entry("DELETE", "Observation/o1", "")), true, ""},
		{"conditional delete", txn(entry("DELETE", "Observation?identifier=1", "")), true, ""},
		{"read own Patient", txn(entry("GET", "Patient/pfr-john", "")), true, ""},
		{"search", txn(entry("GET", "Observation?code=1&patient=Patient/pfr-john", "")), true, ""},
		{"history", txn(entry("GET", "Observation/o1/_history/2", "")), true, ""},
		{"empty Bundle", txn(), true, ""},

		{"urn of another Patient in the same Bundle", txn(selfEntry,
			`{"fullUrl":"`+urnOther+`","resource":{"resourceType":"Patient","id":"other"},"request":{"method":"PUT","url":"Patient/other"}}`,
			post(subj(urnOther))), false, "Bundle.entry[2].resource.subject"},
		{"urn of a created Patient", txn(
			`{"fullUrl":"`+urnOther+`","resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient"}}`,
			post(subj(urnOther))), false, "Bundle.entry[1].resource.subject"},
		{"create Patient", txn(post(`{"resourceType":"Patient","id":"pfr-john"}`)), false, "Bundle.entry[0].request.url"},
		{"update other Patient", txn(entry("PUT", "Patient/other", `{"resourceType":"Patient","id":"other"}`)), false, "Bundle.entry[0].request.url"},
		{"update own Patient with other id", txn(entry("PUT", "Patient/pfr-john", `{"resourceType":"Patient","id":"other"}`)), false, "Bundle.entry[0].request.url"},
		{"conditional update of Patient", txn(entry("PUT", "Patient?identifier=1", `{"resourceType":"Patient","id":"pfr-john"}`)), false, "Bundle.entry[0].request.url"},
		{"delete own Patient", txn(entry("DELETE", "Patient/pfr-john", "")), false, "Bundle.entry[0].request.url"},
		{"delete other Patient", txn(entry("DELETE", "Patient/other", "")), false, "Bundle.entry[0].request.url"},
		{"conditional delete of Patients", txn(entry("DELETE", "Patient?name=x", "")), false, "Bundle.entry[0].request.url"},
		{"read other Patient", txn(entry("GET", "Patient/other", "")), false, "Bundle.entry[0].request.url"},
		{"read other Patient history", txn(entry("GET", "Patient/other/_history/1", "")), false, "Bundle.entry[0].request.url"},
		{"search other Patient's data", txn(entry("GET", "Observation?patient=other", "")), false, "Bundle.entry[0].request.url"},
		{"search with _include (filtered like a plain search)", txn(entry("GET", "Observation?_include=Observation:patient", "")), true, ""},
		{"conditional delete with _include", txn(entry("DELETE", "Observation?code=1&_include=Observation:patient", "")), false, "Bundle.entry[0].request.url"},
		{"search with _has", txn(entry("GET", "Patient?_has:Observation:patient:code=1", "")), false, "Bundle.entry[0].request.url"},
		{"search chained", txn(entry("GET", "Observation?subject.name=x", "")), false, "Bundle.entry[0].request.url"},
		{"everything of self", txn(entry("GET", "Patient/pfr-john/$everything", "")), false, "Bundle.entry[0].request.url"},

		{"absolute url own base", txn(entry("POST", "https://john.pfr.localhost:8443/fhir/Observation", obs(self))), false, "Bundle.entry[0].request.url"},
		{"absolute url other host", txn(entry("POST", "http://evil.example/fhir/Observation", obs(self))), false, "Bundle.entry[0].request.url"},
		{"protocol-relative url", txn(entry("POST", "//evil.example/fhir/Observation", obs(self))), false, "Bundle.entry[0].request.url"},
		{"dot dot", txn(entry("DELETE", "Observation/../Patient/pfr-john", "")), false, "Bundle.entry[0].request.url"},
		{"leading dot dot", txn(entry("POST", "../Observation", obs(self))), false, "Bundle.entry[0].request.url"},
		{"encoded slash", txn(entry("DELETE", "Observation%2Fo1", "")), false, "Bundle.entry[0].request.url"},
		{"encoded dots", txn(entry("DELETE", "Observation/%2e%2e/Patient/pfr-john", "")), false, "Bundle.entry[0].request.url"},
		{"backslash", txn(entry("DELETE", `Observation\\o1`, "")), false, "Bundle.entry[0].request.url"},
		{"trailing slash", txn(entry("PUT", "Observation/o1/", obs(`"id":"o1",`+self))), false, "Bundle.entry[0].request.url"},
		{"empty url", txn(entry("POST", "", obs(self))), false, "Bundle.entry[0].request.url"},
		{"unknown type", txn(entry("POST", "Observatoin", `{"resourceType":"Observatoin"}`)), false, "Bundle.entry[0].request.url"},
		{"type mismatch", txn(entry("POST", "Condition", obs(self))), false, "Bundle.entry[0].request.url"},
		{"post with id", txn(entry("POST", "Observation/o1", obs(self))), false, "Bundle.entry[0].request.url"},
		{"put id mismatch", txn(entry("PUT", "Observation/o1", obs(`"id":"o2",`+self))), false, "Bundle.entry[0].request.url"},
		{"conditional update of other type", txn(entry("PUT", "Condition?identifier=1", obs(self))), false, "Bundle.entry[0].request.url"},
		{"conditional create on other type", txn(`{"resource":` + obs(self) + `,"request":{"method":"POST","url":"Observation","ifNoneExist":"Condition?identifier=1"}}`), false, "Bundle.entry[0].request.url"},
		{"conditional create naming other", txn(`{"resource":` + obs(self) + `,"request":{"method":"POST","url":"Observation","ifNoneExist":"subject=Patient/other"}}`), false, "Bundle.entry[0].request.url"},
		{"empty conditional delete", txn(entry("DELETE", "Observation?", "")), false, "Bundle.entry[0].request.url"},
		{"conditional delete unknown parameter", txn(entry("DELETE", "Observation?nosuch=1", "")), false, "Bundle.entry[0].request.url"},
		{"conditional delete of other's data", txn(entry("DELETE", "Observation?subject=Patient/other", "")), false, "Bundle.entry[0].request.url"},
		{"conditional delete by bare id", txn(entry("DELETE", "Observation?patient=other", "")), false, "Bundle.entry[0].request.url"},
		{"conditional delete by typed modifier", txn(entry("DELETE", "Observation?subject:Patient=other", "")), false, "Bundle.entry[0].request.url"},
		{"conditional delete by identifier", txn(entry("DELETE", "Observation?subject:identifier=http://x|1", "")), false, "Bundle.entry[0].request.url"},
		{"conditional delete other server", txn(entry("DELETE", "Observation?subject=http://elsewhere/Patient/1", "")), false, "Bundle.entry[0].request.url"},
		{"conditional delete reverse chain", txn(entry("DELETE", "Observation?_has:Observation:has-member:code=1", "")), false, "Bundle.entry[0].request.url"},
		{"operation", txn(entry("POST", "Observation/$validate", obs(self))), false, "Bundle.entry[0].request.url"},
		{"PATCH", txn(entry("PATCH", "Observation/o1", `{"resourceType":"Binary","contentType":"application/json-patch+json"}`)), false, "Bundle.entry[0].request.method"},
		{"unknown method", txn(entry("PURGE", "Observation/o1", "")), false, "Bundle.entry[0].request.method"},
		{"no request", txn(`{"resource":` + obs(self) + `}`), false, "Bundle.entry[0].request"},
		{"entry not an object", txn(`"x"`), false, "Bundle.entry[0]"},
		{"resource not an object", txn(`{"resource":"x","request":{"method":"POST","url":"Observation"}}`), false, "Bundle.entry[0].resource"},
		{"post without resource", txn(entry("POST", "Observation", "")), false, "Bundle.entry[0].resource"},
		{"delete with resource", txn(entry("DELETE", "Observation/o1", obs(self))), false, "Bundle.entry[0].resource"},
		{"resource of other Patient", txn(post(subj("Patient/other"))), false, "Bundle.entry[0].resource.subject"},
		{"resource without owner", txn(selfEntry, post(obs(""))), false, "Bundle.entry[1].resource"},
		{"Group subject", txn(post(subj("Group/g1"))), false, "Bundle.entry[0].resource.subject"},
		{"nested collection Bundle", txn(post(`{"resourceType":"Bundle","type":"collection","entry":[{"resource":` + subj("Patient/other") + `}]}`)), false, "Bundle.entry[0].resource.entry[0].resource.subject"},
		{"nested transaction Bundle", txn(post(txn(selfEntry))), false, "Bundle.entry[0].resource"},
		{"duplicate fullUrl", txn(selfEntry,
			`{"fullUrl":"`+urnSelf+`","resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient"}}`,
			post(subj(urnSelf))), false, "Bundle.entry[1].fullUrl"},
		{"malformed urn fullUrl", txn(
			`{"fullUrl":"urn:uuid:Patient/pfr-john","resource":{"resourceType":"Patient","id":"pfr-john"},"request":{"method":"PUT","url":"Patient/pfr-john"}}`,
			post(subj("urn:uuid:Patient/pfr-john"))), false, "Bundle.entry[0].fullUrl"},
		{"urn of a DELETE entry", txn(`{"fullUrl":"`+urnObs+`","request":{"method":"DELETE","url":"Observation/o1"}}`,
			post(obs(self+`,"hasMember":[{"reference":"`+urnObs+`"}]`))), false, "Bundle.entry[1].resource.hasMember[0]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			issues := testOwner.CheckBundle(testkit.DecodeFHIR(t, []byte(tc.bundle)), DefaultOwnershipPolicy())
			if tc.ok {
				if len(issues) != 0 {
					t.Fatalf("refused: %+v", issues)
				}
				return
			}
			if len(issues) == 0 {
				t.Fatal("accepted")
			}
			if !slices.ContainsFunc(issues, func(is Issue) bool { return slices.Contains(is.Expression, tc.expr) }) {
				t.Errorf("no issue at %q: %+v", tc.expr, issues)
			}
		})
	}
}

func TestCheckBundleNotTransaction(t *testing.T) {
	for _, b := range []string{
		`{"resourceType":"Bundle","type":"document","entry":[]}`,
		`{"resourceType":"Bundle","type":"collection"}`,
		`{"resourceType":"Bundle"}`,
		`{"resourceType":"Observation","type":"transaction"}`,
		`{"resourceType":"Bundle","type":"transaction","entry":{}}`,
	} {
		if len(testOwner.CheckBundle(testkit.DecodeFHIR(t, []byte(b)), DefaultOwnershipPolicy())) == 0 {
			t.Errorf("accepted %s", b)
		}
	}
}

// TestCheckBundleSpecExamples runs the official examples: the batch of
// reads for Patient "example" passes for a PFR whose Patient is
// "example" and nowhere else; the transaction example, which creates
// Patients and deletes others, is refused.
func TestCheckBundleSpecExamples(t *testing.T) {
	read := func(name string) map[string]any {
		data, err := os.ReadFile("../testdata/fhir/spec/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return testkit.DecodeFHIR(t, data)
	}
	batch := read("Bundle-bundle-request-medsallergies.json")
	example := Owner{PatientID: "example"}
	if issues := example.CheckBundle(batch, DefaultOwnershipPolicy()); len(issues) != 0 {
		t.Errorf("batch for example refused: %+v", issues)
	}
	issues := testOwner.CheckBundle(batch, DefaultOwnershipPolicy())
	if got := entryIndexes(issues); len(got) != 5 {
		t.Errorf("batch aimed at another Patient: entries named %v, want all 5", got)
	}
	issues = testOwner.CheckBundle(read("Bundle-bundle-transaction.json"), DefaultOwnershipPolicy())
	for _, i := range []int{0, 1, 2, 3, 4, 5, 6, 7, 9} {
		if !entryIndexes(issues)[i] {
			t.Errorf("transaction example entry %d not refused", i)
		}
	}
}

func TestCheckWrite(t *testing.T) {
	p := DefaultOwnershipPolicy()
	tests := []struct {
		method, target, ifNoneExist, res string
		ok                               bool
	}{
		{"POST", "Observation", "", subj("Patient/pfr-john"), true},
		{"POST", "Observation", "identifier=1", subj("Patient/pfr-john"), true},
		{"POST", "Observation", "patient=other", subj("Patient/pfr-john"), false},
		{"POST", "Observation", "", subj("Patient/other"), false},
		{"POST", "Patient", "", `{"resourceType":"Patient","id":"pfr-john"}`, false},
		{"PUT", "Patient/pfr-john", "", `{"resourceType":"Patient","id":"pfr-john"}`, true},
		{"PUT", "Patient/other", "", `{"resourceType":"Patient","id":"other"}`, false},
		{"PUT", "Observation?identifier=1", "", subj("Patient/pfr-john"), true},
		{"PATCH", "Observation/o1", "", obs(`"id":"o1",` + self), true},
		{"PATCH", "Observation/o1", "", obs(`"id":"o2",` + self), false},
		{"PATCH", "Patient/pfr-john", "", `{"resourceType":"Patient","id":"pfr-john","link":[{"type":"seealso","other":{"reference":"Patient/other"}}]}`, false},
		{"DELETE", "Observation/o1", "", "", true},
		{"DELETE", "Patient/pfr-john", "", "", false},
		{"POST", "Observation", "", "", false},
		{"GET", "Observation", "", subj("Patient/pfr-john"), false},
		{"POST", "Observation?_format=json&_pretty=true", "", subj("Patient/pfr-john"), true},
		{"PUT", "Observation/o1?_format=json", "", obs(`"id":"o1",` + self), true},
		{"PUT", "Observation?_format=json", "", obs(`"id":"o1",` + self), false},
		{"POST", "Observation?code=1", "", subj("Patient/pfr-john"), false},
		{"POST", "Observation?_format=%zz", "", subj("Patient/pfr-john"), false},
		{"PUT", "Observation%2Fo1", "", obs(`"id":"o1",` + self), false},
	}
	for _, tc := range tests {
		var res map[string]any
		if tc.res != "" {
			res = testkit.DecodeFHIR(t, []byte(tc.res))
		}
		issues := testOwner.CheckWrite(tc.method, tc.target, tc.ifNoneExist, res, p)
		if (len(issues) == 0) != tc.ok {
			t.Errorf("%s %s (If-None-Exist %q) %s: issues %+v", tc.method, tc.target, tc.ifNoneExist, tc.res, issues)
		}
	}
}

func TestParseRequestTarget(t *testing.T) {
	good := map[string]requestTarget{
		"Observation":                   {typ: "Observation"},
		"/Observation":                  {typ: "Observation"},
		"Observation/o1":                {typ: "Observation", id: "o1"},
		"Observation/_history":          {typ: "Observation", history: true},
		"Observation/o1/_history":       {typ: "Observation", id: "o1", history: true},
		"Observation/o1/_history/3":     {typ: "Observation", id: "o1", history: true},
		"Observation?code=1":            {typ: "Observation", query: "code=1", hasQuery: true},
		"Observation?":                  {typ: "Observation", hasQuery: true},
		"Observation?x=http://a.b/c%2F": {typ: "Observation", query: "x=http://a.b/c%2F", hasQuery: true},
	}
	for raw, want := range good {
		got, err := parseRequestTarget(raw)
		if err != nil || got != want {
			t.Errorf("%q: %+v %v, want %+v", raw, got, err, want)
		}
	}
	for _, raw := range []string{
		"", "/", "//x/Observation", "http://x/Observation", "Observation/", "Observation//o1",
		"./Observation", "Observation/.", "Observation/..", "Observation/.../x", "Observation%2Fo1",
		"Observation/o1%00", "Observation/o 1", "Observation/o1#x", "Observation\\o1",
		"Observation/o1?x=1", "Observation/_history/1", "Observation/o1/_history/1/x",
		"Observation/o1/x", "Observation/$validate", "$everything", "observation", "Observatoin/1",
		"Observation/\u00e91", "metadata", "Observation/" + strings.Repeat("a", 65),
		strings.Repeat("a", maxRequestTarget+1),
	} {
		if got, err := parseRequestTarget(raw); err == nil {
			t.Errorf("%q accepted as %+v", raw, got)
		}
	}
}
