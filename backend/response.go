package backend

import (
	"bytes"
	"errors"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// DefaultBufferLimit is the largest rewritten body NewResponseRewriter
// holds to send it with an exact Content-Length; larger bodies stream out
// chunked.
const DefaultBufferLimit = 256 << 10

// rewrittenHeaders hold URLs the upstream may have written with its own base.
var rewrittenHeaders = []string{"Location", "Content-Location", "Link"}

// integrityHeaders describe the exact upstream bytes; they are dropped, like
// a strong ETag, when the body may have changed.
var integrityHeaders = []string{"Content-Md5", "Digest", "Content-Digest", "Repr-Digest"}

// ResponseRewriter is an http.ResponseWriter that replaces upstream FHIR
// base URLs by the PFR's public base in the Location, Content-Location and
// Link headers and in textual bodies (JSON, XML, text/plain, text/html;
// anything else, and any Content-Encoding but identity, passes untouched:
// compressed bytes cannot be rewritten, which is why Outbound strips
// Accept-Encoding).
//
// A rewritten body is buffered up to BufferLimit bytes so that it can be
// sent with its exact Content-Length; past that, or when the upstream
// announced a larger Content-Length, it streams out without one (chunked),
// with only a carry of at most one base URL held between writes. A weak
// ETag (W/"3", a FHIR version) is kept; a strong ETag and digest headers are
// dropped when the body changed, and always when it streams, since the
// headers leave before the body is known.
//
// Call Close after the upstream handler returns: it writes the carry and
// any buffered body. ResponseRewriter is not safe for concurrent use, like
// any ResponseWriter.
type ResponseRewriter struct {
	// BufferLimit is the buffering threshold; set it before the first write.
	// Zero means DefaultBufferLimit.
	BufferLimit int
	// Unbuffered, set before the first write, streams every rewritten body
	// as it comes (as one past BufferLimit does) instead of holding it for
	// its exact Content-Length: for a writer that holds the body itself
	// and sends it with a length of its own (the gateway's response
	// filter), so that the body is not held twice.
	Unbuffered bool

	w        http.ResponseWriter
	rp       *replacer
	status   int  // 0 until WriteHeader
	sent     bool // headers sent to w
	rewrite  bool // the body goes through stream
	buffered bool // the rewritten body is held in buf
	buf      bytes.Buffer
	pooled   *[]byte        // where buf's memory goes back to (bodyBuffers)
	stream   streamRewriter // its carry and scratch allocated only when used
	in       int64          // body bytes received from the upstream
	closed   bool
}

// NewResponseRewriter wraps w so that every URL starting with one of bases
// (absolute upstream FHIR base URLs, in either scheme) is rewritten to start
// with publicBase (e.g. "https://john.pfr.localhost:8443/fhir") instead.
func NewResponseRewriter(w http.ResponseWriter, bases []string, publicBase string) *ResponseRewriter {
	rw := new(ResponseRewriter)
	rw.Reset(w, bases, publicBase)
	return rw
}

// Reset makes rw what NewResponseRewriter(w, bases, publicBase) returns,
// in rw's own memory (a writer kept between requests), forgetting
// everything it was. Close it first if it was used.
func (rw *ResponseRewriter) Reset(w http.ResponseWriter, bases []string, publicBase string) {
	*rw = ResponseRewriter{w: w, rp: cachedReplacer(bases, publicBase)}
}

// Header returns the header map of the wrapped writer.
func (rw *ResponseRewriter) Header() http.Header { return rw.w.Header() }

// Unwrap returns the wrapped writer, for http.ResponseController.
func (rw *ResponseRewriter) Unwrap() http.ResponseWriter { return rw.w }

// WriteHeader records the status and decides how the body travels.
// Informational (1xx) statuses pass through at once.
func (rw *ResponseRewriter) WriteHeader(status int) {
	if rw.status != 0 {
		return
	}
	if status >= 100 && status < 200 && status != http.StatusSwitchingProtocols {
		rw.w.WriteHeader(status)
		return
	}
	rw.status = status
	h := rw.w.Header()
	if rw.rp != nil {
		for _, name := range rewrittenHeaders {
			vals := h[name]
			for i, v := range vals {
				vals[i], _ = rw.rp.replaceString(v)
			}
		}
	}
	rw.rewrite = rw.rp != nil && bodyAllowed(status) && rewritableBody(h)
	if !rw.rewrite {
		rw.send()
		return
	}
	declared, err := strconv.ParseInt(h.Get("Content-Length"), 10, 64)
	if rw.Unbuffered || err == nil && declared > int64(rw.limit()) {
		rw.startStreaming()
	} else {
		rw.buffered = true
		rw.pooled = bodyBuffers.Get().(*[]byte)
		rw.buf = *bytes.NewBuffer((*rw.pooled)[:0])
		if err == nil && declared > 0 {
			// Room for the body with longer URLs, in one allocation.
			rw.buf.Grow(min(int(declared)+int(declared)/4+1024, rw.limit()))
		}
	}
	rw.stream = streamRewriter{rp: rw.rp, out: bodySink{rw}}
}

// Write sends p through the rewriter (writing a 200 header first if none
// was written).
func (rw *ResponseRewriter) Write(p []byte) (int, error) {
	if rw.closed {
		return 0, errors.New("backend: write after Close")
	}
	if rw.status == 0 {
		rw.WriteHeader(http.StatusOK)
	}
	if !rw.rewrite {
		return rw.w.Write(p)
	}
	rw.in += int64(len(p))
	return rw.stream.Write(p)
}

// Flush sends what has been rewritten so far. While the body is still being
// buffered for its Content-Length (at most BufferLimit bytes), Flush waits
// for Close; the carry (an undecided base URL prefix) is never flushed.
func (rw *ResponseRewriter) Flush() {
	if rw.status == 0 {
		rw.WriteHeader(http.StatusOK)
	}
	if !rw.sent {
		return
	}
	_ = http.NewResponseController(rw.w).Flush()
}

// Close finishes the body: it rewrites the carry and sends a buffered body
// with its Content-Length. It does nothing when nothing was written. Close
// is idempotent.
func (rw *ResponseRewriter) Close() error {
	if rw.closed {
		return nil
	}
	rw.closed = true
	if rw.status == 0 || !rw.rewrite {
		return nil
	}
	if err := rw.stream.Close(); err != nil {
		return err
	}
	if !rw.buffered {
		return nil
	}
	h := rw.w.Header()
	switch {
	case rw.in > 0:
		h.Set("Content-Length", strconv.Itoa(rw.buf.Len()))
	case h.Get("Content-Length") != "" && h.Get("Content-Length") != "0":
		// No body but an announced length: a HEAD answer. The rewritten
		// length is unknown, and HEAD may omit it.
		h.Del("Content-Length")
	}
	if rw.stream.replaced > 0 {
		dropIntegrity(h)
	}
	rw.buffered = false
	rw.send()
	_, err := rw.w.Write(rw.buf.Bytes())
	// w does not keep what it was given (io.Writer): the memory is free
	// for the next answer.
	if b := rw.buf.Bytes(); rw.pooled != nil && cap(b) <= maxPooledBody {
		*rw.pooled = b[:0]
		bodyBuffers.Put(rw.pooled)
	}
	rw.buf, rw.pooled = bytes.Buffer{}, nil
	return err
}

// bodyBuffers keep the memory of buffered bodies between answers, up to
// maxPooledBody each (a read's resource is a few kilobytes).
var bodyBuffers = sync.Pool{New: func() any { return new([]byte) }}

const maxPooledBody = 1 << 20

func (rw *ResponseRewriter) limit() int {
	if rw.BufferLimit > 0 {
		return rw.BufferLimit
	}
	return DefaultBufferLimit
}

// send writes the status line and headers to w.
func (rw *ResponseRewriter) send() {
	rw.sent = true
	rw.w.WriteHeader(rw.status)
}

// startStreaming sends the headers of a body whose length is not known yet.
func (rw *ResponseRewriter) startStreaming() {
	h := rw.w.Header()
	h.Del("Content-Length")
	dropIntegrity(h)
	rw.buffered = false
	rw.send()
}

// bodySink receives rewritten body bytes: into the buffer while the body
// may still get a Content-Length, to w after that.
type bodySink struct{ rw *ResponseRewriter }

func (s bodySink) Write(p []byte) (int, error) {
	rw := s.rw
	if !rw.buffered {
		return rw.w.Write(p)
	}
	if rw.buf.Len()+len(p) <= rw.limit() {
		return rw.buf.Write(p)
	}
	rw.startStreaming()
	if _, err := rw.w.Write(rw.buf.Bytes()); err != nil {
		return 0, err
	}
	rw.buf = bytes.Buffer{}
	return rw.w.Write(p)
}

// dropIntegrity removes a strong ETag and digests that no longer describe
// the body.
func dropIntegrity(h http.Header) {
	if etag := h.Get("Etag"); etag != "" && !strings.HasPrefix(etag, "W/") {
		h.Del("Etag")
	}
	for _, name := range integrityHeaders {
		h.Del(name)
	}
}

// bodyAllowed reports whether a response with status may have a body.
func bodyAllowed(status int) bool {
	return status != http.StatusNoContent && status != http.StatusNotModified && status >= 200
}

// commonFHIRJSON are Content-Type values, as sent, that mime.ParseMediaType
// reads as a JSON media type with at most a charset: rewritableBody says
// yes to them without parsing.
var commonFHIRJSON = map[string]bool{
	"application/fhir+json": true, "application/fhir+json;charset=utf-8": true, "application/fhir+json; charset=utf-8": true,
	"application/fhir+json;charset=UTF-8": true, "application/fhir+json; charset=UTF-8": true,
	"application/json": true, "application/json;charset=utf-8": true, "application/json; charset=utf-8": true,
	"application/json;charset=UTF-8": true, "application/json; charset=UTF-8": true,
}

// rewritableBody reports whether the body is text we can rewrite: a JSON,
// XML, plain text or HTML media type with no content coding.
func rewritableBody(h http.Header) bool {
	if enc := h.Get("Content-Encoding"); enc != "" && !strings.EqualFold(enc, "identity") {
		return false
	}
	ct := h.Get("Content-Type")
	if commonFHIRJSON[ct] {
		return true // what FHIR servers send: no need to parse it
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	typ, sub, _ := strings.Cut(mt, "/")
	switch {
	case typ == "application":
		return sub == "json" || sub == "xml" || strings.HasSuffix(sub, "+json") ||
			strings.HasSuffix(sub, "+xml") || sub == "json+fhir" || sub == "xml+fhir"
	case typ == "text":
		return sub == "plain" || sub == "html" || sub == "xml"
	}
	return false
}
