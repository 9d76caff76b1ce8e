// Package fhirvalues compares FHIR JSON values byte for byte, for the
// tests that prove a path keeps what was written: numbers by their text
// (json.Number), strings exactly.
package fhirvalues

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Decode decodes a JSON object keeping numbers as json.Number.
func Decode(raw []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var out map[string]any
	if err := dec.Decode(&out); err != nil {
		return nil, fmt.Errorf("decoding %.100s: %w", raw, err)
	}
	return out, nil
}

// Options say what a comparison leaves aside.
type Options struct {
	// Aside are members of the top-level object not compared (id, meta).
	Aside []string
	// SkipObject leaves aside an object of what was sent, wherever it is
	// (a Reference, a Narrative).
	SkipObject func(sent map[string]any) bool
	// SkipReference leaves aside a "reference" member whose sent value it
	// accepts (a reference a transaction rewrites).
	SkipReference func(ref string) bool
	// NoneAdded also reports members the other side has and sent has not.
	NoneAdded bool
}

// Diff returns the first difference between sent and got, as a path and
// what changed, or "" when every value is the same, byte for byte.
func Diff(sent, got any, o Options) string {
	return diff(sent, got, o, true)
}

func diff(sent, got any, o Options, top bool) string {
	aside := func(k string) bool {
		if !top {
			return false
		}
		for _, a := range o.Aside {
			if a == k {
				return true
			}
		}
		return false
	}
	switch s := sent.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return fmt.Sprintf("object became %T", got)
		}
		if o.SkipObject != nil && o.SkipObject(s) {
			return ""
		}
		for k, v := range s {
			if aside(k) {
				continue
			}
			if ref, ok := v.(string); ok && k == "reference" && o.SkipReference != nil && o.SkipReference(ref) {
				continue
			}
			gv, present := g[k]
			if !present {
				return k + " is missing"
			}
			if d := diff(v, gv, o, false); d != "" {
				return k + "." + d
			}
		}
		if o.NoneAdded {
			for k := range g {
				if _, present := s[k]; !present && !aside(k) {
					return k + " was added"
				}
			}
		}
		return ""
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(s) {
			return fmt.Sprintf("array of %d became %v", len(s), got)
		}
		for i := range s {
			if d := diff(s[i], g[i], o, false); d != "" {
				return fmt.Sprintf("[%d].%s", i, d)
			}
		}
		return ""
	case json.Number:
		if g, ok := got.(json.Number); !ok || g != s {
			return fmt.Sprintf("number %s became %v", s, got)
		}
		return ""
	default:
		if sent != got {
			return fmt.Sprintf("%v became %v", sent, got)
		}
		return ""
	}
}

// TB is the part of testing.TB MustDecode needs.
type TB interface {
	Helper()
	Fatal(args ...any)
}

// MustDecode is Decode for tests: a failure ends the test.
func MustDecode(t TB, raw []byte) map[string]any {
	t.Helper()
	m, err := Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
