package gateway

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
)

// maxInternalResponse bounds what the gateway reads back from its own calls
// to the upstream (provisioning, pick-up).
const maxInternalResponse = 8 << 20

// captured is the response of an internal upstream call.
type captured struct {
	status int
	header http.Header
	body   bytes.Buffer
	over   bool
}

func (c *captured) Header() http.Header { return c.header }

func (c *captured) WriteHeader(code int) {
	if c.status == 0 {
		c.status = code
	}
}

func (c *captured) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	if room := maxInternalResponse - c.body.Len(); len(b) > room {
		c.over = true
		c.body.Write(b[:max(room, 0)])
		return len(b), nil
	}
	return c.body.Write(b)
}

// call sends req (built by the gateway, not by a client) through the
// upstream and returns the captured response. The request inherits the
// context of the client request that caused it, which carries what the
// upstream handler needs from its server.
func call(up Upstream, req *http.Request) (*captured, error) {
	res := &captured{header: http.Header{}}
	if err := up.ServeHTTP(res, req); err != nil && res.status == 0 {
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	if res.status == 0 {
		res.status = http.StatusOK
	}
	if res.over {
		return nil, fmt.Errorf("%s %s: response larger than %d bytes", req.Method, req.URL.Path, maxInternalResponse)
	}
	return res, nil
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
