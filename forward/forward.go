// Package forward sends a request on to one upstream address through a
// given transport and passes the answer back: what Caddy's reverse_proxy
// does for a configuration of one fixed address and nothing else, without
// its per-request work that such a configuration does not use (a second
// copy of the request, the upstream selection, placeholders, an eagerly
// encoded debug logger). The gateway uses it in place of such a
// reverse_proxy (caddymodule decides when), with that handler's own
// transport: the same connections, TLS, timeouts and dialer.
//
// What goes upstream is what reverse_proxy sends: the request with its
// Host, without hop-by-hop headers (those the Connection header names
// too; TE only as "trailers"), with X-Forwarded-For, -Proto and -Host set
// as reverse_proxy sets them (the client's values kept only from a trusted
// proxy) and "Via: 1.1 Caddy" added. What comes back is the upstream's
// answer without hop-by-hop headers, with Via added and the server's own
// Server header dropped, and its trailers. A request that asks for more
// (a protocol upgrade, trailers of its own, TLS early data) is not the
// Forwarder's: Handles says so, and the caller sends it through
// reverse_proxy itself. Unlike reverse_proxy, the Forwarder sets no
// placeholders and passes no informational (1xx) answer on.
package forward

import (
	"context"
	"errors"
	"io"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/net/http/httpguts"
)

// Forwarder sends requests to one address.
type Forwarder struct {
	// Transport carries the requests (reverse_proxy's HTTPTransport). It
	// chooses the scheme: requests reach it without one, and it sets
	// http or https (HTTPTransport: https when it has TLS settings).
	Transport http.RoundTripper
	// Address is the upstream's host:port, the request URL's host.
	Address string
	// Trusted reports whether the request came through a trusted proxy,
	// whose X-Forwarded-* values are kept (prepended); nil: never.
	Trusted func(r *http.Request) bool
}

// Handles reports whether r is one the Forwarder sends as reverse_proxy
// would: not a protocol upgrade, no request trailers, not TLS early data.
func Handles(r *http.Request) bool {
	return len(r.Trailer) == 0 && (r.TLS == nil || r.TLS.HandshakeComplete) &&
		!httpguts.HeaderValuesContainsToken(r.Header["Connection"], "Upgrade")
}

// hopHeaders are reverse_proxy's: removed both ways.
var hopHeaders = []string{
	"Alt-Svc", "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// Error is an upstream failure with the status reverse_proxy gives it:
// 504 for a timeout, 499 when the client went away, 502 otherwise.
type Error struct {
	Status int
	Err    error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// ServeHTTP sends r upstream and writes the answer to w. r must be the
// caller's own (Handles true): its URL and header are changed. An error
// before anything was written is an *Error; a body cut short after the
// header went out panics with http.ErrAbortHandler, as reverse_proxy does,
// so that the client sees an incomplete answer.
func (f *Forwarder) ServeHTTP(w http.ResponseWriter, r *http.Request) error {
	f.prepare(r)
	res, err := f.Transport.RoundTrip(r)
	if err != nil {
		return statusError(err)
	}
	defer res.Body.Close()
	stripHopByHop(res.Header)
	h := w.Header()
	delete(h, "Server")
	proto := ""
	if !strings.HasPrefix(strings.ToUpper(res.Proto), "HTTP/") {
		proto = res.Proto[:strings.IndexByte(res.Proto, '/')+1]
	}
	h["Via"] = append(h["Via"], proto+strconv.Itoa(res.ProtoMajor)+"."+strconv.Itoa(res.ProtoMinor)+" Caddy")
	for k, vv := range res.Header {
		h[k] = append(h[k], vv...)
	}
	announced := len(res.Trailer)
	if announced > 0 {
		keys := make([]string, 0, announced)
		for k := range res.Trailer {
			keys = append(keys, k)
		}
		h.Add("Trailer", strings.Join(keys, ", "))
	}
	w.WriteHeader(res.StatusCode)
	rc := http.NewResponseController(w) // flushes through wrapping writers
	if err := copyBody(w, rc, res, flushEach(res)); err != nil {
		_ = rc.Flush() // what came is the client's, then the cut
		panic(http.ErrAbortHandler)
	}
	if len(res.Trailer) == 0 {
		return nil
	}
	// Chunked, so that trailers can follow even a short body.
	_ = rc.Flush()
	if len(res.Trailer) == announced {
		for k, vv := range res.Trailer {
			h[k] = append(h[k], vv...)
		}
		return nil
	}
	// Trailers the upstream did not announce go out as such by name.
	for k, vv := range res.Trailer {
		h[http.TrailerPrefix+k] = append(h[http.TrailerPrefix+k], vv...)
	}
	return nil
}

// prepare makes r the upstream's request (reverse_proxy's prepareRequest
// and directRequest for a plain request).
func (f *Forwarder) prepare(r *http.Request) {
	// A scheme and host in the request line (absolute form, or a URL the
	// caller built whole) do not choose how the upstream is reached: the
	// transport's TLS setting and Address do.
	r.URL.Scheme, r.URL.Host = "", f.Address
	r.RequestURI = ""
	r.Close = false
	if r.ContentLength == 0 {
		r.Body = nil // golang/go#16036: a nil body for the transport's retries
	}
	h := r.Header
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = []string{""} // not Go's default
	}
	removeConnectionHeaders(h)
	for _, k := range hopHeaders {
		if k == "Te" && httpguts.HeaderValuesContainsToken(h["Te"], "trailers") {
			h["Te"] = []string{"trailers"}
			continue
		}
		delete(h, k)
	}
	trusted := f.Trusted != nil && f.Trusted(r)
	addForwarded(r, trusted)
	h["Via"] = append(h["Via"], strconv.Itoa(r.ProtoMajor)+"."+strconv.Itoa(r.ProtoMinor)+" Caddy")
}

// addForwarded sets X-Forwarded-For, -Proto and -Host as reverse_proxy
// does: from the request, keeping (folding) the client's own values only
// when it came through a trusted proxy.
func addForwarded(r *http.Request, trusted bool) {
	h := r.Header
	clientIP, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		if !trusted {
			delete(h, "X-Forwarded-For")
			delete(h, "X-Forwarded-Proto")
			delete(h, "X-Forwarded-Host")
			return
		}
		clientIP = ""
	}
	clientIP, _, _ = strings.Cut(clientIP, "%")
	prior := ""
	if trusted {
		prior = strings.Join(h["X-Forwarded-For"], ", ")
	}
	switch {
	case prior != "" && clientIP != "":
		h["X-Forwarded-For"] = []string{prior + ", " + clientIP}
	case prior != "":
		h["X-Forwarded-For"] = []string{prior}
	case clientIP != "":
		h["X-Forwarded-For"] = []string{clientIP}
	}
	proto := "https"
	if r.TLS == nil {
		proto = "http"
	}
	if prior := h["X-Forwarded-Proto"]; !trusted || len(prior) == 0 || prior[len(prior)-1] == "" {
		h["X-Forwarded-Proto"] = []string{proto}
	} else {
		h["X-Forwarded-Proto"] = []string{prior[len(prior)-1]}
	}
	if prior := h["X-Forwarded-Host"]; !trusted || len(prior) == 0 || prior[len(prior)-1] == "" {
		h["X-Forwarded-Host"] = []string{r.Host}
	} else {
		h["X-Forwarded-Host"] = []string{prior[len(prior)-1]}
	}
}

// removeConnectionHeaders removes the headers the Connection header names.
func removeConnectionHeaders(h http.Header) {
	for _, v := range h["Connection"] {
		for name := range strings.SplitSeq(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
}

// stripHopByHop removes the hop-by-hop headers of an answer.
func stripHopByHop(h http.Header) {
	removeConnectionHeaders(h)
	for _, k := range hopHeaders {
		delete(h, k)
	}
}

// flushEach reports whether every piece of the answer is to go to the
// client at once, as reverse_proxy sends it: server-sent events, and an
// answer of unknown length.
func flushEach(res *http.Response) bool {
	if res.ContentLength == -1 {
		return true
	}
	ct, _, err := mime.ParseMediaType(res.Header.Get("Content-Type"))
	return err == nil && ct == "text/event-stream"
}

// buffers are copyBody's.
var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copyBody copies the answer's body to w, flushing through rc after each
// piece when flush. Its error is a failed read of the answer or write to
// the client: either way the copy cannot go on.
func copyBody(w http.ResponseWriter, rc *http.ResponseController, res *http.Response, flush bool) error {
	bp := buffers.Get().(*[]byte)
	defer buffers.Put(bp)
	buf := *bp
	for {
		n, err := res.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			if flush {
				_ = rc.Flush()
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// statusError gives err reverse_proxy's status.
func statusError(err error) *Error {
	status := http.StatusBadGateway
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) {
		status = http.StatusGatewayTimeout
	}
	if errors.Is(err, context.Canceled) || strings.Contains(err.Error(), "operation was canceled") {
		status = 499
	}
	return &Error{Status: status, Err: err}
}
