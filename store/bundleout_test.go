package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
)

// TestBundleJSONAgreesWithEncodingJSON: the Bundle writer says what
// encoding/json says of the same struct (decoded, the same JSON value),
// for every optional part present or not and strings that need escaping,
// and copies each resource's bytes as stored.
func TestBundleJSONAgreesWithEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 14))
	strs := []string{"", "a", "searchset", `quo"te`, `back\slash`, "tab\there\nnew", "\x01\x1f", "<div>&amp;</div>",
		"ünïcödé €", "\u2028\u2029", "bad \xff utf-8", "http://x/fhir/Observation/1?a=b&c=d"}
	str := func() string { return strs[rng.IntN(len(strs))] }
	resources := []json.RawMessage{
		json.RawMessage(`{"resourceType":"Observation","id":"1","text":{"div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">a &lt; b</div>"},"valueQuantity":{"value":1.50}}`),
		json.RawMessage(`{"resourceType":"Patient","name":[{"given":["Zoë","\u00e9"]}],"x":[1,2.0e3,true,null,{}]}`),
		json.RawMessage(`{"resourceType":"OperationOutcome","issue":[]}`),
	}
	opt := func() bool { return rng.IntN(2) == 0 }
	for i := range 500 {
		b := &outBundle{ResourceType: "Bundle", Type: str()}
		if opt() {
			b.ID = str()
		}
		if opt() {
			b.Meta = &outMeta{}
			if opt() {
				b.Meta.LastUpdated = str()
			}
		}
		if opt() {
			n := rng.IntN(1000) - 1
			b.Total = &n
		}
		for range rng.IntN(3) {
			b.Link = append(b.Link, outLink{Relation: str(), URL: str()})
		}
		for range rng.IntN(4) {
			var e outEntry
			if opt() {
				e.FullURL = str()
			}
			if opt() {
				e.Resource = resources[rng.IntN(len(resources))]
			}
			if opt() {
				e.Search = &outSearch{Mode: str()}
			}
			if opt() {
				e.Request = &outRequest{Method: str(), URL: str()}
			}
			if opt() {
				e.Response = &outResponse{Status: str()}
				if opt() {
					e.Response.Location, e.Response.Etag, e.Response.LastModified = str(), str(), str()
				}
				if opt() {
					e.Response.Outcome = resources[2]
				}
			}
			b.Entry = append(b.Entry, e)
		}
		got := b.appendJSON(nil)
		want, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		var gotV, wantV any
		if err := json.Unmarshal(got, &gotV); err != nil {
			t.Fatalf("bundle %d: invalid JSON %s: %v", i, got, err)
		}
		if err := json.Unmarshal(want, &wantV); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(gotV, wantV) {
			t.Fatalf("bundle %d:\n got %s\nwant %s", i, got, want)
		}
		// encoding/json's member order, so a page reads as before.
		if !bytes.HasPrefix(got, []byte(`{"resourceType":"Bundle"`)) {
			t.Fatalf("bundle %d starts %.40s", i, got)
		}
		for _, e := range b.Entry {
			if len(e.Resource) > 0 && !bytes.Contains(got, e.Resource) {
				t.Fatalf("bundle %d: the resource's stored bytes are not in %s", i, got)
			}
		}
	}
}

// TestSearchEntriesAreStoredBytes: every Bundle the store answers with
// (search, history, a batch's read, a transaction's return=representation)
// carries each resource exactly as a read returns it: a narrative's "<div>"
// and "&" as written, decimals as sent.
func TestSearchEntriesAreStoredBytes(t *testing.T) {
	s := newTestServer(t)
	s.createPartition(1)
	obs := `{"resourceType":"Observation","status":"final","code":{"text":"a < b & c > d"},` +
		`"text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">a &lt; b <b>bold</b></div>"},` +
		`"valueQuantity":{"value":1.500,"unit":"mg"}}`
	created := s.must(http.StatusCreated, http.MethodPost, "/fhir/Observation", "1", obs, "Prefer", "return=representation")
	id := str(created.JSON(t), "id")
	read := s.must(http.StatusOK, http.MethodGet, "/fhir/Observation/"+id, "1", nil).Body
	if !bytes.Contains(read, []byte(`<b>bold</b>`)) || !bytes.Contains(read, []byte(`1.500`)) {
		t.Fatalf("the read changed the resource: %s", read)
	}
	batch := `{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"Observation/` + id + `"}},` +
		`{"request":{"method":"GET","url":"Observation?code:text=a"}}]}`
	for name, body := range map[string][]byte{
		"search":  s.must(http.StatusOK, http.MethodGet, "/fhir/Observation?_id="+id, "1", nil).Body,
		"history": s.must(http.StatusOK, http.MethodGet, "/fhir/Observation/"+id+"/_history", "1", nil).Body,
		"batch":   s.must(http.StatusOK, http.MethodPost, "/fhir", "1", batch).Body,
	} {
		if n := bytes.Count(body, read); n == 0 {
			t.Errorf("%s: the resource is not in it as read:\n%s\nread:\n%s", name, body, read)
		}
		if !json.Valid(body) {
			t.Errorf("%s: not valid JSON: %s", name, body)
		}
	}
}

// TestPooledBundlesUnderConcurrentSearches: searches answered at the same
// time from writeBundle's pooled buffers each get their own page — the
// resources they match, whole — however the buffers go round.
func TestPooledBundlesUnderConcurrentSearches(t *testing.T) {
	s := newTestServer(t)
	s.createPartition(1)
	const codes, each = 6, 5
	for c := range codes {
		for i := range each {
			obs := fmt.Sprintf(`{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"urn:test","code":"c%d"}]},"valueString":"%s"}`,
				c, strings.Repeat(fmt.Sprintf("c%d-", c), 40*(i+1)))
			s.must(http.StatusCreated, http.MethodPost, "/fhir/Observation", "1", obs)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, codes)
	for c := range codes {
		wg.Go(func() {
			for range 40 {
				res := s.do(http.MethodGet, fmt.Sprintf("/fhir/Observation?code=urn:test|c%d", c), "1", nil)
				var page struct {
					Entry []struct {
						Resource struct{ ValueString string } `json:"resource"`
					} `json:"entry"`
				}
				if err := json.Unmarshal(res.Body, &page); err != nil || res.Status != http.StatusOK || len(page.Entry) != each {
					errs <- fmt.Errorf("code c%d: status %d, %d entries, %v: %.200s", c, res.Status, len(page.Entry), err, res.Body)
					return
				}
				for _, e := range page.Entry {
					if v := e.Resource.ValueString; strings.Trim(v, fmt.Sprintf("c%d-", c)) != "" {
						errs <- fmt.Errorf("code c%d: an entry of another search: %.60s", c, v)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
