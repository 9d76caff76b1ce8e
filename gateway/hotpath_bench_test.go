package gateway_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/pfrgateway/caddy-pfr/gateway"
)

// cannedAnswer is an upstream answer recorded once and replayed.
type cannedAnswer struct {
	status int
	header http.Header
	body   []byte
}

// recordAnswer sends one request through the pipeline in front of the
// embedded store and returns the store's answer to the gateway's upstream
// request, as the store gave it.
func recordAnswer(b *testing.B, wp *writePath, path string) cannedAnswer {
	b.Helper()
	var got cannedAnswer
	up := wp.up
	wp.up = func(w http.ResponseWriter, r *http.Request) error {
		rec := httptest.NewRecorder()
		err := up(rec, r)
		got = cannedAnswer{status: rec.Code, header: rec.Header().Clone(), body: rec.Body.Bytes()}
		for k, vs := range got.header {
			w.Header()[k] = vs
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(got.body)
		return err
	}
	defer func() { wp.up = up }()
	if res := wp.do(b, "GET", "fuzz.pfr.localhost", path, nil); res.Code != http.StatusOK {
		b.Fatalf("GET %s: %d %s", path, res.Code, res.Body)
	}
	return got
}

// replay is an upstream that answers every request with a.
func (a cannedAnswer) replay(w http.ResponseWriter, _ *http.Request) error {
	h := w.Header()
	for k, vs := range a.header {
		h[k] = vs
	}
	w.WriteHeader(a.status)
	_, err := w.Write(a.body)
	return err
}

// discardWriter is a ResponseWriter that keeps the status and the body's
// length, with one header map reused between requests.
type discardWriter struct {
	h      http.Header
	status int
	n      int
}

func (d *discardWriter) Header() http.Header { return d.h }
func (d *discardWriter) WriteHeader(s int) {
	if d.status == 0 {
		d.status = s
	}
}
func (d *discardWriter) Write(p []byte) (int, error) {
	if d.status == 0 {
		d.status = http.StatusOK
	}
	d.n += len(p)
	return len(p), nil
}

// benchmarkHotPath measures the pipeline's own work on one kind of request
// to a record (an untrusted upstream: ownership filter on), the upstream's
// answer replayed from memory, so that allocs/op and ns/op are the
// gateway's alone: what bench/gateway's per-request CPU profile calls the
// pfr handler without its upstream.
func benchmarkHotPath(b *testing.B, path func(wp *writePath, obs []string) string) {
	wp := newPipeline(b, false)
	var obs []string
	for i := range 50 {
		body := fmt.Sprintf(`{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}],"text":"Heart rate %d"},`+
			`"subject":{"reference":"Patient/%s"},"effectiveDateTime":"2024-01-01T10:%02d:00Z","valueQuantity":{"value":%d,"unit":"/min","system":"http://unitsofmeasure.org","code":"/min"}}`,
			i, wp.pid, i, 60+i)
		res := wp.do(b, "POST", "fuzz.pfr.localhost", "/fhir/Observation", []byte(body))
		if res.Code != http.StatusCreated {
			b.Fatalf("creating an Observation: %d %s", res.Code, res.Body)
		}
		loc := res.Header().Get("Location")
		id := loc[bytes.LastIndexByte([]byte(loc), '/')+1:]
		if i := bytes.Index([]byte(loc), []byte("/_history")); i >= 0 {
			loc = loc[:i]
			id = loc[bytes.LastIndexByte([]byte(loc), '/')+1:]
		}
		obs = append(obs, id)
	}
	p := path(wp, obs)
	canned := recordAnswer(b, wp, p)
	up := gateway.UpstreamFunc(canned.replay)
	req := httptest.NewRequest("GET", "http://fuzz.pfr.localhost"+p, nil)
	req.Host = "fuzz.pfr.localhost"
	req.Header.Set("Authorization", "Bearer "+wp.token)
	req.Header.Set("Accept", "application/fhir+json")
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		clear(w.h)
		w.status, w.n = 0, 0
		if err := wp.gw.ServeHTTP(w, req, up); err != nil {
			b.Fatal(err)
		}
		if w.status != http.StatusOK || w.n == 0 {
			b.Fatalf("GET %s: status %d, %d bytes", p, w.status, w.n)
		}
	}
}

// BenchmarkHotPathRead is a read of an Observation through the pipeline.
func BenchmarkHotPathRead(b *testing.B) {
	benchmarkHotPath(b, func(_ *writePath, obs []string) string { return "/fhir/Observation/" + obs[0] })
}

// BenchmarkHotPathSearch50 is a search answered by a searchset of 50
// Observations, each judged by the response filter.
func BenchmarkHotPathSearch50(b *testing.B) {
	benchmarkHotPath(b, func(*writePath, []string) string { return "/fhir/Observation?_count=50" })
}
