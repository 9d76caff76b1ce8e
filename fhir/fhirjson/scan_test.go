package fhirjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"testing"
)

var scanCases = []string{
	`{}`, `[]`, `{"a":1}`, ` {"a" : [1, 2.5, -0.1e+3, true, false, null, "x\"y\\u00e9\n"]} `,
	`{"a":{"b":{"c":[[],[{}]]}}}`, `"just a string"`, `[1,2]`, `-0`, `0.5E-7`,
	`{"a":1,}`, `{"a" 1}`, `{a:1}`, `[1 2]`, `[1,]`, `{"a":01}`, `{"a":1.}`, `{"a":.5}`, `{"a":-}`,
	`{"a":"\x"}`, `{"a":"\u12g4"}`, "{\"a\":\"tab\there\"}", `{"a":tru}`, `{"a":nul}`, `[}`, `{]`,
	`{"a":1}}`, `{"a":"unterminated}`, `[1,2`, `{"a":[1,2],"b":{"c":"d"}`, `{"a":1e}`, `{"a":1e+}`,
}

// TestScanValueMatchesEncodingJSON: a value ScanValue accepts is one
// encoding/json accepts, and the other way round, on complete documents.
func TestScanValueMatchesEncodingJSON(t *testing.T) {
	for _, c := range scanCases {
		checkScan(t, []byte(c))
	}
}

func checkScan(t *testing.T, data []byte) {
	t.Helper()
	n, err := ScanValue(data)
	valid := json.Valid(data)
	switch {
	case err == nil:
		if n > 0 && skipSpace(data, n-1) != n-1 {
			t.Fatalf("ScanValue(%q) = %d: the whitespace after the value is counted", data, n)
		}
		if !json.Valid(data[:n]) {
			t.Fatalf("ScanValue(%q) = %d, but %q is not valid JSON", data, n, data[:n])
		}
		if rest := data[skipSpace(data, n):]; valid != (len(rest) == 0) {
			t.Fatalf("ScanValue(%q) = %d, leaving %q; json.Valid says %v", data, n, data[n:], valid)
		}
	case errors.Is(err, ErrIncomplete):
		// A complete document is incomplete only as a bare number at the end.
		trimmed := bytes.TrimRight(data, " \t\r\n")
		if valid && !(len(trimmed) > 0 && trimmed[len(trimmed)-1] >= '0' && trimmed[len(trimmed)-1] <= '9') {
			t.Fatalf("ScanValue(%q): incomplete, but it is valid JSON", data)
		}
	default:
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Fatalf("ScanValue(%q): %T %v, want a *SyntaxError", data, err, err)
		}
		if valid {
			t.Fatalf("ScanValue(%q): %v, but it is valid JSON", data, err)
		}
		if se.Offset < 0 || se.Offset > len(data) {
			t.Fatalf("ScanValue(%q): offset %d outside the data", data, se.Offset)
		}
	}
}

// TestScanValueIncomplete: every proper prefix of a value that is an
// object or array is incomplete, never an error or a shorter value.
func TestScanValueIncomplete(t *testing.T) {
	doc := []byte(`{"a":[1,-2.5e3,"x\"\u00e9",true,false,null,{"b":{}}],"c":"d"}`)
	for i := range len(doc) {
		if _, err := ScanValue(doc[:i]); !errors.Is(err, ErrIncomplete) {
			t.Errorf("ScanValue(%q) = %v, want ErrIncomplete", doc[:i], err)
		}
	}
	if n, err := ScanValue(doc); err != nil || n != len(doc) {
		t.Errorf("the whole: %d, %v", n, err)
	}
}

func TestScanValueDepth(t *testing.T) {
	deep := append(bytes.Repeat([]byte("["), MaxScanDepth+1), bytes.Repeat([]byte("]"), MaxScanDepth+1)...)
	var se *SyntaxError
	if _, err := ScanValue(deep); !errors.As(err, &se) {
		t.Errorf("nested %d deep: %v, want a syntax error", MaxScanDepth+1, err)
	}
	ok := append(bytes.Repeat([]byte("["), 100), bytes.Repeat([]byte("]"), 100)...)
	if n, err := ScanValue(ok); err != nil || n != len(ok) {
		t.Errorf("nested 100 deep: %d, %v", n, err)
	}
}

func FuzzScanValue(f *testing.F) {
	for _, c := range scanCases {
		f.Add(c)
	}
	f.Add(`{"0123456789abcdef":"0123456789\"abcdef\\u00e9\néxyz\u0000 0123456789"}`)
	f.Fuzz(func(t *testing.T, s string) { checkScan(t, []byte(s)) })
}

// TestMembersAndElements: they accept exactly the objects and arrays
// encoding/json accepts, and hand out every member and element as sent.
func TestMembersAndElements(t *testing.T) {
	for _, c := range append(scanCases, `{"a":1} x`, `{"a":1}  `, `[1,[2],{"b":3}] `, `{"a":1,"a":2}`, `[1,2,]`, `{"a" : 5 }`, `{"n":12}`) {
		data := []byte(c)
		var names []string
		var values []any
		errM := Members(data, func(name, value []byte) error {
			names = append(names, string(name))
			var v any
			if err := json.Unmarshal(value, &v); err != nil {
				t.Fatalf("%s: member value %q is not JSON: %v", c, value, err)
			}
			values = append(values, v)
			return nil
		})
		var m map[string]any
		isObject := json.Unmarshal(data, &m) == nil && m != nil
		if (errM == nil) != isObject {
			t.Errorf("Members(%s): %v; encoding/json says object %v", c, errM, isObject)
		}
		if errM == nil && len(names) == 0 && len(m) != 0 {
			t.Errorf("Members(%s) found no member", c)
		}
		var elems []json.RawMessage
		errE := Elements(data, func(i int, value []byte) error {
			if i != len(elems) {
				t.Fatalf("%s: index %d, want %d", c, i, len(elems))
			}
			elems = append(elems, value)
			return nil
		})
		var a []json.RawMessage
		isArray := json.Unmarshal(data, &a) == nil && a != nil
		if (errE == nil) != isArray {
			t.Errorf("Elements(%s): %v; encoding/json says array %v", c, errE, isArray)
		}
		if errE == nil && len(elems) != len(a) {
			t.Errorf("Elements(%s): %d elements, want %d", c, len(elems), len(a))
		}
	}
}

// TestStopMaskIsThreeZeroTests: stopMask, which clears the high bits of w
// once for its three tests, flags what the three textbook zero-byte tests
// ((x-0x01…)&^x&0x80… for x = w^'"', w^'\\' and w with 0x20 for 0x01)
// flag together, for words made of the bytes that matter and their
// neighbours, and for random words.
func TestStopMaskIsThreeZeroTests(t *testing.T) {
	zero := func(x, one uint64) uint64 { return (x - one) &^ x & highs }
	textbook := func(w uint64) uint64 {
		return zero(w^'"'*lows, lows) | zero(w^'\\'*lows, lows) | zero(w, 0x20*lows)
	}
	special := []byte{0, 1, 0x1f, 0x20, 0x21, '"', 0x23, '\\' - 1, '\\', '\\' + 1, 0x7f, 0x80, 0xa2, 0xdc, 0xff}
	rng := rand.New(rand.NewPCG(3, 4))
	for round := 0; round < 200000; round++ {
		var w uint64
		for b := 0; b < 8; b++ {
			c := uint64(rng.IntN(256))
			if rng.IntN(2) == 0 {
				c = uint64(special[rng.IntN(len(special))])
			}
			w |= c << (8 * b)
		}
		if got, want := stopMask(w), textbook(w); got != want {
			t.Fatalf("stopMask(%#016x) = %#016x, want %#016x", w, got, want)
		}
	}
}
