package dopu

import (
	"fmt"
	"strings"
	"unicode"

	"golang.org/x/text/unicode/norm"
)

// MatchThreshold is the score at or above which a drop-off's patient is
// taken to be the record's person.
const MatchThreshold = 0.7

// Weights of the match score. They add up to 1.
const (
	weightFamily     = 0.25
	weightGiven      = 0.20
	weightBirthDate  = 0.30
	weightGender     = 0.10
	weightIdentifier = 0.15
	// penaltyIdentifierConflict applies when both have an identifier in
	// the same system with different values: one system gives one person
	// one identifier, so this is strong evidence of two people.
	penaltyIdentifierConflict = 0.30
)

// Match is how well a drop-off's patient matches the record's Patient.
type Match struct {
	// Score is in [0, 1]; see ScoreMatch.
	Score     float64 `json:"score"`
	Threshold float64 `json:"threshold"`
	// Reasons lists what did not match or was missing.
	Reasons []string `json:"reasons,omitempty"`
	// Accepted is Score >= Threshold.
	Accepted bool `json:"accepted"`
}

// MatchAgainst scores the drop-off's subject against the record's Patient,
// as the inbox shows it and the pick-up applies it.
func (s Summary) MatchAgainst(record *PatientSummary) Match {
	return matchSubject(s.Subject, record, s.AboutNoOne)
}

// matchSubject is ScoreMatch, except that a drop-off about no one (no
// patient named, nothing of a Patient-compartment type) is accepted: it
// holds nothing about a person to confuse.
func matchSubject(sender, record *PatientSummary, aboutNoOne bool) Match {
	if sender == nil && aboutNoOne {
		return Match{Score: 1, Threshold: MatchThreshold, Accepted: true,
			Reasons: []string{"the drop-off names no patient and holds nothing about a person"}}
	}
	return ScoreMatch(sender, record)
}

// ScoreMatch scores the drop-off's patient (sender) against the record's
// (record). The score is the sum of:
//
//   - 0.25 when a family name matches (case, accents, spaces and
//     punctuation ignored; a shared word of a compound name is enough);
//   - 0.20 when a given name matches the same way;
//   - 0.30 when the birth dates are equal, 0.15 when one is a partial date
//     ("1972", "1972-05") that the other starts with;
//   - 0.10 when the genders are equal (and neither is "unknown");
//   - 0.15 when an identifier (system and value) is shared;
//
// minus 0.30 when they hold different values for the same identifier
// system, floored at 0. Names fall back to HumanName.text, split into given
// names and a final family name. A patient is accepted at MatchThreshold
// (0.7): name, given name and birth date alone (0.75) pass; twins (same
// family name, birth date and gender, 0.65) do not.
func ScoreMatch(sender, record *PatientSummary) Match {
	m := Match{Threshold: MatchThreshold}
	if sender == nil {
		m.Reasons = append(m.Reasons, "the drop-off names no patient")
		return m
	}
	if record == nil {
		record = &PatientSummary{}
	}
	reason := func(format string, args ...any) { m.Reasons = append(m.Reasons, fmt.Sprintf(format, args...)) }

	sFamily, sGiven := nameTokens(sender.Names)
	rFamily, rGiven := nameTokens(record.Names)
	switch {
	case len(sFamily) == 0:
		reason("the drop-off's patient has no family name")
	case len(rFamily) == 0:
		reason("the record's Patient has no family name")
	case familiesMatch(sFamily, rFamily):
		m.Score += weightFamily
	default:
		reason("family name %s does not match %s", displayFamilies(sender.Names), displayFamilies(record.Names))
	}
	switch {
	case len(sGiven) == 0:
		reason("the drop-off's patient has no given name")
	case len(rGiven) == 0:
		reason("the record's Patient has no given name")
	case intersects(sGiven, rGiven):
		m.Score += weightGiven
	default:
		reason("given names %s do not match %s", displayGiven(sender.Names), displayGiven(record.Names))
	}

	sBirth, rBirth := dateOnly(sender.BirthDate), dateOnly(record.BirthDate)
	switch {
	case sBirth == "":
		reason("the drop-off's patient has no birth date")
	case rBirth == "":
		reason("the record's Patient has no birth date")
	case sBirth == rBirth && len(sBirth) == len("2006-01-02"):
		m.Score += weightBirthDate
	case strings.HasPrefix(sBirth, rBirth) || strings.HasPrefix(rBirth, sBirth):
		m.Score += weightBirthDate / 2
		reason("birth date %s only partly matches %s", sBirth, rBirth)
	default:
		reason("birth date %s does not match %s", sBirth, rBirth)
	}

	sGender, rGender := strings.ToLower(sender.Gender), strings.ToLower(record.Gender)
	switch {
	case sGender == "" || sGender == "unknown":
		reason("the drop-off's patient has no known gender")
	case rGender == "" || rGender == "unknown":
		reason("the record's Patient has no known gender")
	case sGender == rGender:
		m.Score += weightGender
	default:
		reason("gender %s does not match %s", sGender, rGender)
	}

	shared, conflicts := compareIdentifiers(sender.Identifiers, record.Identifiers)
	if shared {
		m.Score += weightIdentifier
	} else {
		reason("no identifier in common")
	}
	for _, c := range conflicts {
		reason("identifier %s differs", c)
	}
	if len(conflicts) > 0 && !shared {
		m.Score -= penaltyIdentifierConflict
	}

	m.Score = max(0, min(1, round3(m.Score)))
	m.Accepted = m.Score >= m.Threshold
	return m
}

func round3(f float64) float64 { return float64(int64(f*1000+0.5)) / 1000 }

// dateOnly keeps the date part of a FHIR date or dateTime.
func dateOnly(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, 'T'); i >= 0 {
		s = s[:i]
	}
	return s
}

// compareIdentifiers reports whether a (system, value) pair is shared, and
// the systems in which both have values but none in common.
func compareIdentifiers(a, b []Identifier) (shared bool, conflicts []string) {
	valuesA, valuesB := identifierValues(a), identifierValues(b)
	for system, va := range valuesA {
		vb, ok := valuesB[system]
		if !ok {
			continue
		}
		if intersects(va, vb) {
			shared = true
		} else {
			conflicts = append(conflicts, system)
		}
	}
	return shared, conflicts
}

// identifierValues groups values by system; identifiers without a system
// cannot be compared across organizations and are left out.
func identifierValues(ids []Identifier) map[string][]string {
	out := map[string][]string{}
	for _, id := range ids {
		if id.System != "" && id.Value != "" {
			out[id.System] = append(out[id.System], strings.TrimSpace(id.Value))
		}
	}
	return out
}

func intersects(a, b []string) bool {
	for _, x := range a {
		for _, y := range b {
			if x == y {
				return true
			}
		}
	}
	return false
}

// familyName is a folded family name, whole and word by word.
type familyName struct {
	whole string
	words []string
}

// familiesMatch reports whether a family name of a equals one of b, or one
// of the words of a compound name of the other ("García López" and
// "Garcia"). Single words never match each other alone, so "De la Rosa"
// and "De Souza" do not match on "de".
func familiesMatch(a, b []familyName) bool {
	for _, x := range a {
		for _, y := range b {
			if x.whole == y.whole || contains(x.words, y.whole) || contains(y.words, x.whole) {
				return true
			}
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// nameTokens returns the folded family names and the folded words of the
// given names.
func nameTokens(names []HumanName) (family []familyName, given []string) {
	for _, n := range names {
		f, g := n.Family, n.Given
		if words := strings.Fields(n.Text); f == "" && len(g) == 0 && len(words) > 0 {
			f, g = words[len(words)-1], words[:len(words)-1]
		}
		if whole := fold(f); whole != "" {
			fn := familyName{whole: whole}
			for _, w := range splitWords(f) {
				if w := fold(w); w != "" {
					fn.words = append(fn.words, w)
				}
			}
			family = append(family, fn)
		}
		for _, gn := range g {
			for _, w := range splitWords(gn) {
				if w := fold(w); w != "" {
					given = append(given, w)
				}
			}
		}
	}
	return family, given
}

func splitWords(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || r == '-' || r == '\'' })
}

// letterFolds spells letters that have no Unicode decomposition.
var letterFolds = strings.NewReplacer("ß", "ss", "æ", "ae", "Æ", "ae", "œ", "oe", "Œ", "oe",
	"ø", "o", "Ø", "o", "ł", "l", "Ł", "l", "đ", "d", "Đ", "d", "þ", "th", "ı", "i")

// fold lowercases s, removes accents and keeps only letters and digits, so
// "De la Rosa", "delarosa" and "DE LA ROSÁ" compare equal.
func fold(s string) string {
	var b strings.Builder
	for _, r := range norm.NFD.String(letterFolds.Replace(s)) {
		switch {
		case unicode.Is(unicode.Mn, r):
		case unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(unicode.ToLower(r))
		}
	}
	return b.String()
}

func displayFamilies(names []HumanName) string {
	var out []string
	for _, n := range names {
		if n.Family != "" {
			out = append(out, n.Family)
		} else if n.Text != "" {
			out = append(out, n.Text)
		}
	}
	return fmt.Sprintf("%q", out)
}

func displayGiven(names []HumanName) string {
	var out []string
	for _, n := range names {
		out = append(out, n.Given...)
	}
	return fmt.Sprintf("%q", out)
}
