package backend

import (
	"bytes"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// recordingWriter is a ResponseWriter that snapshots the headers when they
// are sent and counts body bytes and flushes.
type recordingWriter struct {
	header  http.Header
	sent    http.Header // headers as sent
	status  int
	infos   []int // 1xx statuses
	body    bytes.Buffer
	written int64
	flushes int
}

func newRecordingWriter() *recordingWriter { return &recordingWriter{header: http.Header{}} }

func (w *recordingWriter) Header() http.Header { return w.header }

func (w *recordingWriter) WriteHeader(status int) {
	if status < 200 {
		w.infos = append(w.infos, status)
		return
	}
	if w.status != 0 {
		panic("WriteHeader twice")
	}
	w.status = status
	w.sent = w.header.Clone()
}

func (w *recordingWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	w.written += int64(len(p))
	return w.body.Write(p)
}

func (w *recordingWriter) Flush() { w.flushes++ }

const upBase = "http://hapi:8080/fhir"

func searchset(base string, entries int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `{"resourceType":"Bundle","type":"searchset","link":[{"relation":"self","url":"%s/Observation?_count=50"},{"relation":"next","url":"%s?_getpages=abc&_getpagesoffset=50"}],"entry":[`, base, base)
	for i := 0; i < entries; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"fullUrl":"%s/Observation/%d","resource":{"resourceType":"Observation","id":"%d","code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},"subject":{"reference":"%s/Patient/1"}},"search":{"mode":"match"}}`, base, i, i, base)
	}
	b.WriteString("]}")
	return b.String()
}

func TestResponseRewriterSmallBodyGetsContentLength(t *testing.T) {
	rec := newRecordingWriter()
	rw := NewResponseRewriter(rec, []string{upBase}, testPublic)
	body := searchset(upBase, 3)
	h := rw.Header()
	h.Set("Content-Type", "application/fhir+json;charset=UTF-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Location", upBase+"/Observation/1/_history/1")
	h.Set("Content-Location", upBase+"/Observation/1/_history/1")
	h.Set("ETag", `W/"1"`)
	rw.WriteHeader(http.StatusCreated)
	for i := 0; i < len(body); i += 7 {
		_, _ = rw.Write([]byte(body[i:min(i+7, len(body))]))
	}
	if rec.status != 0 {
		t.Fatal("a small body must be held until Close for its Content-Length")
	}
	if err := rw.Close(); err != nil {
		t.Fatal(err)
	}
	want := strings.ReplaceAll(body, upBase, testPublic)
	if rec.body.String() != want {
		t.Fatalf("body:\n got %s\nwant %s", rec.body.String(), want)
	}
	if rec.status != http.StatusCreated {
		t.Errorf("status %d", rec.status)
	}
	if got := rec.sent.Get("Content-Length"); got != strconv.Itoa(len(want)) {
		t.Errorf("Content-Length %s, want %d", got, len(want))
	}
	for _, name := range []string{"Location", "Content-Location"} {
		if got := rec.sent.Get(name); got != testPublic+"/Observation/1/_history/1" {
			t.Errorf("%s = %q", name, got)
		}
	}
	if rec.sent.Get("Etag") != `W/"1"` {
		t.Errorf("weak ETag dropped: %q", rec.sent.Get("Etag"))
	}
}

func TestResponseRewriterStrongETag(t *testing.T) {
	for _, c := range []struct {
		body     string
		keepETag bool
	}{
		{`{"url":"` + upBase + `/x"}`, false},
		{`{"url":"http://elsewhere/fhir/x"}`, true},
	} {
		rec := newRecordingWriter()
		rw := NewResponseRewriter(rec, []string{upBase}, testPublic)
		rw.Header().Set("Content-Type", "application/json")
		rw.Header().Set("ETag", `"abc"`)
		rw.Header().Set("Digest", "sha-256=xyz")
		_, _ = rw.Write([]byte(c.body))
		_ = rw.Close()
		if got := rec.sent.Get("Etag") != ""; got != c.keepETag {
			t.Errorf("body %s: strong ETag kept = %v, want %v", c.body, got, c.keepETag)
		}
		if got := rec.sent.Get("Digest") != ""; got != c.keepETag {
			t.Errorf("body %s: Digest kept = %v, want %v", c.body, got, c.keepETag)
		}
	}
}

// A 10 MB body streams: the rewriter never holds more than the buffer limit
// plus one carry, and the result is complete and right.
func TestResponseRewriterLargeBodyStreams(t *testing.T) {
	for _, declared := range []bool{true, false} {
		t.Run(fmt.Sprintf("declared length %v", declared), func(t *testing.T) {
			// A public base as long as the upstream one makes input and
			// output lengths equal, so in-out is exactly what is held.
			const public = "https://john.pfr/fhir"
			if len(public) != len(upBase) {
				t.Fatal("test bases must have equal lengths")
			}
			rec := newRecordingWriter()
			rw := NewResponseRewriter(rec, []string{upBase}, public)
			rw.BufferLimit = 64 << 10
			body := searchset(upBase, 41000) // > 10 MB
			if len(body) < 10<<20 {
				t.Fatalf("test body only %d bytes", len(body))
			}
			rw.Header().Set("Content-Type", "application/fhir+json")
			rw.Header().Set("ETag", `"strong"`)
			if declared {
				rw.Header().Set("Content-Length", strconv.Itoa(len(body)))
			}
			rw.WriteHeader(http.StatusOK)
			var in, maxHeld int64
			for i := 0; i < len(body); i += 32 << 10 {
				chunk := body[i:min(i+32<<10, len(body))]
				if _, err := rw.Write([]byte(chunk)); err != nil {
					t.Fatal(err)
				}
				in += int64(len(chunk))
				maxHeld = max(maxHeld, in-rec.written)
			}
			if err := rw.Close(); err != nil {
				t.Fatal(err)
			}
			if limit := int64(rw.BufferLimit + rw.rp.maxLen); maxHeld > limit {
				t.Errorf("held up to %d bytes, want at most %d", maxHeld, limit)
			}
			if declared && maxHeld > int64(rw.rp.maxLen) {
				t.Errorf("announced large body: held up to %d bytes, want at most one carry (%d)", maxHeld, rw.rp.maxLen)
			}
			if rec.body.String() != strings.ReplaceAll(body, upBase, public) {
				t.Fatal("streamed body differs from the expected rewrite")
			}
			if cl := rec.sent.Get("Content-Length"); cl != "" {
				t.Errorf("streamed body announced Content-Length %s", cl)
			}
			if rec.sent.Get("Etag") != "" {
				t.Error("a strong ETag must be dropped when the body streams")
			}
		})
	}
}

// Only bytes that may start a base are held back between writes.
func TestResponseRewriterHoldsOnlyCarryWhenStreaming(t *testing.T) {
	rec := newRecordingWriter()
	rw := NewResponseRewriter(rec, []string{upBase}, testPublic)
	rw.Header().Set("Content-Type", "application/fhir+json")
	rw.Header().Set("Content-Length", strconv.Itoa(10<<20))
	rw.WriteHeader(http.StatusOK)
	chunk := bytes.Repeat([]byte("0123456789abcdef"), 1<<12) // 64 KiB, no candidate
	for i := 0; i < 160; i++ {
		_, _ = rw.Write(chunk)
		if rec.written != int64((i+1)*len(chunk)) {
			t.Fatalf("after %d writes %d bytes were passed on, want all", i+1, rec.written)
		}
	}
	_, _ = rw.Write([]byte(`"http://hapi:80`))
	if held := int64(160*len(chunk)+15) - rec.written; held != int64(len(`http://hapi:80`)) {
		t.Errorf("held %d bytes, want only the undecided prefix", held)
	}
	_, _ = rw.Write([]byte(`80/fhir/x"`))
	_ = rw.Close()
	if !bytes.HasSuffix(rec.body.Bytes(), []byte(`"`+testPublic+`/x"`)) {
		t.Errorf("tail %q", rec.body.Bytes()[rec.body.Len()-60:])
	}
}

func TestResponseRewriterPassesThrough(t *testing.T) {
	body := `{"url":"` + upBase + `/x"}`
	cases := []struct {
		name, contentType, encoding string
	}{
		{"gzip body", "application/fhir+json", "gzip"},
		{"binary", "application/pdf", ""},
		{"no content type", "", ""},
		{"event stream", "text/event-stream", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := newRecordingWriter()
			rw := NewResponseRewriter(rec, []string{upBase}, testPublic)
			if c.contentType != "" {
				rw.Header().Set("Content-Type", c.contentType)
			}
			if c.encoding != "" {
				rw.Header().Set("Content-Encoding", c.encoding)
			}
			rw.Header().Set("Content-Length", strconv.Itoa(len(body)))
			rw.Header().Set("ETag", `"strong"`)
			rw.Header().Set("Location", upBase+"/x")
			_, _ = rw.Write([]byte(body))
			if rec.body.String() != body {
				t.Errorf("body changed or held: %q", rec.body.String())
			}
			_ = rw.Close()
			if rec.sent.Get("Content-Length") != strconv.Itoa(len(body)) || rec.sent.Get("Etag") != `"strong"` {
				t.Errorf("untouched body lost its headers: %v", rec.sent)
			}
			if rec.sent.Get("Location") != testPublic+"/x" {
				t.Errorf("Location not rewritten: %q", rec.sent.Get("Location"))
			}
		})
	}
}

func TestResponseRewriterNoBody(t *testing.T) {
	t.Run("HEAD", func(t *testing.T) {
		rec := newRecordingWriter()
		rw := NewResponseRewriter(rec, []string{upBase}, testPublic)
		rw.Header().Set("Content-Type", "application/fhir+json")
		rw.Header().Set("Content-Length", "1234")
		rw.WriteHeader(http.StatusOK)
		_ = rw.Close()
		if rec.status != http.StatusOK || rec.sent.Get("Content-Length") != "" {
			t.Errorf("HEAD: status %d, Content-Length %q (the rewritten length is unknown)", rec.status, rec.sent.Get("Content-Length"))
		}
	})
	t.Run("204", func(t *testing.T) {
		rec := newRecordingWriter()
		rw := NewResponseRewriter(rec, []string{upBase}, testPublic)
		rw.Header().Set("Content-Type", "application/fhir+json")
		rw.Header().Set("Content-Location", upBase+"/Patient/1")
		rw.WriteHeader(http.StatusNoContent)
		if rec.status != http.StatusNoContent {
			t.Error("204 must be sent at once")
		}
		_ = rw.Close()
		if rec.sent.Get("Content-Location") != testPublic+"/Patient/1" {
			t.Errorf("Content-Location %q", rec.sent.Get("Content-Location"))
		}
	})
	t.Run("nothing written", func(t *testing.T) {
		rec := newRecordingWriter()
		rw := NewResponseRewriter(rec, []string{upBase}, testPublic)
		if err := rw.Close(); err != nil || rec.status != 0 {
			t.Errorf("Close with nothing written: %v, status %d", err, rec.status)
		}
		if _, err := rw.Write([]byte("x")); err == nil {
			t.Error("Write after Close must fail")
		}
	})
}

func TestResponseRewriterFlushAndUnwrap(t *testing.T) {
	rec := newRecordingWriter()
	rw := NewResponseRewriter(rec, []string{upBase}, testPublic)
	rw.BufferLimit = 16
	rw.Header().Set("Content-Type", "application/fhir+json")
	rw.Header().Set("Link", "<"+upBase+"/x>; rel=next")
	rw.WriteHeader(http.StatusOK)
	_, _ = rw.Write([]byte("0123"))
	rw.Flush()
	if rec.flushes != 0 || rec.status != 0 {
		t.Fatal("a body still within the buffer limit must not be flushed")
	}
	_, _ = rw.Write([]byte(`0123456789abcdef "` + upBase + `/y" tail`))
	if err := http.NewResponseController(rw).Flush(); err != nil {
		t.Fatal(err)
	}
	if rec.flushes != 1 {
		t.Errorf("flushes = %d, want 1", rec.flushes)
	}
	if !strings.HasSuffix(rec.body.String(), `"`+testPublic+`/y" tail`) {
		t.Errorf("flushed body %q", rec.body.String())
	}
	if rec.sent.Get("Link") != "<"+testPublic+"/x>; rel=next" {
		t.Errorf("Link %q", rec.sent.Get("Link"))
	}
	if rw.Unwrap() != http.ResponseWriter(rec) {
		t.Error("Unwrap must return the wrapped writer")
	}
	_ = rw.Close()
	rw.WriteHeader(http.StatusTeapot) // ignored, must not panic
}

func TestResponseRewriterInformational(t *testing.T) {
	rec := newRecordingWriter()
	rw := NewResponseRewriter(rec, []string{upBase}, testPublic)
	rw.WriteHeader(http.StatusEarlyHints)
	rw.Header().Set("Content-Type", "application/fhir+json")
	_, _ = rw.Write([]byte(`"` + upBase + `"`))
	_ = rw.Close()
	if len(rec.infos) != 1 || rec.status != http.StatusOK || rec.body.String() != `"`+testPublic+`"` {
		t.Errorf("infos %v status %d body %q", rec.infos, rec.status, rec.body.String())
	}
}

// TestCommonFHIRJSON: every Content-Type rewritableBody accepts without
// parsing is one mime.ParseMediaType reads as a rewritable JSON type.
func TestCommonFHIRJSON(t *testing.T) {
	for ct := range commonFHIRJSON {
		mt, params, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/fhir+json" && mt != "application/json") || len(params) > 1 {
			t.Errorf("%q: %q %v %v", ct, mt, params, err)
		}
		h := http.Header{"Content-Type": {ct}}
		if !rewritableBody(h) {
			t.Errorf("%q not rewritable", ct)
		}
		h.Set("Content-Encoding", "gzip")
		if rewritableBody(h) {
			t.Errorf("%q gzip-coded rewritable", ct)
		}
	}
}

// TestResponseRewriterUnbuffered: with Unbuffered, a body small enough to
// be held streams instead (for a writer that holds it itself): the headers
// leave at WriteHeader without a Content-Length, the rewritten bytes at
// each write, and the body is the one a held rewrite gives.
func TestResponseRewriterUnbuffered(t *testing.T) {
	rec := newRecordingWriter()
	rw := NewResponseRewriter(rec, []string{upBase}, testPublic)
	rw.Unbuffered = true
	body := searchset(upBase, 3)
	h := rw.Header()
	h.Set("Content-Type", "application/fhir+json;charset=UTF-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	rw.WriteHeader(http.StatusOK)
	if rec.status != http.StatusOK || rec.sent.Get("Content-Length") != "" {
		t.Fatalf("headers not sent at WriteHeader without a length: status %d, Content-Length %q", rec.status, rec.sent.Get("Content-Length"))
	}
	for i := 0; i < len(body); i += 7 {
		_, _ = rw.Write([]byte(body[i:min(i+7, len(body))]))
	}
	if rec.written == 0 {
		t.Error("nothing written before Close")
	}
	if err := rw.Close(); err != nil {
		t.Fatal(err)
	}
	if want := strings.ReplaceAll(body, upBase, testPublic); rec.body.String() != want {
		t.Fatalf("body:\n got %s\nwant %s", rec.body.String(), want)
	}
}
