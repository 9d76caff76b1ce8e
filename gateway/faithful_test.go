package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/pfrgateway/caddy-pfr/backend"
	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/internal/fhirvalues"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
	"github.com/pfrgateway/caddy-pfr/store"
)

// TestValuesByteFaithful is the property "what is read back equals what
// was written, byte for byte in its values" (ids, meta and narrative
// aside), for every resource in ../testdata, on every path that
// re-serializes a resource on its way to the store and back: the
// gateway's decoding and stamping of a direct write, a transaction, the
// embedded store itself, the response rewriter and the response filter
// (on a read and on a searchset).
func TestValuesByteFaithful(t *testing.T) {
	testkit.Slow(t, "every resource of testdata written and read back through the pipeline")
	resources := testdataResources(t)
	if len(resources) < 5000 {
		t.Fatalf("only %d resources found in ../testdata", len(resources))
	}
	db, err := store.Open(filepath.Join(t.TempDir(), "store.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	st, err := store.NewHandler(db, store.Config{})
	if err != nil {
		t.Fatal(err)
	}
	const upstreamBase, publicBase = "http://upstream.test/fhir", "https://john.pfr.example/fhir"
	// call sends a request as the gateway does and reads the answer
	// through the gateway's response path.
	call := func(method, path string, body []byte, single bool) (int, []byte) {
		req := httptest.NewRequest(method, upstreamBase+path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/fhir+json")
		req.Header.Set("X-Request-Partition-IDs", "DEFAULT")
		rec := httptest.NewRecorder()
		filter := &filteringWriter{w: rec, log: zap.NewNop(), record: "rec1", limit: 32 << 20, single: single,
			keep: func(map[string]any) bool { return true }}
		rw := backend.NewResponseRewriter(filter, []string{upstreamBase}, publicBase)
		st.ServeHTTP(rw, req)
		if err := rw.Close(); err != nil {
			t.Fatal(err)
		}
		if err := filter.Close(); err != nil {
			t.Fatal(err)
		}
		return rec.Code, rec.Body.Bytes()
	}

	// Every resource twice: by a direct write (the PUT of what the
	// gateway forwards) and in a transaction (all the entries of its
	// Bundle, with their fullUrls, so that references between them
	// resolve as FHIR says).
	for i, r := range resources {
		res := forwarded(t, r, "d", i)
		body, err := json.Marshal(res) // what setJSONBody forwards
		if err != nil {
			t.Fatal(err)
		}
		if code, out := call(http.MethodPut, "/"+res["resourceType"].(string)+"/"+res["id"].(string), body, true); code != http.StatusCreated && code != http.StatusOK {
			t.Fatalf("%s: PUT: %d %.500s", r.where, code, out)
		}
	}
	var batch []any
	for i, r := range resources {
		res := forwarded(t, r, "x", i)
		// A transaction resolves references (FHIR says so), which is not
		// what this test is about: a URN that is no entry's fullUrl (the
		// store refuses it, as HAPI does) and a conditional reference
		// (resolved by a search of the partition) are left out.
		fhir.EachReference(res, func(obj map[string]any, ref string) {
			if (strings.HasPrefix(ref, "urn:") && !r.fullURLs[ref]) || strings.Contains(ref, "?") {
				delete(obj, "reference")
			}
		})
		batch = append(batch, map[string]any{"fullUrl": r.fullURL, "resource": res,
			"request": map[string]any{"method": "PUT", "url": res["resourceType"].(string) + "/" + res["id"].(string)}})
		if i+1 < len(resources) && resources[i+1].bundle == r.bundle && r.bundle != "" {
			continue
		}
		body, err := json.Marshal(map[string]any{"resourceType": "Bundle", "type": "transaction", "entry": batch})
		if err != nil {
			t.Fatal(err)
		}
		if code, out := call(http.MethodPost, "", body, false); code != http.StatusOK {
			t.Fatalf("%s: transaction: %d %.500s", r.where, code, out)
		}
		batch = nil
	}

	failures := 0
	fail := func(where, id, diff string) {
		failures++
		if failures <= 20 {
			t.Errorf("%s (%s): %s", where, id, diff)
		}
	}
	// A transaction rewrites references (see above): those are not
	// compared.
	rewrittenIn := map[string]func(string) bool{
		"d": func(string) bool { return false },
		"x": func(string) bool { return true },
	}
	byType := map[string][]int{}
	for i, r := range resources {
		sent := decodeNumbers(t, r.raw)
		typ, _ := sent["resourceType"].(string)
		byType[typ] = append(byType[typ], i)
		for _, prefix := range []string{"d", "x"} {
			id := fmt.Sprintf("%s%d", prefix, i)
			code, out := call(http.MethodGet, "/"+typ+"/"+id, nil, true)
			if code != http.StatusOK {
				t.Fatalf("%s: read: %d %.300s", r.where, code, out)
			}
			if diff := sameValues(sent, decodeNumbers(t, out), rewrittenIn[prefix]); diff != "" {
				fail(r.where, id, diff)
			}
		}
	}
	// And in searchsets, through the Bundle filter (each search scans its
	// type: ids go 100 at a time).
	for typ, idx := range byType {
		for _, prefix := range []string{"d", "x"} {
			for start := 0; start < len(idx); start += 100 {
				chunk := idx[start:min(start+100, len(idx))]
				ids := make([]string, len(chunk))
				for k, i := range chunk {
					ids[k] = fmt.Sprintf("%s%d", prefix, i)
				}
				_, page := call(http.MethodGet, "/"+typ+"?_count=100&_id="+strings.Join(ids, ","), nil, false)
				got := map[string]any{}
				for _, e := range anyList(decodeNumbers(t, page)["entry"]) {
					res, _ := e.(map[string]any)["resource"].(map[string]any)
					got[fmt.Sprint(res["id"])] = res
				}
				for k, i := range chunk {
					if got[ids[k]] == nil {
						fail(resources[i].where, ids[k], "not found by a search")
					} else if diff := sameValues(decodeNumbers(t, resources[i].raw), got[ids[k]], rewrittenIn[prefix]); diff != "" {
						fail(resources[i].where, ids[k], "in a searchset: "+diff)
					}
				}
			}
		}
	}
	if failures > 0 {
		t.Errorf("%d of %d resources came back changed", failures, len(resources))
	}
	t.Logf("%d resources written and read back", len(resources))
}

// testResource is one resource of ../testdata, as its file has it.
type testResource struct {
	where string
	raw   []byte
	// bundle names the Bundle it is an entry of ("" for a file of its
	// own), fullURL its entry's fullUrl, fullURLs all of that Bundle's.
	bundle   string
	fullURL  string
	fullURLs map[string]bool
}

// forwarded is r as the gateway forwards a write of it: decoded strictly,
// given id prefix+i, stamped with the record.
func forwarded(t *testing.T, r testResource, prefix string, i int) map[string]any {
	res, err := fhir.DecodeResource(r.raw)
	if err != nil {
		t.Fatalf("%s: %v", r.where, err)
	}
	res["id"] = fmt.Sprintf("%s%d", prefix, i)
	stamp(res, "rec1")
	return res
}

// testdataResources returns every resource in ../testdata: each file that
// is a resource, and every entry of every Bundle (at any depth).
func testdataResources(t *testing.T) []testResource {
	var out []testResource
	var walk func(where string, raw json.RawMessage, in testResource)
	walk = func(where string, raw json.RawMessage, in testResource) {
		var head struct {
			ResourceType string `json:"resourceType"`
			Entry        []struct {
				FullURL  string          `json:"fullUrl"`
				Resource json.RawMessage `json:"resource"`
			} `json:"entry"`
		}
		if json.Unmarshal(raw, &head) != nil || head.ResourceType == "" {
			return
		}
		if head.ResourceType != "Bundle" {
			in.where, in.raw = where, raw
			out = append(out, in)
			return
		}
		b := testResource{bundle: where, fullURLs: map[string]bool{}}
		for _, e := range head.Entry {
			if e.FullURL != "" {
				b.fullURLs[e.FullURL] = true
			}
		}
		for i, e := range head.Entry {
			if len(e.Resource) > 0 {
				b.fullURL = e.FullURL
				walk(fmt.Sprintf("%s entry[%d]", where, i), e.Resource, b)
			}
		}
	}
	err := filepath.WalkDir(filepath.Join("..", "testdata"), func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".json") {
			return err
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		walk(path, raw, testResource{})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// sameValues: every value of sent is in got, byte for byte, and nothing
// was added; id, meta and narrative (text) aside, and the references
// rewritten accepts.
func sameValues(sent, got any, rewritten func(string) bool) string {
	return fhirvalues.Diff(sent, got, fhirvalues.Options{Aside: []string{"id", "meta", "text"}, SkipReference: rewritten, NoneAdded: true})
}

func anyList(v any) []any { l, _ := v.([]any); return l }

func decodeNumbers(t *testing.T, raw []byte) map[string]any { return fhirvalues.MustDecode(t, raw) }
