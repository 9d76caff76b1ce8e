package fhir

import (
	"bytes"
	"encoding/json"
	"fmt"
	"github.com/pfrgateway/caddy-pfr/fhir/fhirpath"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
	"io"
	"strings"
	"testing"
)

// storedEntries turns a Synthea transaction Bundle into searchset entries
// as an upstream returns them: each resource with an id and relative
// references, its Patient given patientID.
func storedEntries(t *testing.T, data []byte, patientID string) []any {
	t.Helper()
	bundle := testkit.DecodeFHIR(t, data)
	target := map[string]string{}
	var out []any
	for _, raw := range bundle["entry"].([]any) {
		e := raw.(map[string]any)
		res := e["resource"].(map[string]any)
		if res["resourceType"] == "Patient" {
			res["id"] = patientID
		}
		target[e["fullUrl"].(string)] = res["resourceType"].(string) + "/" + res["id"].(string)
		out = append(out, map[string]any{"fullUrl": "https://john.pfr.localhost:8443/fhir/" + target[e["fullUrl"].(string)], "resource": res, "search": map[string]any{"mode": "match"}})
	}
	for _, m := range entryReferences(map[string]any{"entry": out}) {
		if to, ok := target[m["reference"].(string)]; ok {
			m["reference"] = to
		}
	}
	return out
}

// TestFilterSearchsetSynthea mixes two people's records in one searchset,
// as an upstream that ignores partitions would return them: the filter
// keeps every entry of the PFR's person and the shared Organizations and
// Practitioners, drops every entry of the other person, and leaves the
// kept entries and Bundle.total untouched.
func TestFilterSearchsetSynthea(t *testing.T) {
	var files [][]byte
	for _, data := range testkit.Synthea(t) {
		files = append(files, data)
	}
	own := storedEntries(t, files[0], testOwner.PatientID)
	other := storedEntries(t, files[1], "someone-else")
	var entries []any
	wantRemoved := 0
	for i := range max(len(own), len(other)) {
		if i < len(own) {
			entries = append(entries, own[i])
		}
		if i < len(other) {
			entries = append(entries, other[i])
			typ := other[i].(map[string]any)["resource"].(map[string]any)["resourceType"].(string)
			if InPatientCompartment(typ) {
				wantRemoved++
			}
		}
	}
	body, err := json.Marshal(map[string]any{"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries})
	if err != nil {
		t.Fatal(err)
	}
	p := DefaultOwnershipPolicy()
	var out bytes.Buffer
	removed, err := FilterSearchset(bytes.NewReader(body), &out, func(res map[string]any) bool { return testOwner.Belongs(res, p) })
	if err != nil {
		t.Fatal(err)
	}
	if removed != wantRemoved || wantRemoved < 50 {
		t.Errorf("removed %d, want %d", removed, wantRemoved)
	}
	got := testkit.DecodeFHIR(t, out.Bytes())
	if got["total"] != json.Number(fmt.Sprint(len(entries))) || got["type"] != "searchset" {
		t.Errorf("total %v type %v", got["total"], got["type"])
	}
	kept := got["entry"].([]any)
	if len(kept) != len(entries)-wantRemoved {
		t.Fatalf("kept %d of %d", len(kept), len(entries))
	}
	for i, e := range kept {
		res := e.(map[string]any)["resource"].(map[string]any)
		if !testOwner.Belongs(res, p) {
			t.Errorf("kept entry %d does not belong: %v %v", i, res["resourceType"], res["id"])
		}
	}
	ownIdx := 0
	for _, e := range kept {
		if ownIdx < len(own) && fhirpath.JSONEqual(e, testkit.DecodeFHIR(t, testkit.MustJSON(t, own[ownIdx]))) {
			ownIdx++
		}
	}
	if ownIdx != len(own) {
		t.Errorf("only %d of the %d own entries kept unchanged and in order", ownIdx, len(own))
	}
}

// keepOwnObservations keeps resources whose id starts with "own".
func keepOwn(res map[string]any) bool {
	id, _ := res["id"].(string)
	return strings.HasPrefix(id, "own")
}

func TestFilterSearchset(t *testing.T) {
	tests := []struct {
		name, in, want string
		removed        int
	}{
		{"Patient passes byte for byte", "{ \"resourceType\" : \"Patient\",\n \"id\":\"x\" }\n", "{ \"resourceType\" : \"Patient\",\n \"id\":\"x\" }\n", 0},
		{"OperationOutcome passes", `{"resourceType":"OperationOutcome","issue":[]}`, `{"resourceType":"OperationOutcome","issue":[]}`, 0},
		{"not JSON passes", "<Bundle/> not json", "<Bundle/> not json", 0},
		{"array passes", `[{"entry":[{"resource":{"id":"x"}}]}]`, `[{"entry":[{"resource":{"id":"x"}}]}]`, 0},
		{"empty body", "", "", 0},
		{"filtered", `{"resourceType":"Bundle","type":"searchset","total":3,"entry":[{"resource":{"id":"own1"}},{"resource":{"id":"x"}},{"resource":{"id":"own2"}}]}`,
			`{"resourceType":"Bundle","type":"searchset","total":3,"entry":[{"resource":{"id":"own1"}},{"resource":{"id":"own2"}}]}`, 1},
		{"whitespace", "{\n  \"resourceType\": \"Bundle\",\n  \"entry\": [\n    {\"resource\": {\"id\": \"x\"}},\n    {\"resource\": {\"id\": \"own\"}}\n  ]\n}\n",
			"{\"resourceType\":\"Bundle\",\"entry\":[{\"resource\": {\"id\": \"own\"}}]}\n", 1},
		{"all removed", `{"resourceType":"Bundle","entry":[{"resource":{"id":"x"}},{"resource":{"id":"y"}}]}`, `{"resourceType":"Bundle","entry":[]}`, 2},
		{"resourceType after entry", `{"entry":[{"resource":{"id":"x"}}],"resourceType":"Bundle"}`, `{"entry":[],"resourceType":"Bundle"}`, 1},
		{"duplicate entry members", `{"resourceType":"Bundle","entry":[{"resource":{"id":"own"}}],"entry":[{"resource":{"id":"x"}}]}`,
			`{"resourceType":"Bundle","entry":[{"resource":{"id":"own"}}],"entry":[]}`, 1},
		{"entries without resource kept", `{"resourceType":"Bundle","type":"batch-response","entry":[{"response":{"status":"204"}},{"resource":null}]}`,
			`{"resourceType":"Bundle","type":"batch-response","entry":[{"response":{"status":"204"}},{"resource":null}]}`, 0},
		{"null entry", `{"resourceType":"Bundle","entry":null}`, `{"resourceType":"Bundle","entry":null}`, 0},
		{"no HTML escaping", `{"resourceType":"Bundle","<&>":"<&>","entry":[]}`, `{"resourceType":"Bundle","<&>":"<&>","entry":[]}`, 0},
		{"numbers kept as written", `{"resourceType":"Bundle","total":1.50e3,"entry":[{"resource":{"id":"own","v":1.000000000000000000001}}]}`,
			`{"resourceType":"Bundle","total":1.50e3,"entry":[{"resource":{"id":"own","v":1.000000000000000000001}}]}`, 0},
		{"empty object", `{}`, `{}`, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			removed, err := FilterSearchset(strings.NewReader(tc.in), &out, keepOwn)
			if err != nil {
				t.Fatal(err)
			}
			if out.String() != tc.want || removed != tc.removed {
				t.Errorf("got %q (removed %d), want %q (removed %d)", out.String(), removed, tc.want, tc.removed)
			}
			// The same body held whole: the same answer, the body unchanged.
			body := []byte(tc.in)
			var held bytes.Buffer
			removed, err = FilterBundleBytes(body, &held, keepOwn, FilterOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if held.String() != tc.want || removed != tc.removed || string(body) != tc.in {
				t.Errorf("held whole: got %q (removed %d), want %q (removed %d); body now %q", held.String(), removed, tc.want, tc.removed, body)
			}
		})
	}
}

func TestFilterSearchsetErrors(t *testing.T) {
	for _, in := range []string{
		`{"resourceType":"Bundle","entry":[{"resource":{"id":"own"}}`,
		`{"resourceType":"Bundle","entry":[{"resource":{"id":"own"}},]}`,
		`{"resourceType":"Bundle","entry":{"resource":{"id":"own"}}}`,
		`{"resourceType":"Bundle","entry":[{"resource":"x"}]}`,
		`{"resourceType":"Bundle","entry":[]`,
		`{"resourceType":"Bundle" "entry":[]}`,
		`{"entry":[{"resource":{"id":"x"}}`,
	} {
		if _, err := FilterSearchset(strings.NewReader(in), io.Discard, keepOwn); err == nil {
			t.Errorf("no error for %s", in)
		}
		if _, err := FilterBundleBytes([]byte(in), new(bytes.Buffer), keepOwn, FilterOptions{}); err == nil {
			t.Errorf("held whole: no error for %s", in)
		}
	}
	if _, err := FilterSearchset(strings.NewReader(`{"resourceType":"Bundle","entry":[]}`), failingWriter{}, keepOwn); err == nil {
		t.Error("write error not reported")
	}
	if _, err := FilterSearchset(strings.NewReader(`{"resourceType":"Patient"}`), failingWriter{}, keepOwn); err == nil {
		t.Error("write error not reported on pass-through")
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }

// lazySearchset is a reader that makes a searchset of n entries of about
// 1 KB as it is read, alternating entries to keep ("own…") and to drop.
type lazySearchset struct {
	n, made int
	pending []byte
}

func (l *lazySearchset) Read(p []byte) (int, error) {
	for len(l.pending) == 0 {
		switch {
		case l.made == 0:
			l.pending = []byte(`{"resourceType":"Bundle","type":"searchset","entry":[`)
		case l.made <= l.n:
			id, patient := fmt.Sprintf("x%d", l.made), "other"
			if l.made%2 == 0 {
				id, patient = fmt.Sprintf("own%d", l.made), testOwner.PatientID
			}
			sep := ","
			if l.made == 1 {
				sep = ""
			}
			l.pending = fmt.Appendf(nil, `%s{"resource":{"resourceType":"Observation","id":%q,"subject":{"reference":"Patient/%s"},"note":[{"text":%q}]}}`, sep, id, patient, strings.Repeat("n", 1000))
		case l.made == l.n+1:
			l.pending = []byte(`]}`)
		default:
			return 0, io.EOF
		}
		l.made++
	}
	n := copy(p, l.pending)
	l.pending = l.pending[n:]
	return n, nil
}

// laggingWriter checks, at each write, that the reader has not run far
// ahead of what was written: the filter streams rather than reading the
// whole body first.
type laggingWriter struct {
	t       *testing.T
	src     *lazySearchset
	lastOwn int
	maxLag  int
	bytes   int
}

func (w *laggingWriter) Write(p []byte) (int, error) {
	w.bytes += len(p)
	for _, part := range strings.Split(string(p), `"own`)[1:] {
		var k int
		if _, err := fmt.Sscanf(part, "%d", &k); err == nil && k > w.lastOwn {
			w.lastOwn = k
		}
	}
	if lag := w.src.made - w.lastOwn; w.lastOwn > 0 && lag > w.maxLag {
		w.maxLag = lag
	}
	return len(p), nil
}

// TestFilterSearchsetStreams filters a 10 MB searchset made on the fly and
// checks that output follows input closely: the entries the filter has
// read are never more than a few dozen ahead of those it has written.
func TestFilterSearchsetStreams(t *testing.T) {
	src := &lazySearchset{n: 10000}
	w := &laggingWriter{t: t, src: src}
	removed, err := FilterSearchset(src, w, keepOwn)
	if err != nil {
		t.Fatal(err)
	}
	if removed != 5000 || w.lastOwn != 10000 {
		t.Fatalf("removed %d, last kept %d", removed, w.lastOwn)
	}
	if w.bytes < 5_000_000 {
		t.Fatalf("wrote only %d bytes", w.bytes)
	}
	t.Logf("largest lag: %d entries", w.maxLag)
	if w.maxLag > 64 {
		t.Errorf("the reader ran %d entries ahead of the output", w.maxLag)
	}
}

func BenchmarkFilterSearchset(b *testing.B) {
	var buf bytes.Buffer
	n, _ := io.Copy(&buf, &lazySearchset{n: 2000})
	p := DefaultOwnershipPolicy()
	keep := func(res map[string]any) bool { return testOwner.Belongs(res, p) }
	b.SetBytes(n)
	b.ReportAllocs()
	for b.Loop() {
		removed, err := FilterSearchset(bytes.NewReader(buf.Bytes()), io.Discard, keep)
		if err != nil || removed != 1000 {
			b.Fatal(removed, err)
		}
	}
}

// TestFilterBundleShapes: Shape cuts down the kept matches only (an
// included resource stays whole, a refused one stays out), numbers keep
// their spelling, and Link rewrites every link.
func TestFilterBundleShapes(t *testing.T) {
	in := `{"resourceType":"Bundle","type":"searchset","link":[{"relation":"self","url":"https://x/fhir/Observation?code=a"},{"relation":"next","url":"https://x/fhir?_getpages=p&_getpagesoffset=2"}],"entry":[` +
		`{"resource":{"resourceType":"Observation","id":"o1","code":{"text":"a"},"valueQuantity":{"value":1.50},"subject":{"reference":"Patient/p"}},"search":{"mode":"match"}},` +
		`{"resource":{"resourceType":"Observation","id":"o2","code":{"text":"a"},"subject":{"reference":"Patient/other"}},"search":{"mode":"match"}},` +
		`{"resource":{"resourceType":"Patient","id":"p","gender":"female"},"search":{"mode":"include"}}]}`
	keep := func(res map[string]any) bool { return res["id"] != "o2" }
	var out bytes.Buffer
	removed, err := FilterBundle(strings.NewReader(in), &out, keep, FilterOptions{
		Shape: func(res map[string]any) map[string]any {
			return map[string]any{"resourceType": res["resourceType"], "id": res["id"], "valueQuantity": res["valueQuantity"]}
		},
		Link: func(u string) string { return u + "&_elements=value" },
	})
	if err != nil || removed != 1 {
		t.Fatalf("removed %d, %v", removed, err)
	}
	got := out.String()
	for _, want := range []string{
		`{"resource":{"id":"o1","resourceType":"Observation","valueQuantity":{"value":1.50}},"search":{"mode":"match"}}`,
		`{"resource":{"resourceType":"Patient","id":"p","gender":"female"},"search":{"mode":"include"}}`,
		`"url":"https://x/fhir/Observation?code=a&_elements=value"`,
		`"url":"https://x/fhir?_getpages=p&_getpagesoffset=2&_elements=value"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %s in\n%s", want, got)
		}
	}
	if strings.Contains(got, `"o2"`) || strings.Contains(got, `"subject"`) {
		t.Errorf("refused or shaped-away content left: %s", got)
	}
}
