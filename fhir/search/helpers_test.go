package search

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pfrgateway/caddy-pfr/fhir"
)

// bundleEntry is one entry of a Synthea transaction Bundle.
type bundleEntry struct {
	FullURL  string         `json:"fullUrl"`
	Resource map[string]any `json:"resource"`
}

// loadBundles decodes the six Synthea Bundles, with json.Number numbers
// like the store keeps them.
func loadBundles(t testing.TB) map[string][]bundleEntry {
	t.Helper()
	files, err := filepath.Glob("../../testdata/fhir/synthea/*.json")
	if err != nil || len(files) != 6 {
		t.Fatalf("synthea bundles: %v %v", files, err)
	}
	out := map[string][]bundleEntry{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		var b struct{ Entry []bundleEntry }
		if err := dec.Decode(&b); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out[filepath.Base(f)] = b.Entry
	}
	return out
}

// stored rewrites a Bundle the way a store keeps it after the transaction:
// every urn:uuid reference becomes Type/id, and each resource gets
// meta.lastUpdated in entry order.
func stored(entries []bundleEntry) []map[string]any {
	byURL := map[string]string{}
	for _, e := range entries {
		byURL[e.FullURL] = e.Resource["resourceType"].(string) + "/" + e.Resource["id"].(string)
	}
	var out []map[string]any
	for i, e := range entries {
		data, _ := json.Marshal(e.Resource)
		for urn, ref := range byURL {
			data = bytes.ReplaceAll(data, []byte(`"`+urn+`"`), []byte(`"`+ref+`"`))
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		var r map[string]any
		if err := dec.Decode(&r); err != nil {
			panic(err)
		}
		meta, _ := r["meta"].(map[string]any)
		if meta == nil {
			meta = map[string]any{}
			r["meta"] = meta
		}
		meta["lastUpdated"] = "2024-01-01T00:00:" + twoDigits(i%60) + "Z"
		out = append(out, r)
	}
	return out
}

func twoDigits(n int) string { return string([]byte{byte('0' + n/10), byte('0' + n%10)}) }

func decodeJSON(t testing.TB, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("%v in %s", err, s)
	}
	return m
}

// decodeNumbers decodes JSON with json.Number numbers, as the store does.
func decodeNumbers(t testing.TB, s string) map[string]any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("%v in %s", err, s)
	}
	return m
}

// mustValues parses a query string.
func mustValues(t testing.TB, query string) url.Values {
	t.Helper()
	v, err := url.ParseQuery(query)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// mustParse parses a query string in lenient mode.
func mustParse(t testing.TB, resourceType, query string) *Query {
	t.Helper()
	v, err := url.ParseQuery(query)
	if err != nil {
		t.Fatal(err)
	}
	q, err := Parse(resourceType, v, false)
	if err != nil {
		t.Fatalf("Parse(%s?%s): %v", resourceType, query, err)
	}
	return q
}

// count returns how many resources q matches.
func count(q *Query, resources []map[string]any) int {
	n := 0
	for _, r := range resources {
		if q.Match(r) {
			n++
		}
	}
	return n
}

// wantBadRequest checks err is a 400 *fhir.Error that names want.
func wantBadRequest(t *testing.T, err error, want string) {
	t.Helper()
	var fe *fhir.Error
	if !errors.As(err, &fe) || fe.Status != http.StatusBadRequest {
		t.Fatalf("error %v is not a 400 *fhir.Error", err)
	}
	if !strings.Contains(fe.Error(), want) {
		t.Errorf("error %q does not name %q", fe.Error(), want)
	}
}

func ratOf(n int64) *big.Rat { return big.NewRat(n, 1) }
