package fhir

import (
	"fmt"
	"slices"
	"strings"
	"unicode"

	"golang.org/x/text/unicode/norm"
)

// IdentityChange compares the stored and the proposed version of a PFR's
// Patient and lists the changes to the person's identity beyond tolerance,
// such as "birthDate 1980-04-02 → 1990-01-01"; nil means the update keeps
// the identity. The gateway refuses an update with changes unless the
// caller is the record's owner and confirms them.
//
// Compared: the identifying name (the first "official" one, else "usual",
// else the first that is not old, a nickname, anonymous, maiden or temp),
// birthDate and gender. Tolerated:
//   - names that differ only in case, accents, hyphens, apostrophes, dots
//     or spacing ("José-María" and "jose maria");
//   - given names added after the stored ones ("John" → "John Paul"): the
//     stored given names must all still be there, first name first;
//   - a birthDate made more precise ("1980" → "1980-04-02");
//   - a gender or name or birthDate given where none (or "unknown") was.
//
// Removing or replacing any of them is a change, so that no sequence of
// tolerated updates can turn the record into another person's.
func IdentityChange(stored, proposed map[string]any) []string {
	var changes []string
	if c := nameChange(identityName(stored), identityName(proposed)); c != "" {
		changes = append(changes, c)
	}
	oldDate, _ := stored["birthDate"].(string)
	newDate, _ := proposed["birthDate"].(string)
	if oldDate != "" && !refinesDate(oldDate, newDate) {
		changes = append(changes, fmt.Sprintf("birthDate %s → %s", oldDate, orNone(newDate)))
	}
	oldGender, _ := stored["gender"].(string)
	newGender, _ := proposed["gender"].(string)
	if oldGender != "" && oldGender != "unknown" && oldGender != newGender {
		changes = append(changes, fmt.Sprintf("gender %s → %s", oldGender, orNone(newGender)))
	}
	return changes
}

// personName is the identifying part of a HumanName.
type personName struct {
	family string
	given  []string
}

func (n personName) empty() bool { return n.family == "" && len(n.given) == 0 }

// String renders the name as "Family, Given Given" for messages.
func (n personName) String() string {
	if n.empty() {
		return "(none)"
	}
	return strings.TrimPrefix(n.family+", "+strings.Join(n.given, " "), ", ")
}

// identityName picks the name that identifies the Patient.
func identityName(patient map[string]any) personName {
	names, _ := patient["name"].([]any)
	var best map[string]any
	bestRank := 0
	for _, raw := range names {
		m, ok := raw.(map[string]any)
		if !ok {
			continue
		}
		use, _ := m["use"].(string)
		rank := 2
		switch use {
		case "official":
			rank = 4
		case "usual":
			rank = 3
		case "old", "nickname", "anonymous", "maiden", "temp":
			rank = 1
		}
		if rank > bestRank {
			best, bestRank = m, rank
		}
	}
	var n personName
	n.family, _ = best["family"].(string)
	given, _ := best["given"].([]any)
	for _, g := range given {
		if s, ok := g.(string); ok {
			n.given = append(n.given, s)
		}
	}
	if n.empty() {
		// Only text: its last word is taken as the family name.
		text, _ := best["text"].(string)
		if words := strings.Fields(text); len(words) > 0 {
			n.family, n.given = words[len(words)-1], words[:len(words)-1]
		}
	}
	return n
}

// nameChange describes a change from the stored to the proposed name
// beyond tolerance, or returns "".
func nameChange(stored, proposed personName) string {
	if stored.empty() {
		return ""
	}
	oldGiven := nameTokens(strings.Join(stored.given, " "))
	newGiven := nameTokens(strings.Join(proposed.given, " "))
	sameFamily := slices.Equal(nameTokens(stored.family), nameTokens(proposed.family))
	keepsGiven := len(oldGiven) == 0 || len(newGiven) > 0 && oldGiven[0] == newGiven[0] && isSubsequence(oldGiven, newGiven)
	if sameFamily && keepsGiven {
		return ""
	}
	return fmt.Sprintf("name %s → %s", stored, proposed)
}

// isSubsequence reports whether every item of short appears in long, in
// order.
func isSubsequence(short, long []string) bool {
	i := 0
	for _, s := range long {
		if i < len(short) && short[i] == s {
			i++
		}
	}
	return i == len(short)
}

// nameTokens folds a name for comparison: accents removed, lower case,
// hyphens, apostrophes and dots as spaces, split into words.
func nameTokens(s string) []string {
	var b strings.Builder
	for _, r := range norm.NFD.String(s) {
		switch {
		case unicode.Is(unicode.Mn, r):
		case r == '-' || r == '\'' || r == '’' || r == '.' || r == ',':
			b.WriteRune(' ')
		default:
			if folded, ok := letterFolds[unicode.ToLower(r)]; ok {
				b.WriteString(folded)
			} else {
				b.WriteRune(unicode.ToLower(r))
			}
		}
	}
	return strings.Fields(b.String())
}

// letterFolds spells the letters that NFD does not decompose.
var letterFolds = map[rune]string{
	'ß': "ss", 'ø': "o", 'æ': "ae", 'œ': "oe", 'ł': "l", 'đ': "d", 'ð': "d", 'þ': "th", 'ı': "i",
}

// refinesDate reports whether newDate is oldDate or a more precise date
// within it ("1980-04" → "1980-04-02").
func refinesDate(oldDate, newDate string) bool {
	if oldDate == newDate {
		return true
	}
	return strings.HasPrefix(newDate, oldDate) && newDate[len(oldDate)] == '-'
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
