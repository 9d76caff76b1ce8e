package fhirjson

import (
	"bytes"
	"encoding/json"
	"errors"
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
