package fhirjson

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestAppendStringDecodesAsEncodingJSON: any string, invalid UTF-8 and
// control characters included, is written as a JSON string that decodes
// to what encoding/json's own encoding of it decodes to, with nothing
// escaped that JSON does not require.
func TestAppendStringDecodesAsEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []string{"a", "Z", " ", `"`, `\`, "/", "<", ">", "&", "\x00", "\x1f", "\x7f", "é", "€", "𝄞",
		"\u2028", "\xff", "\xe2\x82", "\xed\xa0\x80"}
	for i := range 5000 {
		var b strings.Builder
		for range rng.IntN(12) {
			b.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		s := b.String()
		got := AppendString([]byte("x"), s)[1:]
		if err := Check(got); err != nil {
			t.Fatalf("%d: %q wrote invalid JSON %s: %v", i, s, got, err)
		}
		var gotS, wantS string
		if err := json.Unmarshal(got, &gotS); err != nil {
			t.Fatalf("%d: %q: %s: %v", i, s, got, err)
		}
		want, _ := json.Marshal(s)
		_ = json.Unmarshal(want, &wantS)
		if gotS != wantS {
			t.Fatalf("%d: %q wrote %s, decoding to %q; encoding/json's decodes to %q", i, s, got, gotS, wantS)
		}
		if strings.ContainsAny(s, "<>&") && !strings.ContainsAny(string(got), "<>&") {
			t.Fatalf("%d: %q: HTML escaped in %s", i, s, got)
		}
	}
}
