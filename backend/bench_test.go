package backend

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"testing"
)

// discardWriter is a ResponseWriter that throws the body away.
type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) WriteHeader(int)             {}
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }

// benchBases are what a typical route holds: the proxied Host and one
// configured upstream URL.
var benchBases = []string{"http://john.pfr.localhost:8443/fhir", "http://hapi:8080/fhir"}

// BenchmarkStreamRewriter measures the core rewrite of a 50-entry
// searchset page in 32 KiB writes (the copy buffer of a reverse proxy).
func BenchmarkStreamRewriter(b *testing.B) {
	body := []byte(searchset(upBase, 50))
	rp := newReplacer(benchBases, testPublic)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		s := newStreamRewriter(rp, io.Discard)
		for i := 0; i < len(body); i += 32 << 10 {
			_, _ = s.Write(body[i:min(i+32<<10, len(body))])
		}
		_ = s.Close()
	}
}

// BenchmarkStreamRewriterSynthea measures the rewrite of a 50-entry page
// of real Observations (Synthea's, many code systems' URLs in each) from
// an upstream at 127.0.0.1: the bases are the fullUrls and links, as in a
// search's answer.
func BenchmarkStreamRewriterSynthea(b *testing.B) {
	const base = "http://127.0.0.1:8080/fhir"
	data, err := os.ReadFile("../testdata/fhir/synthea/Ned_Hintz_e4b9259d-0f54-48d1-a35d-b526729a4dfe.json")
	if err != nil {
		b.Fatal(err)
	}
	var bundle struct {
		Entry []struct {
			Resource json.RawMessage `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(data, &bundle); err != nil {
		b.Fatal(err)
	}
	page := []byte(`{"resourceType":"Bundle","type":"searchset","link":[{"relation":"self","url":"` + base + `/Observation?_count=50"}],"entry":[`)
	n := 0
	for _, e := range bundle.Entry {
		var res struct{ ResourceType string }
		if err := json.Unmarshal(e.Resource, &res); err != nil {
			b.Fatal(err)
		}
		if n == 50 || res.ResourceType != "Observation" {
			continue
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, e.Resource); err != nil {
			b.Fatal(err)
		}
		if n > 0 {
			page = append(page, ',')
		}
		page = fmt.Appendf(page, `{"fullUrl":"%s/Observation/%d","resource":%s,"search":{"mode":"match"}}`, base, n, compact.Bytes())
		n++
	}
	page = append(page, "]}"...)
	rp := newReplacer([]string{"http://john.pfr.localhost:8443/fhir", base}, testPublic)
	b.SetBytes(int64(len(page)))
	for b.Loop() {
		s := newStreamRewriter(rp, io.Discard)
		for i := 0; i < len(page); i += 32 << 10 {
			_, _ = s.Write(page[i:min(i+32<<10, len(page))])
		}
		_ = s.Close()
	}
}

// BenchmarkStreamRewriterNoMatch measures a body with many http URLs (code
// systems) but no upstream base: the cost every page pays.
func BenchmarkStreamRewriterNoMatch(b *testing.B) {
	body := []byte(searchset("http://elsewhere.example/fhir", 50))
	rp := newReplacer(benchBases, testPublic)
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		s := newStreamRewriter(rp, io.Discard)
		_, _ = s.Write(body)
		_ = s.Close()
	}
}

// BenchmarkResponseRewriter measures the whole wrapper, with header
// rewriting and Content-Length buffering, on small and large pages.
func BenchmarkResponseRewriter(b *testing.B) {
	for _, entries := range []int{1, 50, 2000} {
		body := []byte(searchset(upBase, entries))
		b.Run(strconv.Itoa(entries)+"-entries", func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				w := &discardWriter{h: http.Header{}}
				rw := NewResponseRewriter(w, benchBases, testPublic)
				w.h.Set("Content-Type", "application/fhir+json")
				w.h.Set("Content-Length", strconv.Itoa(len(body)))
				w.h.Set("Location", upBase+"/Observation/1")
				rw.WriteHeader(http.StatusOK)
				for i := 0; i < len(body); i += 32 << 10 {
					_, _ = rw.Write(body[i:min(i+32<<10, len(body))])
				}
				_ = rw.Close()
			}
		})
	}
}
