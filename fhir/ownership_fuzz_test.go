package fhir

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// fuzzOwner is the PFR of the fuzz target: its Patient is "me", so that no
// reference naming "Patient/other" can ever be its own.
var fuzzOwner = Owner{PatientID: "me", Bases: []string{"https://me.pfr.localhost/fhir"}}

// otherPatientForms are the spellings FuzzCheckBundle writes into a Bundle
// to aim one of its references at another Patient.
var otherPatientForms = []string{
	"Patient/other",
	"Patient/other/_history/1",
	"https://me.pfr.localhost/fhir/Patient/other",
	"http://elsewhere.example/fhir/Patient/other",
	"Patient/otherwise",
	"patient/other",
	"Patient/other/",
	"Patient/other?x=1",
	"#Patient/other",
}

// FuzzCheckBundle checks that CheckBundle never panics on any JSON, never
// accepts a Bundle one of whose resources has a reference naming
// "patient/other" (case-insensitive), and refuses every Bundle after one of
// its references, chosen by pick, is replaced by a spelling of another
// Patient chosen by form. The seeds are small Bundles made from real
// entries (testdata/fuzz/FuzzCheckBundle, written by TestFuzzSeeds).
func FuzzCheckBundle(f *testing.F) {
	p := DefaultOwnershipPolicy()
	f.Fuzz(func(t *testing.T, data []byte, pick, form uint16) {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		var bundle map[string]any
		if dec.Decode(&bundle) != nil || bundle == nil {
			return
		}
		issues := fuzzOwner.CheckBundle(bundle, p)
		if len(issues) == 0 && slices.ContainsFunc(entryReferences(bundle), func(m map[string]any) bool {
			ref, _ := m["reference"].(string)
			return strings.Contains(strings.ToLower(ref), "patient/other")
		}) {
			t.Fatalf("accepted a Bundle referencing another Patient: %s", data)
		}
		refs := entryReferences(bundle)
		if len(refs) == 0 {
			return
		}
		target := refs[int(pick)%len(refs)]
		target["reference"] = otherPatientForms[int(form)%len(otherPatientForms)]
		if len(fuzzOwner.CheckBundle(bundle, p)) == 0 {
			t.Fatalf("accepted after aiming a reference at %q: %s", target["reference"], data)
		}
	})
}

// entryReferences returns every object holding a string "reference" in the
// resources of bundle's entries, in a stable order.
func entryReferences(bundle map[string]any) []map[string]any {
	var out []map[string]any
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if _, ok := v["reference"].(string); ok {
				out = append(out, v)
			}
			keys := make([]string, 0, len(v))
			for k := range v {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			for _, k := range keys {
				walk(v[k])
			}
		case []any:
			for _, item := range v {
				walk(item)
			}
		}
	}
	entries, _ := bundle["entry"].([]any)
	for _, e := range entries {
		if m, ok := e.(map[string]any); ok {
			walk(m["resource"])
		}
	}
	return out
}

// fuzzSeeds returns the seed Bundles, by name: small Bundles made of the
// first entries of each kind of a Synthea Bundle aimed at fuzzOwner, and
// hand-written ones around the rules' edges.
func fuzzSeeds(t *testing.T) map[string][]byte {
	data, err := os.ReadFile("../testdata/fhir/synthea/Ned_Hintz_e4b9259d-0f54-48d1-a35d-b526729a4dfe.json")
	if err != nil {
		t.Fatal(err)
	}
	synthea := testkit.DecodeFHIR(t, data)
	aimAt(t, synthea, fuzzOwner.PatientID)
	byType := map[string]any{}
	var picked []any
	for _, raw := range synthea["entry"].([]any) {
		e := raw.(map[string]any)
		res := e["resource"].(map[string]any)
		typ := res["resourceType"].(string)
		if byType[typ] != nil {
			continue
		}
		delete(res, "text")
		byType[typ] = e
		picked = append(picked, e)
	}
	// A seed holds a few entries: a reference to an entry left out becomes
	// a relative reference to that resource, as if written before.
	typeByURL := map[string]string{}
	for _, raw := range synthea["entry"].([]any) {
		e := raw.(map[string]any)
		typeByURL[e["fullUrl"].(string)] = e["resource"].(map[string]any)["resourceType"].(string)
	}
	marshal := func(typ string, entries []any) []byte {
		b, err := json.Marshal(map[string]any{"resourceType": "Bundle", "type": typ, "entry": entries})
		if err != nil {
			t.Fatal(err)
		}
		bundle := testkit.DecodeFHIR(t, b)
		present := map[string]bool{}
		for _, e := range bundle["entry"].([]any) {
			present[e.(map[string]any)["fullUrl"].(string)] = true
		}
		for _, m := range entryReferences(bundle) {
			ref := m["reference"].(string)
			if typ, ok := typeByURL[ref]; ok && !present[ref] {
				m["reference"] = typ + "/" + strings.TrimPrefix(ref, "urn:uuid:")
			}
		}
		b, err = json.Marshal(bundle)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	seeds := map[string][]byte{
		"synthea-one-of-each": marshal("transaction", picked),
	}
	for _, types := range [][]string{
		{"Patient", "Organization", "Practitioner", "Encounter"},
		{"Patient", "Encounter", "Observation"},
		{"Patient", "Encounter", "Claim"},
	} {
		var entries []any
		for _, typ := range types {
			entries = append(entries, byType[typ])
		}
		seeds["synthea-"+strings.Join(types, "-")] = marshal("batch", entries)
	}
	me := `{"resourceType":"Patient","id":"me"}`
	seeds["contained-and-extensions"] = []byte(`{"resourceType":"Bundle","type":"transaction","entry":[` +
		`{"fullUrl":"` + urnSelf + `","resource":` + me + `,"request":{"method":"PUT","url":"Patient/me"}},` +
		`{"resource":{"resourceType":"Observation","status":"final","code":{"text":"x"},` +
		`"contained":[{"resourceType":"Practitioner","id":"pr"}],"performer":[{"reference":"#pr"}],` +
		`"subject":{"reference":"` + urnSelf + `"},` +
		`"extension":[{"url":"http://x","valueReference":{"reference":"https://me.pfr.localhost/fhir/Patient/me"}}]},` +
		`"request":{"method":"POST","url":"Observation","ifNoneExist":"identifier=http://x|1"}}]}`)
	seeds["reads-deletes-conditionals"] = []byte(`{"resourceType":"Bundle","type":"batch","entry":[` +
		`{"request":{"method":"GET","url":"Observation?patient=Patient/me&code=1"}},` +
		`{"request":{"method":"DELETE","url":"Observation?identifier=1"}},` +
		`{"resource":{"resourceType":"Condition","id":"c1","subject":{"reference":"Patient/me/_history/2"}},"request":{"method":"PUT","url":"Condition/c1"}}]}`)
	seeds["nested-collection"] = []byte(`{"resourceType":"Bundle","type":"transaction","entry":[` +
		`{"resource":{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Observation","subject":{"reference":"Patient/me"}}}]},` +
		`"request":{"method":"POST","url":"Bundle"}}]}`)
	return seeds
}

// TestFuzzSeeds checks that the seed corpus of FuzzCheckBundle is the one
// fuzzSeeds makes and that its Synthea seeds are accepted, so that the
// fuzz target's mutation turns an accepted Bundle into a refused one.
// Run with PFR_WRITE_FUZZ_SEEDS=1 to rewrite the corpus.
func TestFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzCheckBundle")
	seeds := fuzzSeeds(t)
	for name, data := range seeds {
		issues := fuzzOwner.CheckBundle(testkit.DecodeFHIR(t, data), DefaultOwnershipPolicy())
		if wantOK := strings.HasPrefix(name, "synthea") || name == "contained-and-extensions" || name == "reads-deletes-conditionals"; wantOK != (len(issues) == 0) {
			t.Errorf("seed %s: issues %+v", name, issues)
		}
		file := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\nuint16(%d)\nuint16(%d)\n", strconv.Quote(string(data)), len(name), len(name)/3)
		path := filepath.Join(dir, name)
		if os.Getenv("PFR_WRITE_FUZZ_SEEDS") == "1" {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(file), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != file {
			t.Errorf("seed %s is missing or stale (%v): run PFR_WRITE_FUZZ_SEEDS=1 go test ./fhir -run TestFuzzSeeds", path, err)
		}
	}
}
