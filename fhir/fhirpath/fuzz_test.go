package fhirpath

import (
	"strconv"
	"strings"
	"testing"
)

// FuzzCompileEvaluate: any text either fails to compile with an error that
// names it, or evaluates on a resource without panicking.
func FuzzCompileEvaluate(f *testing.F) {
	for _, s := range []string{
		"Observation.subject.where(resolve() is Patient)",
		"(Observation.value as Quantity).value",
		"Patient.deceased.exists() and Patient.deceased != false",
		"Bundle.entry[0].resource",
		"Observation.extension('http://e/1').value",
		"%resource.a | $this.b[1] = 'x' or true implies false",
		"a.where(b.where(c = 1).exists()).first().ofType(string)",
		"((((", "'\\", "`x`.`y`", "1.5 > 2 xor 3 <= 4",
	} {
		f.Add(s)
	}
	res := decode(f, observation, true)
	f.Fuzz(func(t *testing.T, src string) {
		e, err := Compile(src)
		if err != nil {
			if !strings.Contains(err.Error(), strconv.Quote(src)) {
				t.Fatalf("error %q does not name %q", err, src)
			}
			return
		}
		_, _ = e.Evaluate(res)
	})
}
