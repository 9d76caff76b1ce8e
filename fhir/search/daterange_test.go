package search

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

// dateTimePattern is what matchDateTime matches: the FHIR date, dateTime
// and instant formats and a time without seconds.
var dateTimePattern = regexp.MustCompile(
	`^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$`)

// matchDateTime gives what the regular expression gives, on valid dates
// of every precision and on strings made of their pieces, cut and mixed.
func TestMatchDateTimeIsThePattern(t *testing.T) {
	cases := []string{
		"", "2020", "2020-01", "2020-01-02", "2020-01-02T10:00", "2020-01-02T10:00Z", "2020-01-02T10:00:05",
		"2020-01-02T10:00:05Z", "2020-01-02T10:00:05.1+01:00", "2020-01-02T10:00:05.123456789-14:00",
		"2020-01-02T10:00:05.1234567890Z", "2020-01-02T10:00:05.Z", "2020-01-02T10:00.5", "2020-01-02Z",
		"2020-01-02T", "2020-01-02T10", "2020-01-02T10:0", "202", "20201", "2020-1", "2020-01-02T10:00:05+0100",
		"2020-01-02T10:00:05+01:0", "2020-01-02T10:00:05ZZ", "2020-01-02 10:00", "２０２０", "2020-01-02T10:00:05.12a",
	}
	pieces := []string{"2020", "19", "0", "1", "12", "-", "-0", "-01", "T", "T1", "T10", ":", ":0", ":00", ".", ".5",
		".123", "Z", "+", "+01:00", "-05:30", "+1", " ", "a", "é", "9999999999"}
	rng := rand.New(rand.NewPCG(6, 14))
	for range 200000 {
		var b strings.Builder
		for range 1 + rng.IntN(8) {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		cases = append(cases, b.String())
		// A valid one, cut or with one byte changed.
		v := cases[rng.IntN(11)]
		if len(v) > 0 {
			cut := []byte(v[:rng.IntN(len(v)+1)])
			if len(cut) > 0 && rng.IntN(2) == 0 {
				cut[rng.IntN(len(cut))] = "0123456789-T:.Z+ x"[rng.IntN(18)]
			}
			cases = append(cases, string(cut))
		}
	}
	matched := 0
	for _, s := range cases {
		want := dateTimePattern.FindStringSubmatch(s)
		got, ok := matchDateTime(s)
		if ok != (want != nil) {
			t.Fatalf("%q: matched %v, the pattern %v", s, ok, want != nil)
		}
		if !ok {
			continue
		}
		matched++
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%q: group %d is %q, the pattern's %q", s, i, got[i], want[i])
			}
		}
	}
	if matched < 10000 {
		t.Errorf("only %d of %d cases match: the pieces make too few dates", matched, len(cases))
	}
}
