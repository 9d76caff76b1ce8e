package fhir

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pfrgateway/caddy-pfr/fhir/fhirjson"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// realEntries returns the entries of every Bundle in the shared test data
// (Synthea, the real-world sets, the documents), byte for byte as the
// files hold them, and the searchset entries quickEntries makes of the
// Synthea Bundles for the record's Patient p1.
func realEntries(t *testing.T) [][]byte {
	t.Helper()
	out := quickEntries(t)
	for _, dir := range []string{"synthea", "realworld", "documents"} {
		err := filepath.WalkDir(testkit.FHIRPath(t, dir), func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".json") {
				return err
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			return fhirjson.Members(data, func(name, value []byte) error {
				if string(name) != `"entry"` || value[0] != '[' {
					return nil
				}
				return fhirjson.Elements(value, func(_ int, entry []byte) error {
					out = append(out, entry)
					return nil
				})
			})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// checkScanEntry: ScanEntry cuts exactly what ScanValue cuts, and where
// the text search QuickBelongs used before ScanEntry found the entry's
// resource, the judgement on what ScanEntry read is the same.
func checkScanEntry(t *testing.T, o Owner, p OwnershipPolicy, entry []byte) (oldDecided, newDecided bool) {
	t.Helper()
	var f EntryFacts
	n, err := ScanEntry(entry, &f)
	want, wantErr := fhirjson.ScanValue(entry)
	if n != want || (err == nil) != (wantErr == nil) || errors.Is(err, fhirjson.ErrIncomplete) != errors.Is(wantErr, fhirjson.ErrIncomplete) {
		t.Fatalf("ScanEntry(%.200q) = %d, %v; ScanValue %d, %v", entry, n, err, want, wantErr)
	}
	if err != nil || len(bytes.TrimLeft(entry[n:], " \t\r\n")) > 0 {
		return false, false
	}
	old := textFacts(entry)
	oldTyp, oldKeep, oldDecided := o.JudgeEntry(old, p)
	typ, keep, decided := o.QuickBelongs(entry, p)
	if !bytes.Equal(old.Type, f.Type) {
		// The text search takes the first `"resource":{"resourceType"` in
		// the text, wherever it is; ScanEntry the entry's own resource.
		return oldDecided, decided
	}
	if oldDecided && (!decided || keep != oldKeep || typ != oldTyp) {
		t.Fatalf("ScanEntry judges %.300s as %q %v (decided %v); the text search as %q %v", entry, typ, keep, decided, oldTyp, oldKeep)
	}
	if decided && !oldDecided && !bytes.Contains(entry, []byte(`contained"`)) {
		// ScanEntry decides more only where "contained" is a value, not
		// a member.
		t.Fatalf("ScanEntry decided %.300s (%v), the text search did not", entry, keep)
	}
	return oldDecided, decided
}

// TestScanEntryAgreesWithTextSearch: on every entry of the shared test
// data, and on the same entries naming another Patient or another server,
// the one-pass scan judges as the text search did.
func TestScanEntryAgreesWithTextSearch(t *testing.T) {
	o := Owner{PatientID: "p1", Bases: []string{"https://x/fhir"}}
	p := DefaultOwnershipPolicy()
	entries := realEntries(t)
	decided := 0
	for _, raw := range entries {
		for _, e := range []string{
			string(raw),
			strings.ReplaceAll(string(raw), `"Patient/p1"`, `"Patient/p2"`),
			strings.ReplaceAll(string(raw), `"Patient/p1"`, `"https://evil.example/fhir/Patient/p1"`),
			" \n" + string(raw) + "\n",
		} {
			if _, d := checkScanEntry(t, o, p, []byte(e)); d {
				decided++
			}
		}
	}
	if decided < len(entries) {
		t.Errorf("decided %d of %d variants of %d entries", decided, 4*len(entries), len(entries))
	}
	// Where the text search was fooled, the scan is not: a resource
	// inside another member before the entry's own.
	o2 := Owner{PatientID: "p1"}
	trick := `{"search":{"resource":{"resourceType":"Observation"}},"resource":{"resourceType":"Patient","id":"p2","link":[{"other":{"reference":"Patient/p1"}}]}}`
	if _, keep, _ := o2.JudgeEntry(textFacts([]byte(trick)), p); !keep {
		t.Fatal("the text search is no longer fooled: this case is moot")
	}
	if _, keep, decided := o2.QuickBelongs([]byte(trick), p); keep || decided {
		t.Errorf("ScanEntry took a nested resource for the entry's: %v %v", keep, decided)
	}
	// A "contained" value is no contained resource; escapes still go the
	// slow way.
	for raw, want := range map[string]int{
		`{"resource":{"resourceType":"Observation","status":"contained","subject":{"reference":"Patient/p1"}}}`:       1,
		`{"resource":{"resourceType":"Observation","contained":[],"subject":{"reference":"Patient/p1"}}}`:             0,
		`{"resource":{"resourceType":"Observation","subject":{"refer\u0065nce":"Patient/p2"}}}`:                       0,
		`{"resource":{"resourceType":"Observation","note":[{"text":"\u00e9"}],"subject":{"reference":"Patient/p1"}}}`: 0,
		`{"resource":{"resourceType":"Observation"},"resource":{"resourceType":"Observation"}}`:                       0,
		`{"resource":{"resourceType":"Observation","subject":{"reference":"Patient/p1"}}} x`:                          0,
	} {
		if _, _, decided := o.QuickBelongs([]byte(raw), p); decided != (want == 1) {
			t.Errorf("QuickBelongs(%s): decided %v", raw, decided)
		}
	}
}

// FuzzScanEntry: on any input ScanEntry cuts as ScanValue does and judges
// as the text search did wherever both read the same resource type.
func FuzzScanEntry(f *testing.F) {
	f.Add(`{"resource":{"resourceType":"Observation","subject":{"reference":"Patient/p1"}}}`)
	f.Add(`{"fullUrl":"https://x/fhir/Encounter/e","resource":{"resourceType":"Encounter","subject":{"reference":"https://x/fhir/Patient/p1"}},"search":{"mode":"match"}}`)
	f.Add(`{"resource":{"resourceType":"Observation","subject":{"reference":"Patient/p1"},"performer":[{"reference":"Patient/p2"}]}}`)
	o := Owner{PatientID: "p1", Bases: []string{"https://x/fhir"}}
	p := DefaultOwnershipPolicy()
	f.Fuzz(func(t *testing.T, entry string) {
		if json.Valid([]byte(entry)) || len(entry) < 4096 {
			checkScanEntry(t, o, p, []byte(entry))
		}
	})
}

// TestJudgeEntryRemembersSafely: what JudgeEntry remembers from entry to
// entry (the last type, the owner's Patient reference) never changes a
// judgement: one EntryFacts reused over every entry of the test data, for
// owners taking turns, judges as a fresh one does.
func TestJudgeEntryRemembersSafely(t *testing.T) {
	p := DefaultOwnershipPolicy()
	owners := []Owner{
		{PatientID: "p1", Bases: []string{"https://x/fhir"}},
		{PatientID: "p2", Bases: []string{"https://x/fhir"}},
		{PatientID: "p1", Bases: []string{"https://y/fhir"}},
	}
	var shared EntryFacts
	for i, raw := range realEntries(t) {
		for k := range owners {
			o := owners[(i+k)%len(owners)]
			if _, err := ScanEntry(raw, &shared); err != nil {
				t.Fatal(err)
			}
			typ, keep, decided := o.JudgeEntry(&shared, p)
			wantTyp, wantKeep, wantDecided := o.QuickBelongs(raw, p)
			if typ != wantTyp || keep != wantKeep || decided != wantDecided {
				t.Fatalf("owner %v, reused facts: %q %v %v; fresh: %q %v %v: %.200s", o, typ, keep, decided, wantTyp, wantKeep, wantDecided, raw)
			}
		}
	}
}

// TestScanResourceAgreesWithScanEntry: a resource scanned on its own (a
// read's answer) cuts as ScanValue does, judges as the entry that holds it
// (the same owners, the same variants as above), and reads the top-level
// resourceType and id encoding/json reads (the last of repeated members).
func TestScanResourceAgreesWithScanEntry(t *testing.T) {
	o := Owner{PatientID: "p1", Bases: []string{"https://x/fhir"}}
	p := DefaultOwnershipPolicy()
	var resources []string
	for _, raw := range realEntries(t) {
		_ = fhirjson.Members(raw, func(name, value []byte) error {
			if string(name) == `"resource"` {
				resources = append(resources, string(value))
			}
			return nil
		})
	}
	resources = append(resources,
		`{"id":"x","resourceType":"Observation","subject":{"reference":"Patient/p1"}}`,
		`{"resourceType":"Observation","id":"a","id":"b","resourceType":"Condition","subject":{"reference":"Patient/p1"}}`,
		`{"resourceType":"Observation","contained":[{"resourceType":"Patient","id":"c"}],"subject":{"reference":"#c"}}`,
		`{"resourceType":"Observation","subject":{"refer\u0065nce":"Patient/p2"}}`,
		`{"resourceType":"Observation","id":7,"subject":{"reference":"Patient/p1"}}`,
		`[{"resourceType":"Observation","subject":{"reference":"Patient/p1"}}]`,
		`{"resourceType":"Observation","subject":{"reference":"Patient/p1"}`,
		`{"resourceType":"Observation","subject":{"reference":"Patient/p1"}} {}`,
	)
	judged := 0
	var f, g EntryFacts
	for _, res := range resources {
		for _, r := range []string{res, strings.ReplaceAll(res, `"Patient/p1"`, `"Patient/p2"`), " \n" + res + "\n"} {
			data := []byte(r)
			n, err := ScanResource(data, &f)
			want, wantErr := fhirjson.ScanValue(data)
			if n != want || (err == nil) != (wantErr == nil) {
				t.Fatalf("ScanResource(%.200q) = %d, %v; ScanValue %d, %v", data, n, err, want, wantErr)
			}
			if err != nil || len(bytes.TrimLeft(data[n:], " \t\r\n")) > 0 {
				continue
			}
			var top struct {
				ResourceType json.RawMessage `json:"resourceType"`
				ID           json.RawMessage `json:"id"`
			}
			if json.Unmarshal(data[:n], &top) == nil && (!bytes.Equal(f.ResourceType, top.ResourceType) || !bytes.Equal(f.ID, top.ID)) {
				t.Fatalf("ScanResource(%.200s) read resourceType %s, id %s; encoding/json %s, %s", data, f.ResourceType, f.ID, top.ResourceType, top.ID)
			}
			entry := []byte(`{"resource":` + r + `}`)
			if m, err := ScanEntry(entry, &g); err != nil || m != len(entry) {
				t.Fatalf("ScanEntry(%.200s): %d, %v", entry, m, err)
			}
			typ, keep, decided := o.JudgeEntry(&f, p)
			wtyp, wkeep, wdecided := o.JudgeEntry(&g, p)
			if typ != wtyp || keep != wkeep || decided != wdecided {
				t.Fatalf("%.300s: judged alone %q %v %v, as an entry %q %v %v", r, typ, keep, decided, wtyp, wkeep, wdecided)
			}
			if decided {
				judged++
			}
		}
	}
	if judged < len(resources) {
		t.Errorf("decided %d of %d variants of %d resources", judged, 3*len(resources), len(resources))
	}
}
