package fhir

import (
	"encoding/json"
	"io"
	"strings"
	"testing"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// quickEntries turns every resource of the Synthea Bundles into a searchset
// entry as the gateway's filter sees it: references to the Bundle's Patient
// made relative references to the record's Patient "p1", every other
// urn:uuid made a relative reference to its resource.
func quickEntries(t *testing.T) [][]byte {
	t.Helper()
	var out [][]byte
	for _, data := range testkit.Synthea(t) {
		var b struct {
			Entry []struct {
				FullURL  string         `json:"fullUrl"`
				Resource map[string]any `json:"resource"`
			} `json:"entry"`
		}
		if err := json.Unmarshal(data, &b); err != nil {
			t.Fatal(err)
		}
		ids := map[string]string{}
		for i, e := range b.Entry {
			typ := e.Resource["resourceType"].(string)
			if typ == "Patient" {
				ids[e.FullURL] = "Patient/p1"
			} else {
				ids[e.FullURL] = typ + "/r" + strings.Repeat("0", 3) + string(rune('a'+i%26))
			}
		}
		for _, e := range b.Entry {
			// resourceType first, as FHIR servers write it.
			typ := e.Resource["resourceType"].(string)
			delete(e.Resource, "resourceType")
			res, _ := json.Marshal(e.Resource)
			res = append([]byte(`{"resourceType":"`+typ+`",`), res[1:]...)
			full, _ := json.Marshal("https://x/fhir/" + ids[e.FullURL])
			s := `{"fullUrl":` + string(full) + `,"resource":` + string(res) + `,"search":{"mode":"match"}}`
			for urn, rel := range ids {
				s = strings.ReplaceAll(s, `"`+urn+`"`, `"`+rel+`"`)
			}
			// Synthea's conditional references (Practitioner?identifier=…) become literal ones.
			s = strings.NewReplacer("Practitioner?identifier=", "Practitioner/", "Organization?identifier=", "Organization/",
				"Location?identifier=", "Location/", "|", "-").Replace(s)
			out = append(out, []byte(s))
		}
	}
	return out
}

// TestQuickBelongsAgreesWithBelongs: where QuickBelongs decides, it agrees
// with Belongs, except that it may show a resource naming only the record's
// Patient outside a compartment element; and it decides most real entries.
func TestQuickBelongsAgreesWithBelongs(t *testing.T) {
	o := Owner{PatientID: "p1", Bases: []string{"https://x/fhir"}}
	p := DefaultOwnershipPolicy()
	entries := quickEntries(t)
	decidedN := 0
	check := func(raw []byte, label string) {
		var e struct {
			Resource map[string]any `json:"resource"`
		}
		if err := json.Unmarshal(raw, &e); err != nil {
			t.Fatal(err)
		}
		_, quick, decided := o.QuickBelongs(raw, p)
		slow := o.Belongs(e.Resource, p)
		if !decided {
			return
		}
		decidedN++
		switch {
		case quick == slow:
		case quick && !slow:
			if strings.Contains(string(raw), `"Patient/`) && strings.Count(string(raw), `"Patient/p1"`) != strings.Count(string(raw), `"Patient/`) {
				t.Errorf("%s: QuickBelongs shows a resource that names another Patient: %.300s", label, raw)
			}
		default:
			t.Errorf("%s: QuickBelongs hides a resource Belongs shows: %.300s", label, raw)
		}
	}
	for _, raw := range entries {
		check(raw, "as is")
		other := strings.ReplaceAll(string(raw), `"Patient/p1"`, `"Patient/p2"`)
		if other != string(raw) {
			if _, quick, decided := o.QuickBelongs([]byte(other), p); quick && decided {
				t.Errorf("another person's resource shown: %.300s", other)
			}
			check([]byte(other), "other person")
		}
		absolute := strings.ReplaceAll(string(raw), `"Patient/p1"`, `"https://evil.example/fhir/Patient/p1"`)
		if _, quick, decided := o.QuickBelongs([]byte(absolute), p); quick && decided && absolute != string(raw) {
			t.Errorf("a reference to another server's Patient shown: %.300s", absolute)
		}
	}
	if decidedN < len(entries)/2 {
		t.Errorf("QuickBelongs decided %d of %d real entries; it should spare most of them the decoding", decidedN, len(entries))
	}
	for _, raw := range []string{
		`{"resource":{"resourceType":"Observation","subject":{"reference":"Patient/p1"},"contained":[{"resourceType":"Patient","id":"x"}]}}`,
		`{"resource":{"resourceType":"Observation","subject":{"reference":"#x"}}}`,
		`{"resource":{"resourceType":"Observation","subject":{"reference":"Group/g"}}}`,
		`{"resource":{"resourceType":"Observation","subject":{"reference":"urn:uuid:1"}}}`,
		`{"resource":{"resourceType":"Patient","id":"p2"}}`,
		`{"search":{"mode":"match"},"resource":{"id":"x","resourceType":"Observation"}}`,
		`{"resource":{"resourceType":"Observation","subject":{"reference":"Patient/p1"},"performer":[{"refer\u0065nce":"Patient/p2"}]}}`,
	} {
		if _, _, decided := o.QuickBelongs([]byte(raw), p); decided {
			t.Errorf("decided what only Belongs can judge: %s", raw)
		}
	}
	for raw, want := range map[string]bool{
		`{"resource":{"resourceType":"Observation","subject":{"reference":"Patient/p1"},"performer":[{"reference":"Patient/p2"}]}}`: false,
		`{"resource":{"resourceType":"Observation","subject":{"reference":"https://x/fhir/Patient/p1"}}}`:                           true,
		`{"resource":{"resourceType":"Practitioner","name":[{"text":"\"reference\":\"Patient/p2\""}]}}`:                             true,
		`{"resource":{"resourceType":"StructureDefinition","url":"x"}}`:                                                             false,
		`{"resource":{"resourceType":"OperationOutcome","issue":[]}}`:                                                               true,
		`{"resource":{"resourceType":"Observation","subject":{"reference":"Patient/p10"}}}`:                                         false,
		`{"resource":{"resourceType":"Observation","subject":{"reference":"Patient/p"}}}`:                                           false,
		`{"resource":{"resourceType":"Observation","subject":{"reference":"Patient/p1/_history/2"}}}`:                               true,
	} {
		_, got, decided := o.QuickBelongs([]byte(raw), p)
		if !decided || got != want {
			t.Errorf("QuickBelongs(%s) = %v, %v; want %v, true", raw, got, decided, want)
		}
	}
}

// TestJudgeEntryAllocatesNothingForTheOwner: judging a resource of a
// known type whose Patient reference is the owner's, written as servers
// write it ("Patient/{id}"), allocates nothing — a read's answer is
// judged with facts of its own, so nothing is remembered from an entry
// before. (Other references are read by ParseReference, the one home of
// that rule, which allocates.)
func TestJudgeEntryAllocatesNothingForTheOwner(t *testing.T) {
	o := Owner{PatientID: "p1", Bases: []string{"https://x/fhir"}}
	p := DefaultOwnershipPolicy()
	var f EntryFacts
	entry := []byte(`{"resource":{"resourceType":"Observation","status":"final","subject":{"reference":"Patient/p1"}}}`)
	if _, err := ScanEntry(entry, &f); err != nil {
		t.Fatal(err)
	}
	var belongs, decided bool
	allocs := testing.AllocsPerRun(100, func() {
		f.typ, f.selfRef = "", nil // as new facts
		_, belongs, decided = o.JudgeEntry(&f, p)
	})
	if !belongs || !decided {
		t.Fatalf("the owner's Observation: belongs %v, decided %v", belongs, decided)
	}
	if allocs != 0 {
		t.Errorf("%v allocations judging the owner's Observation, want none", allocs)
	}
}

func BenchmarkFilterQuick(b *testing.B) {
	o := Owner{PatientID: "p1", Bases: []string{"https://x/fhir"}}
	p := DefaultOwnershipPolicy()
	var t testing.T
	entries := quickEntries(&t)
	var sb strings.Builder
	sb.WriteString(`{"resourceType":"Bundle","type":"searchset","entry":[`)
	for i, e := range entries[:200] {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.Write(e)
	}
	sb.WriteString(`]}`)
	body := sb.String()
	keep := func(res map[string]any) bool { return o.Belongs(res, p) }
	for _, quick := range []bool{false, true} {
		opts := FilterOptions{}
		name := "decode"
		if quick {
			opts.Quick = func(f *EntryFacts) (bool, bool) {
				_, keep, decided := o.JudgeEntry(f, p)
				return keep, decided
			}
			name = "quick"
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			for i := 0; i < b.N; i++ {
				if _, err := FilterBundle(strings.NewReader(body), io.Discard, keep, opts); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// FuzzQuickBelongs: QuickBelongs never shows an entry whose references name
// a Patient other than the record's, whatever the JSON around them.
func FuzzQuickBelongs(f *testing.F) {
	for _, seed := range []string{
		`{"resource":{"resourceType":"Observation","subject":{"reference":"Patient/p1"}}}`,
		`{"resource":{"resourceType":"Observation","subject":{"reference":"Patient/p1"},"performer":[{"reference":"Practitioner/x"}]}}`,
		`{"fullUrl":"https://x/fhir/Encounter/e","resource":{"resourceType":"Encounter","subject":{"reference":"https://x/fhir/Patient/p1"}}}`,
		`{"resource":{"resourceType":"Organization","name":"clinic"}}`,
	} {
		f.Add(seed, "Patient/other")
	}
	o := Owner{PatientID: "p1", Bases: []string{"https://x/fhir"}}
	p := DefaultOwnershipPolicy()
	f.Fuzz(func(t *testing.T, entry, foreign string) {
		_, keep, decided := o.QuickBelongs([]byte(entry), p)
		if !decided || !keep {
			return
		}
		var e struct {
			Resource map[string]any `json:"resource"`
		}
		if json.Unmarshal([]byte(entry), &e) != nil || e.Resource == nil {
			return // not JSON a server would send; the filter's decoder refuses it first
		}
		refs := []string{}
		var walk func(v any)
		walk = func(v any) {
			switch x := v.(type) {
			case map[string]any:
				for k, c := range x {
					if s, ok := c.(string); ok && k == "reference" {
						refs = append(refs, s)
					}
					walk(c)
				}
			case []any:
				for _, c := range x {
					walk(c)
				}
			}
		}
		walk(e.Resource)
		for _, ref := range refs {
			trimmed := strings.TrimPrefix(ref, "https://x/fhir/")
			typ, id, _, ok := ParseReference(trimmed)
			if ok && (typ == "Patient" && id != "p1" || typ == "Group") {
				t.Fatalf("QuickBelongs showed an entry referencing %q: %s", ref, entry)
			}
		}
	})
}
