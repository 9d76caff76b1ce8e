package fhirjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestRefusedNamesThePath(t *testing.T) {
	for _, c := range []struct{ in, path, says string }{
		{`{"resourceType":"Observation","valueQuantity":{"value":1e999}}`, "Observation.valueQuantity.value", "range of a double"},
		{`{"resourceType":"Observation","valueQuantity":{"value":-1E+400}}`, "Observation.valueQuantity.value", "range of a double"},
		{`{"resourceType":"Observation","valueQuantity":{"value":1e-999}}`, "Observation.valueQuantity.value", "range of a double"},
		{`{"resourceType":"Observation","valueInteger":1234567890123456789}`, "Observation.valueInteger", "significant digits"},
		{`{"resourceType":"Observation","valueDecimal":0.0000000001234567890123456789}`, "Observation.valueDecimal", "significant digits"},
		{`{"resourceType":"Bundle","entry":[{},{"resource":{"resourceType":"Observation","note":[{"text":"\ud800"}]}}]}`, "Bundle.entry[1].resource.note[0].text", "lone surrogate"},
		{`{"resourceType":"Patient","name":[{"family":"\udc00x"}]}`, "Patient.name[0].family", "lone surrogate"},
		{`{"resourceType":"Patient","name":[{"family":"\ud800\u0041"}]}`, "Patient.name[0].family", "lone surrogate"},
		{"{\"resourceType\":\"Patient\",\"gender\":\"\xff\"}", "Patient.gender", "UTF-8"},
		{"{\"resourceType\":\"Patient\",\"gender\":\"a\xc3\"}", "Patient.gender", "UTF-8"},
		{"{\"resourceType\":\"Patient\",\"\xed\xa0\x80\":1}", "Patient", "UTF-8"},
		{`{"resourceType":"Patient","active":true,"active":false}`, "Patient.active", "twice"},
		{`{"resourceType":"Patient","active":true,"\u0061ctive":false}`, "Patient.active", "twice"},
		{`{"resourceType":"Patient","subject":{"reference":"a","reference":"b"}}`, "Patient.subject.reference", "twice"},
		{"{\"resourceType\":\"Patient\",\"x\":\"a\tb\"}", "Patient.x", "control character"},
		{`{"resourceType":"Patient"} {}`, "Patient", "data after"},
		{`{"resourceType":"Patient","x":01}`, "Patient", ""},
		{`{"resourceType":"Patient","x":1.}`, "Patient.x", "decimal point"},
		{`{"resourceType":"Patient","x":NaN}`, "Patient.x", "invalid character"},
		{`{"resourceType":"Patient","x":"\x"}`, "Patient.x", "invalid escape"},
		{strings.Repeat(`[`, MaxDepth+1) + strings.Repeat(`]`, MaxDepth+1), "", "deeper"},
		{``, "", "end of JSON"},
		{`{"a":1,}`, "", "member name"},
	} {
		_, err := Decode([]byte(c.in))
		var e *Error
		if !errors.As(err, &e) {
			t.Errorf("%.80q: %v, want a refusal", c.in, err)
			continue
		}
		if c.path != "" && e.Path != c.path {
			t.Errorf("%.80q: path %q, want %q (%v)", c.in, e.Path, c.path, err)
		}
		if !strings.Contains(err.Error(), c.says) {
			t.Errorf("%.80q: %q does not say %q", c.in, err, c.says)
		}
		if Check([]byte(c.in)) == nil {
			t.Errorf("%.80q: Check accepts what Decode refuses", c.in)
		}
	}
}

func TestAcceptedEqualsEncodingJSON(t *testing.T) {
	for _, in := range []string{
		`{"resourceType":"Observation","valueQuantity":{"value":1.7976931348623157e308}}`,
		`{"v":[0,-0,0.0,1.50,123456789012345678,0.000000000000000000000000000001,4.9e-324,-2.5E+10]}`,
		`{"s":"\ud83d\ude00 \u00e9 é \"q\" \\ \/ \b\f\n\r\t \u0000","k\u00e9y":null,"t":true,"f":false,"e":{},"a":[]}`,
		` [ 1 , "x" ] `,
	} {
		got, err := Decode([]byte(in))
		if err != nil {
			t.Errorf("%q refused: %v", in, err)
			continue
		}
		if want := decodeStd(t, []byte(in)); !reflect.DeepEqual(got, want) {
			t.Errorf("%q: got %#v, want %#v", in, got, want)
		}
	}
}

// TestRealDocumentsPass runs every JSON file of the shared test data (real
// vendors' IPS documents, Synthea, the spec's examples) through Decode: all
// pass, and decode as encoding/json does.
func TestRealDocumentsPass(t *testing.T) {
	root := filepath.Join("..", "..", "..", "shared", "testdata", "fhir")
	if _, err := os.Stat(root); err != nil {
		root = filepath.Join("..", "..", "testdata", "fhir")
	}
	n := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".json") {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		n++
		got, err := Decode(data)
		if err != nil {
			t.Errorf("%s: %v", path, err)
			return nil
		}
		if !reflect.DeepEqual(got, decodeStd(t, data)) {
			t.Errorf("%s: decodes differently from encoding/json", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 10 {
		t.Fatalf("only %d test documents found under %s", n, root)
	}
}

func decodeStd(t testing.TB, data []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("encoding/json refuses %q: %v", data, err)
	}
	return v
}

// FuzzDecode: whatever Decode accepts, encoding/json accepts and decodes to
// the same value, and the value survives encoding and decoding again.
func FuzzDecode(f *testing.F) {
	many := `{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":10,"k11":11,"k12":12,"k13":13,"k14":14,"k15":15,"k16":16,"k3":3}`
	for _, s := range []string{`{"a":1e5}`, `{"s":"\ud83d\ude00"}`, `[1,2,{"x":null}]`, `"\u00e9"`, `{"a":{"a":[0.5]}}`,
		many, `{"a":1,"\u0061":2}`, `[123456789012345,1234567890123456,0.000000000000001,1e999,1e-999]`, `{"resourceType":"Patient","id":"\u0070"}`} {
		f.Add([]byte(s))
	}
	f.Add([]byte(`{"long string\u0000":"0123456789abcdef\"\\x\u00e9é ","k":[1,{"a":"b"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := Decode(data)
		if (Check(data) == nil) != (err == nil) {
			t.Fatalf("Check and Decode disagree on %q: %v", data, err)
		}
		// CheckVisit checks the same and shows valid values one or two
		// steps down, one visit per member or element one step down.
		top := 0
		errV := CheckVisit(data, MaxDepth, 2, func(path []Step, start, end int) {
			if len(path) < 1 || len(path) > 2 || !json.Valid(data[start:end]) {
				t.Fatalf("%q: visited %d steps down: %q", data, len(path), data[start:end])
			}
			if len(path) == 1 {
				top++
			}
		})
		if (errV == nil) != (err == nil) {
			t.Fatalf("CheckVisit and Decode disagree on %q: %v, %v", data, errV, err)
		}
		if err != nil {
			return
		}
		switch v := got.(type) {
		case map[string]any:
			if top != len(v) {
				t.Fatalf("%q: %d visits one step down, want %d", data, top, len(v))
			}
		case []any:
			if top != len(v) {
				t.Fatalf("%q: %d visits one step down, want %d", data, top, len(v))
			}
		}
		if !reflect.DeepEqual(got, decodeStd(t, data)) {
			t.Fatalf("%q decodes differently from encoding/json", data)
		}
		again, err := json.Marshal(got)
		if err != nil {
			t.Fatalf("re-encoding %q: %v", data, err)
		}
		back, err := Decode(again)
		if err != nil || !reflect.DeepEqual(back, got) {
			t.Fatalf("%q does not round-trip: %s, %v", data, again, err)
		}
	})
}

// TestCheckVisit: the values near the top, in document order, a container
// after its contents, with their paths.
func TestCheckVisit(t *testing.T) {
	data := []byte(`{"resourceType":"Bundle", "entry":[ {"fullUrl":"u","resource":{"resourceType":"Patient","name":[{"text":"A"}]}}, 7 ],"t\u0079pe":"collection"}`)
	var got []string
	err := CheckVisit(data, 0, 3, func(path []Step, start, end int) {
		var b strings.Builder
		for _, s := range path {
			if s.Index >= 0 {
				fmt.Fprintf(&b, "[%d]", s.Index)
			} else {
				fmt.Fprintf(&b, ".%s", s.Name)
			}
		}
		got = append(got, b.String()+"="+string(data[start:end]))
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`.resourceType="Bundle"`,
		`.entry[0].fullUrl="u"`,
		`.entry[0].resource={"resourceType":"Patient","name":[{"text":"A"}]}`,
		`.entry[0]={"fullUrl":"u","resource":{"resourceType":"Patient","name":[{"text":"A"}]}}`,
		`.entry[1]=7`,
		`.entry=[ {"fullUrl":"u","resource":{"resourceType":"Patient","name":[{"text":"A"}]}}, 7 ]`,
		`.type="collection"`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("visited:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// A refusal is the same as Check's, with the path.
	bad := []byte(`{"resourceType":"Bundle","entry":[{"resource":{"a":1,"a":2}}]}`)
	errV := CheckVisit(bad, 0, 2, func([]Step, int, int) {})
	if errV == nil || errV.Error() != Check(bad).Error() {
		t.Errorf("CheckVisit: %v; Check: %v", errV, Check(bad))
	}
}

// TestStringStop: the eight-byte searches for the end of a string's
// plain bytes (stringStop for the decoder, scanString's for ScanValue)
// stop where a byte loop stops, for every byte at every position of the
// first and the second eight bytes and in the tail, alone and before
// another.
func TestStringStop(t *testing.T) {
	stops := func(c byte, nonASCII bool) bool { return c == '"' || c == '\\' || c < 0x20 || nonASCII && c >= 0x80 }
	want := func(data []byte, nonASCII bool) int {
		for i, c := range data {
			if stops(c, nonASCII) {
				return i
			}
		}
		return len(data)
	}
	check := func(data []byte) {
		t.Helper()
		if got := stringStop(data, 0); got != want(data, true) {
			t.Fatalf("stringStop(%q): %d, want %d", data, got, want(data, true))
		}
		// scanString: the same stop without multi-byte sequences; a
		// quote there ends the string, anything else is scanned on.
		quoted := append([]byte{'"'}, data...)
		n, err := scanString(quoted)
		if stop := want(data, false); stop < len(data) && data[stop] == '"' && (err != nil || n != stop+2) {
			t.Fatalf("scanString(%q): %d, %v; want %d", quoted, n, err, stop+2)
		}
	}
	for pos := range 19 {
		for c := range 256 {
			data := []byte("abcdefghijklmnopqrs")
			data[pos] = byte(c)
			check(data)
			for pos2 := pos + 1; pos2 < len(data); pos2++ {
				for _, c2 := range []byte{0, 0x1f, 0x20, '"', '\\', 0x7f, 0x80, 0xff} {
					d2 := bytes.Clone(data)
					d2[pos2] = c2
					check(d2)
				}
			}
		}
	}
}
