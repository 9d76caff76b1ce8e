package fhirjson

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// checkNames: ScanValueNames answers exactly as ScanValue does (length,
// incomplete, syntax error) on data and on every prefix of it, and on a
// valid value it reports every member name, at its depth, with its value
// at the index given.
func checkNames(t *testing.T, data []byte) {
	t.Helper()
	for end := len(data); end >= 0; end-- {
		part := data[:end]
		type named struct {
			depth int
			name  string
			value string
		}
		var got []named
		n, err := ScanValueNames(part, NameFunc(func(depth int, name []byte, at int) {
			v := ""
			if m, err := ScanValue(part[at:]); err == nil {
				v = string(part[at : at+m])
			}
			got = append(got, named{depth, string(name), v})
		}))
		want, wantErr := ScanValue(part)
		var se, wantSE *SyntaxError
		switch {
		case n != want:
			t.Fatalf("ScanValueNames(%q) = %d, ScanValue %d", part, n, want)
		case errors.Is(wantErr, ErrIncomplete) != errors.Is(err, ErrIncomplete),
			errors.As(wantErr, &wantSE) != errors.As(err, &se),
			wantSE != nil && *wantSE != *se,
			(wantErr == nil) != (err == nil):
			t.Fatalf("ScanValueNames(%q): %v, ScanValue: %v", part, err, wantErr)
		}
		if err != nil || end != len(data) {
			continue
		}
		// What encoding/json sees: every member, in order, at its depth.
		var wantNames []named
		dec := json.NewDecoder(strings.NewReader(string(part[:n])))
		var walk func(depth int) bool
		walk = func(depth int) bool {
			tok, err := dec.Token()
			if err != nil {
				return false
			}
			switch tok {
			case json.Delim('{'):
				for dec.More() {
					key, _ := dec.Token()
					raw, _ := json.Marshal(key)
					var v json.RawMessage
					// The value as sent: decode it raw, then walk it again.
					if err := dec.Decode(&v); err != nil {
						return false
					}
					if !validName(part, raw) {
						raw = nil // escaped in the data: compared below by content
					}
					wantNames = append(wantNames, named{depth + 1, string(raw), string(v)})
					inner := json.NewDecoder(strings.NewReader(string(v)))
					saved := dec
					dec = inner
					walk(depth + 1)
					dec = saved
				}
				dec.Token()
			case json.Delim('['):
				for dec.More() {
					if !walk(depth + 1) {
						return false
					}
				}
				dec.Token()
			}
			return true
		}
		walk(0)
		if len(got) != len(wantNames) {
			t.Fatalf("ScanValueNames(%q) reported %d members, encoding/json sees %d", part, len(got), len(wantNames))
		}
		for i := range got {
			var gv, wv any
			json.Unmarshal([]byte(got[i].value), &gv)
			json.Unmarshal([]byte(wantNames[i].value), &wv)
			var gn, wn string
			json.Unmarshal([]byte(got[i].name), &gn)
			json.Unmarshal([]byte(wantNames[i].name), &wn)
			if got[i].depth != wantNames[i].depth || wantNames[i].name != "" && gn != wn || !reflect.DeepEqual(gv, wv) {
				t.Fatalf("ScanValueNames(%q): member %d is %+v, encoding/json sees %+v", part, i, got[i], wantNames[i])
			}
		}
	}
}

// validName reports whether quoted occurs in data as it is (it was not
// written with other escapes).
func validName(data, quoted []byte) bool { return strings.Contains(string(data), string(quoted)) }

func TestScanValueNames(t *testing.T) {
	for _, c := range append(scanCases,
		`{"resource":{"resourceType":"Observation","subject":{"reference":"Patient/p1"},"x":[{"a":{"b":1}},[{"c":2}]]}}`,
		`{"a":{"a":{"a":{}}},"b":[],"c":{}}`, `{"n\u0061me":1}`, `[{"a":1},{"b":[{"c":null}]}]`) {
		checkNames(t, []byte(c))
	}
	// Depths as the filter uses them: an entry's members are 1, its
	// resource's 2, an element of an array in the resource 4.
	var got []string
	entry := `{"fullUrl":"u","resource":{"resourceType":"Observation","performer":[{"reference":"Practitioner/x"}]}}`
	if _, err := ScanValueNames([]byte(entry), NameFunc(func(depth int, name []byte, at int) {
		got = append(got, strings.Repeat(".", depth)+string(name)+"@"+entry[at:at+1])
	})); err != nil {
		t.Fatal(err)
	}
	want := []string{`."fullUrl"@"`, `."resource"@{`, `.."resourceType"@"`, `.."performer"@[`, `...."reference"@"`}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("names %q, want %q", got, want)
	}
}

// FuzzScanValueNames: ScanValueNames and ScanValue answer alike on any
// input and its prefixes, and the names reported are encoding/json's.
func FuzzScanValueNames(f *testing.F) {
	for _, c := range scanCases {
		f.Add(c)
	}
	f.Add(`{"resource":{"resourceType":"Observation","subject":{"reference":"Patient/p1"}}}`)
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > 4096 {
			return // every prefix is scanned: keep a case quick
		}
		checkNames(t, []byte(s))
	})
}

// sieved is a NameSieve that records what it hears.
type sieved struct {
	depth   int
	lengths uint64
	heard   []string
}

func (s *sieved) Sieve() (int, uint64) { return s.depth, s.lengths }
func (s *sieved) Name(depth int, name []byte, at int) {
	s.heard = append(s.heard, fmt.Sprintf("%d %s %d", depth, name, at))
}

// TestNameSieve: a NameSieve hears of exactly the names its sieve lets
// through, with what a visitor that hears all is told of them.
func TestNameSieve(t *testing.T) {
	doc := []byte(`{"resourceType":"Observation","id":"o1","subject":{"reference":"Patient/p"},` +
		`"component":[{"code":{"coding":[{"system":"s","code":"c"}]},"contained":[]}],"x":{"y":{"reference":"R/1","ab":1}}}`)
	for _, sv := range []sieved{{depth: 1}, {depth: 2, lengths: 1 << 11}, {depth: 0, lengths: 1<<4 | 1<<6}, {depth: -1}} {
		var all []string
		var allDepth []int
		var allLen []int
		if _, err := ScanValueNames(doc, NameFunc(func(depth int, name []byte, at int) {
			all = append(all, fmt.Sprintf("%d %s %d", depth, name, at))
			allDepth, allLen = append(allDepth, depth), append(allLen, len(name))
		})); err != nil {
			t.Fatal(err)
		}
		var want []string
		for k := range all {
			if allDepth[k] <= sv.depth || sv.lengths>>allLen[k]&1 != 0 {
				want = append(want, all[k])
			}
		}
		s := sv
		if _, err := ScanValueNames(doc, &s); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(s.heard, want) {
			t.Errorf("sieve %d, %b: heard %q, want %q", sv.depth, sv.lengths, s.heard, want)
		}
	}
}
