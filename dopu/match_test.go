package dopu

import (
	"strings"
	"testing"
)

func summary(family, given, birth, gender string, ids ...Identifier) *PatientSummary {
	return &PatientSummary{Names: []HumanName{{Family: family, Given: []string{given}}}, BirthDate: birth, Gender: gender, Identifiers: ids}
}

func TestScoreMatch(t *testing.T) {
	ssn := func(v string) Identifier { return Identifier{System: "urn:oid:2.16.840.1.113883.4.1", Value: v} }
	record := summary("DeLarosa", "Martha", "1972-05-01", "female", ssn("123"))
	cases := []struct {
		name     string
		sender   *PatientSummary
		score    float64
		accepted bool
		reason   string
	}{
		{"identical", summary("DeLarosa", "Martha", "1972-05-01", "female", ssn("123")), 1, true, ""},
		{"accents, case and spaces", summary("de la Rósa", "MÁRTHA", "1972-05-01", "female"), 0.85, true, "no identifier"},
		{"compound family", summary("DeLarosa García", "Martha", "1972-05-01", "female"), 0.85, true, ""},
		{"dateTime birth", summary("DeLarosa", "Martha", "1972-05-01T10:00:00Z", "female"), 0.85, true, ""},
		{"no gender", summary("DeLarosa", "Martha", "1972-05-01", ""), 0.75, true, "no known gender"},
		{"twin sister", summary("DeLarosa", "Maria", "1972-05-01", "female"), 0.65, false, "given names"},
		{"partial birth date", summary("DeLarosa", "Martha", "1972", "female"), 0.7, true, "partly"},
		{"another birth date", summary("DeLarosa", "Martha", "1973-05-01", "female"), 0.55, false, "birth date 1973-05-01"},
		{"stranger", summary("Everywoman", "Eve", "1955-01-06", "female"), 0.1, false, "family name"},
		{"identifier conflict", summary("DeLarosa", "Martha", "1972-05-01", "female", ssn("999")), 0.55, false, "differs"},
		{"identifier only", summary("Other", "Name", "2000-01-01", "male", ssn("123")), 0.15, false, ""},
		{"nobody", nil, 0, false, "names no patient"},
		{"empty", &PatientSummary{}, 0, false, "no family name"},
		{"blank text", &PatientSummary{Names: []HumanName{{Text: "   "}}}, 0, false, "no family name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := ScoreMatch(c.sender, record)
			if m.Score != c.score || m.Accepted != c.accepted || m.Threshold != MatchThreshold {
				t.Errorf("score %v accepted %v, want %v %v (%v)", m.Score, m.Accepted, c.score, c.accepted, m.Reasons)
			}
			if c.reason != "" && !strings.Contains(strings.Join(m.Reasons, "; "), c.reason) {
				t.Errorf("reasons %q lack %q", m.Reasons, c.reason)
			}
		})
	}
}

func TestFold(t *testing.T) {
	for in, want := range map[string]string{
		"De la Rosa": "delarosa", "Ångström": "angstrom", "Straße": "strasse", "Øster-Ågård": "osteragard",
		"Łukasz": "lukasz", "O'Brien": "obrien", "  Zoë ": "zoe", "Nguyễn": "nguyen",
	} {
		if got := fold(in); got != want {
			t.Errorf("fold(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNameTextFallback(t *testing.T) {
	sender := &PatientSummary{Names: []HumanName{{Text: "Eve Everywoman"}}, BirthDate: "1955-01-06", Gender: "female"}
	record := summary("Everywoman", "Eve", "1955-01-06", "female")
	if m := ScoreMatch(sender, record); m.Score != 0.85 {
		t.Errorf("name.text: %+v", m)
	}
	// Single shared words of compound names are not a match.
	if familiesMatch(familiesOf("De la Rosa"), familiesOf("De Souza")) {
		t.Error(`"De la Rosa" matched "De Souza"`)
	}
}

func familiesOf(family string) []familyName {
	f, _ := nameTokens([]HumanName{{Family: family}})
	return f
}

func TestSummarizePatientIgnoresWrongTypes(t *testing.T) {
	s := SummarizePatient(map[string]any{
		"resourceType": "Patient", "birthDate": "2000-01-01", "gender": 7,
		"name": []any{map[string]any{"family": []any{"x"}, "given": []any{"Ann"}}},
	})
	if s.BirthDate != "2000-01-01" {
		t.Errorf("summary %+v", s)
	}
	if SummarizePatient(nil) != nil {
		t.Error("nil Patient summarized")
	}
}
