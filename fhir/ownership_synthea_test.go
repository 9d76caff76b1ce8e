package fhir

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// testOwner is the PFR the ownership tests write to.
var testOwner = Owner{
	PatientID: "pfr-john",
	Bases:     []string{"https://john.pfr.localhost:8443/fhir"},
}

// aimAt rewrites a Synthea Bundle as a client writing into a PFR sends it:
// the Bundle's Patient entry keeps its urn:uuid fullUrl, so that every
// other entry still references it by that urn, but is written by
// "PUT Patient/{patientID}" with that id, since a PFR never creates a
// Patient. With patientID the PFR's Patient id the Bundle is the person's
// own data; with any other id it is someone else's. It returns the index
// of the Patient entry.
func aimAt(t testing.TB, bundle map[string]any, patientID string) int {
	t.Helper()
	for i, raw := range bundle["entry"].([]any) {
		e := raw.(map[string]any)
		res := e["resource"].(map[string]any)
		if res["resourceType"] != "Patient" {
			continue
		}
		if !strings.HasPrefix(e["fullUrl"].(string), "urn:uuid:") {
			t.Fatalf("Patient fullUrl %v", e["fullUrl"])
		}
		res["id"] = patientID
		e["request"] = map[string]any{"method": "PUT", "url": "Patient/" + patientID}
		return i
	}
	t.Fatal("no Patient entry")
	return -1
}

// entryIndexes returns the entry numbers the issues' expressions name.
func entryIndexes(issues []Issue) map[int]bool {
	out := map[int]bool{}
	for _, is := range issues {
		for _, ex := range is.Expression {
			rest, ok := strings.CutPrefix(ex, "Bundle.entry[")
			if !ok {
				continue
			}
			n, _, _ := strings.Cut(rest, "]")
			i, err := strconv.Atoi(n)
			if err == nil {
				out[i] = true
			}
		}
	}
	return out
}

// TestCheckBundleSynthea: each Synthea Bundle aimed at the PFR's Patient is
// accepted whole; aimed at another Patient, it is refused, with an issue
// naming every entry that is in that Patient's compartment, and none
// naming the Organizations and Practitioners, which are fine on their own.
func TestCheckBundleSynthea(t *testing.T) {
	p := DefaultOwnershipPolicy()
	for name, data := range testkit.Synthea(t) {
		t.Run(name, func(t *testing.T) {
			own := testkit.DecodeFHIR(t, data)
			aimAt(t, own, testOwner.PatientID)
			if issues := testOwner.CheckBundle(own, p); len(issues) != 0 {
				t.Fatalf("own Bundle refused: %d issues, first %+v", len(issues), issues[0])
			}

			other := testkit.DecodeFHIR(t, data)
			patientEntry := aimAt(t, other, "someone-else")
			issues := testOwner.CheckBundle(other, p)
			if len(issues) == 0 {
				t.Fatal("Bundle of another Patient accepted")
			}
			if OwnershipError(issues) == nil {
				t.Fatal("OwnershipError(nil) for issues")
			}
			named := entryIndexes(issues)
			compartment := 0
			for i, raw := range other["entry"].([]any) {
				typ := raw.(map[string]any)["resource"].(map[string]any)["resourceType"].(string)
				switch {
				case i == patientEntry || InPatientCompartment(typ):
					compartment++
					if !named[i] {
						t.Errorf("entry %d (%s) not named by any issue", i, typ)
					}
				case named[i]:
					t.Errorf("entry %d (%s) named though it is not in a compartment", i, typ)
				}
			}
			if compartment < 50 {
				t.Errorf("only %d compartment entries", compartment)
			}
		})
	}
}

// TestCheckBundleSyntheaAsIs: the Bundles as Synthea writes them create a
// new Patient, which a PFR refuses.
func TestCheckBundleSyntheaAsIs(t *testing.T) {
	for name, data := range testkit.Synthea(t) {
		issues := testOwner.CheckBundle(testkit.DecodeFHIR(t, data), DefaultOwnershipPolicy())
		if !slices.ContainsFunc(issues, func(is Issue) bool {
			return strings.Contains(is.Diagnostics, "creating a Patient")
		}) {
			t.Errorf("%s: create of a Patient not refused", name)
		}
	}
}

// largestSynthea returns the largest Synthea Bundle aimed at the PFR.
func largestSynthea(b *testing.B) map[string]any {
	var largest []byte
	for _, data := range testkit.Synthea(b) {
		if len(data) > len(largest) {
			largest = data
		}
	}
	bundle := testkit.DecodeFHIR(b, largest)
	aimAt(b, bundle, testOwner.PatientID)
	return bundle
}

func BenchmarkCheckBundleSynthea(b *testing.B) {
	bundle := largestSynthea(b)
	p := DefaultOwnershipPolicy()
	if issues := testOwner.CheckBundle(bundle, p); len(issues) != 0 {
		b.Fatalf("refused: %+v", issues[0])
	}
	b.ReportAllocs()
	for b.Loop() {
		testOwner.CheckBundle(bundle, p)
	}
	b.ReportMetric(float64(len(bundle["entry"].([]any))), "entries")
}
