package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/pfrgateway/caddy-pfr/fhir"
)

// maxInternalResponse bounds what the gateway reads back from its own calls
// to the upstream (provisioning, pick-up).
const maxInternalResponse = 8 << 20

// captured is an upstream response held whole: the answer to one of the
// gateway's own calls, or a client's request whose answer is checked before
// it is passed on (see verify.go).
type captured struct {
	status int
	header http.Header
	body   bytes.Buffer
	over   bool
	limit  int     // most bytes held; 0: maxInternalResponse
	pooled *[]byte // where body's memory goes back to (release)
	// facts are what verifyAnswer's one pass over a resource (not a
	// Bundle) learnt for the response filter, when judged.
	facts  fhir.EntryFacts
	judged bool
}

// captureBuffers keep the memory of captured answers between requests
// whose handler releases them (proxy).
var captureBuffers = sync.Pool{New: func() any { return new([]byte) }}

// release gives the body's memory back for another answer (unless it
// grew very large); the body must not be used after.
func (c *captured) release() {
	if b := c.body.Bytes(); c.pooled != nil && cap(b) <= 1<<20 {
		*c.pooled = b[:0]
		captureBuffers.Put(c.pooled)
	}
	c.pooled, c.body, c.judged = nil, bytes.Buffer{}, false
}

func (c *captured) Header() http.Header { return c.header }

func (c *captured) WriteHeader(code int) {
	if c.status == 0 && code >= 200 { // informational answers (103) are not the answer
		c.status = code
	}
}

func (c *captured) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	limit := c.limit
	if limit <= 0 {
		limit = maxInternalResponse
	}
	if c.pooled == nil && c.body.Cap() == 0 {
		c.pooled = captureBuffers.Get().(*[]byte)
		c.body = *bytes.NewBuffer((*c.pooled)[:0])
		// Room for the announced body at once, rather than growing to it.
		if n, err := strconv.Atoi(c.header.Get("Content-Length")); err == nil && n > len(b) {
			c.body.Grow(min(n, limit))
		}
	}
	if room := limit - c.body.Len(); len(b) > room {
		c.over = true
		c.body.Write(b[:max(room, 0)])
		return len(b), nil
	}
	return c.body.Write(b)
}

// call sends req (built by the gateway, not by a client) through the
// upstream and returns the captured response. The request inherits the
// context of the client request that caused it, which carries what the
// upstream handler needs from its server, and gets the deadline of the
// gateway's own calls (Config.CallTimeout).
func call(up Upstream, req *http.Request) (*captured, error) {
	req, after, cancel := withCallDeadline(up, req)
	defer cancel()
	return capture(up, req, 0, after)
}

// capture sends req through the upstream and holds the whole answer, up to
// limit bytes (0: maxInternalResponse). An error is returned whenever the
// answer is not complete: the upstream handler failed (even after it had
// started the answer), the body was larger than limit, or the request's
// deadline (of length after) passed.
func capture(up Upstream, req *http.Request, limit int, after time.Duration) (*captured, error) {
	return captureInto(&captured{header: http.Header{}}, up, req, limit, after)
}

// captureInto is capture holding the answer in res, which must be empty
// (its header map may hold memory, not keys).
func captureInto(res *captured, up Upstream, req *http.Request, limit int, after time.Duration) (*captured, error) {
	res.limit = limit
	err := up.ServeHTTP(res, req)
	if after > 0 && errors.Is(req.Context().Err(), context.DeadlineExceeded) {
		err = upstreamTimeout{after: after}
	}
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	if res.status == 0 {
		res.status = http.StatusOK
	}
	if res.over {
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, answerTooLarge{res.limit})
	}
	return res, nil
}

// answerTooLarge is the cause when an upstream answer exceeds what the
// gateway holds.
type answerTooLarge struct{ limit int }

func (e answerTooLarge) Error() string {
	limit := e.limit
	if limit <= 0 {
		limit = maxInternalResponse
	}
	return fmt.Sprintf("the upstream's answer is larger than the %d bytes the gateway holds to check it", limit)
}

// newInternalRequest builds a request for the upstream, carrying the context
// (and so the server state) of the client request parent.
func newInternalRequest(parent *http.Request, method, path string, body []byte) *http.Request {
	req, _ := http.NewRequestWithContext(parent.Context(), method, "http://upstream.invalid", nil)
	req.URL.Scheme, req.URL.Host = "", ""
	req.URL.Path = path
	req.Host = parent.Host
	req.RemoteAddr = parent.RemoteAddr
	req.Proto, req.ProtoMajor, req.ProtoMinor = "HTTP/1.1", 1, 1
	req.Header.Set("Accept", "application/fhir+json")
	if body != nil {
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.ContentLength = int64(len(body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	return req
}
