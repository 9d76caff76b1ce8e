package fhir

import (
	"slices"
	"strings"
	"testing"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

func TestIdentityChange(t *testing.T) {
	const john = `{"resourceType":"Patient","id":"pfr-john","name":[{"use":"official","family":"Müller-Lüdenscheidt","given":["José"]}],"birthDate":"1980-04-02","gender":"male"}`
	tests := []struct {
		name, stored, proposed string
		want                   []string // substrings, one per expected change
	}{
		{"same", john, john, nil},
		{"case and accents", john, `{"name":[{"use":"official","family":"MULLER LUDENSCHEIDT","given":["jose"]}],"birthDate":"1980-04-02","gender":"male"}`, nil},
		{"added middle name", john, `{"name":[{"use":"official","family":"Müller-Lüdenscheidt","given":["José","María"]}],"birthDate":"1980-04-02","gender":"male"}`, nil},
		{"middle name in the same string", john, `{"name":[{"use":"official","family":"Müller-Lüdenscheidt","given":["José María"]}],"birthDate":"1980-04-02","gender":"male"}`, nil},
		{"other fields change", john, `{"name":[{"use":"official","family":"Müller-Lüdenscheidt","given":["José"]}],"birthDate":"1980-04-02","gender":"male","telecom":[{"value":"x"}],"address":[{"city":"Bern"}]}`, nil},
		{"nickname added", john, `{"name":[{"use":"nickname","given":["Pepe"]},{"use":"official","family":"Müller-Lüdenscheidt","given":["José"]}],"birthDate":"1980-04-02","gender":"male"}`, nil},
		{"ß spelled ss", `{"name":[{"family":"Weiß","given":["Ana"]}]}`, `{"name":[{"family":"Weiss","given":["Ana"]}]}`, nil},
		{"date refined", `{"birthDate":"1980"}`, `{"birthDate":"1980-04-02"}`, nil},
		{"identity given where none was", `{"resourceType":"Patient"}`, john, nil},
		{"gender from unknown", `{"gender":"unknown"}`, `{"gender":"female"}`, nil},
		{"text-only name", `{"name":[{"text":"José Müller"}]}`, `{"name":[{"family":"Muller","given":["Jose"]}]}`, nil},

		{"birth date", john, `{"name":[{"use":"official","family":"Müller-Lüdenscheidt","given":["José"]}],"birthDate":"1990-01-01","gender":"male"}`, []string{"birthDate 1980-04-02 → 1990-01-01"}},
		{"birth date less precise", john, `{"name":[{"use":"official","family":"Müller-Lüdenscheidt","given":["José"]}],"birthDate":"1980","gender":"male"}`, []string{"birthDate 1980-04-02 → 1980"}},
		{"birth date removed", john, `{"name":[{"use":"official","family":"Müller-Lüdenscheidt","given":["José"]}],"gender":"male"}`, []string{"birthDate 1980-04-02 → (none)"}},
		{"birth date prefix not at a boundary", `{"birthDate":"1980-04-0"}`, `{"birthDate":"1980-04-02"}`, []string{"birthDate"}},
		{"gender", john, `{"name":[{"use":"official","family":"Müller-Lüdenscheidt","given":["José"]}],"birthDate":"1980-04-02","gender":"female"}`, []string{"gender male → female"}},
		{"gender removed", john, `{"name":[{"use":"official","family":"Müller-Lüdenscheidt","given":["José"]}],"birthDate":"1980-04-02"}`, []string{"gender male → (none)"}},
		{"family", john, `{"name":[{"use":"official","family":"Smith","given":["José"]}],"birthDate":"1980-04-02","gender":"male"}`, []string{"name Müller-Lüdenscheidt, José → Smith, José"}},
		{"family part dropped", john, `{"name":[{"use":"official","family":"Müller","given":["José"]}],"birthDate":"1980-04-02","gender":"male"}`, []string{"name"}},
		{"first name", john, `{"name":[{"use":"official","family":"Müller-Lüdenscheidt","given":["Josef"]}],"birthDate":"1980-04-02","gender":"male"}`, []string{"name"}},
		{"name added before first", john, `{"name":[{"use":"official","family":"Müller-Lüdenscheidt","given":["Paul","José"]}],"birthDate":"1980-04-02","gender":"male"}`, []string{"name"}},
		{"middle name dropped", `{"name":[{"family":"X","given":["Ana","Maria"]}]}`, `{"name":[{"family":"X","given":["Ana"]}]}`, []string{"name"}},
		{"name removed", john, `{"birthDate":"1980-04-02","gender":"male"}`, []string{"name Müller-Lüdenscheidt, José → (none)"}},
		{"official name replaced, old one kept as old", john, `{"name":[{"use":"old","family":"Müller-Lüdenscheidt","given":["José"]},{"use":"official","family":"Doe","given":["Jane"]}],"birthDate":"1980-04-02","gender":"male"}`, []string{"name"}},
		{"everything", john, `{"name":[{"family":"Doe","given":["Jane"]}],"birthDate":"1990-01-01","gender":"female"}`, []string{"name", "birthDate", "gender"}},
		{"look-alike letters", `{"name":[{"family":"Doe","given":["Ana"]}]}`, `{"name":[{"family":"D\u043ee","given":["Ana"]}]}`, []string{"name"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := IdentityChange(testkit.DecodeFHIR(t, []byte(tc.stored)), testkit.DecodeFHIR(t, []byte(tc.proposed)))
			if len(got) != len(tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
			for i, w := range tc.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("change %d = %q, want it to contain %q", i, got[i], w)
				}
			}
		})
	}
}

// TestIdentityChangeNoLadder: a sequence of updates each within tolerance
// cannot reach another person's identity, because every tolerated step
// keeps what was there.
func TestIdentityChangeNoLadder(t *testing.T) {
	steps := []string{
		`{"name":[{"family":"Doe","given":["Ana"]}],"birthDate":"1980-04-02","gender":"female"}`,
		`{"name":[{"family":"Doe","given":["Ana","Maria"]}],"birthDate":"1980-04-02","gender":"female"}`,
		`{"name":[{"family":"Doe","given":["Maria"]}],"birthDate":"1980-04","gender":"female"}`,
		`{"name":[{"family":"Roe","given":["Maria"]}],"birthDate":"1981-01-01","gender":"male"}`,
	}
	tolerated := 0
	for i := 1; i < len(steps); i++ {
		if len(IdentityChange(testkit.DecodeFHIR(t, []byte(steps[i-1])), testkit.DecodeFHIR(t, []byte(steps[i])))) == 0 {
			tolerated++
		}
	}
	if tolerated != 1 {
		t.Errorf("%d of the steps were tolerated, want only the first", tolerated)
	}
	if got := IdentityChange(testkit.DecodeFHIR(t, []byte(steps[0])), testkit.DecodeFHIR(t, []byte(steps[3]))); !slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, "gender") }) {
		t.Errorf("end to end: %q", got)
	}
}
