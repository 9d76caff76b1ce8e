package forward

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

// TestForwardedHeaders: X-Forwarded-For, -Proto and -Host are the
// request's own unless it came through a trusted proxy, whose values are
// kept (the addresses folded into one list, the client's appended); a
// request without a usable address sends none of the client's.
// (caddymodule's TestForwarderAsReverseProxy compares the untrusted case
// with reverse_proxy itself.)
func TestForwardedHeaders(t *testing.T) {
	client := func() *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/fhir/Patient", nil)
		r.Host = "john.pfr.example"
		r.RemoteAddr = "192.0.2.7:50000"
		r.Header["X-Forwarded-For"] = []string{"10.0.0.1", "10.0.0.2"}
		r.Header.Set("X-Forwarded-Proto", "https")
		r.Header.Set("X-Forwarded-Host", "front.example")
		return r
	}
	for _, c := range []struct {
		name    string
		trusted bool
		change  func(*http.Request)
		want    http.Header
	}{
		{"untrusted", false, nil, http.Header{
			"X-Forwarded-For": {"192.0.2.7"}, "X-Forwarded-Proto": {"http"}, "X-Forwarded-Host": {"john.pfr.example"}}},
		{"trusted proxy", true, nil, http.Header{
			"X-Forwarded-For": {"10.0.0.1, 10.0.0.2, 192.0.2.7"}, "X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": {"front.example"}}},
		{"TLS", false, func(r *http.Request) { r.TLS = &tls.ConnectionState{HandshakeComplete: true} }, http.Header{
			"X-Forwarded-For": {"192.0.2.7"}, "X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": {"john.pfr.example"}}},
		{"IPv6 zone", false, func(r *http.Request) { r.RemoteAddr = "[fe80::1%eth0]:4000" }, http.Header{
			"X-Forwarded-For": {"fe80::1"}, "X-Forwarded-Proto": {"http"}, "X-Forwarded-Host": {"john.pfr.example"}}},
		{"no address, untrusted", false, func(r *http.Request) { r.RemoteAddr = "@" }, http.Header{}},
	} {
		r := client()
		if c.change != nil {
			c.change(r)
		}
		addForwarded(r, c.trusted)
		got := http.Header{}
		for _, k := range []string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host"} {
			if v, ok := r.Header[k]; ok {
				got[k] = v
			}
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// TestHandles: a protocol upgrade, request trailers and TLS early data are
// left to reverse_proxy.
func TestHandles(t *testing.T) {
	plain := httptest.NewRequest(http.MethodPost, "/fhir/Patient", strings.NewReader("{}"))
	if !Handles(plain) {
		t.Error("a plain request is refused")
	}
	upgrade := httptest.NewRequest(http.MethodGet, "/fhir/Patient", nil)
	upgrade.Header.Set("Connection", "keep-alive, Upgrade")
	trailer := httptest.NewRequest(http.MethodPost, "/fhir/Patient", strings.NewReader("{}"))
	trailer.Trailer = http.Header{"X-Sum": nil}
	early := httptest.NewRequest(http.MethodGet, "/fhir/Patient", nil)
	early.TLS = &tls.ConnectionState{HandshakeComplete: false}
	for name, r := range map[string]*http.Request{"upgrade": upgrade, "trailer": trailer, "early data": early} {
		if Handles(r) {
			t.Errorf("%s handled", name)
		}
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// TestStatusError: reverse_proxy's statuses for a failed round trip.
func TestStatusError(t *testing.T) {
	for err, want := range map[error]int{
		errors.New("connection refused"):               http.StatusBadGateway,
		fmt.Errorf("dial: %w", timeoutErr{}):           http.StatusGatewayTimeout,
		context.DeadlineExceeded:                       http.StatusGatewayTimeout,
		fmt.Errorf("reading: %w", context.Canceled):    499,
		errors.New("dial tcp: operation was canceled"): 499,
	} {
		if got := statusError(err); got.Status != want || !errors.Is(got, err) {
			t.Errorf("%v: %d, want %d", err, got.Status, want)
		}
	}
}

// plainHTTP is http.DefaultTransport choosing http, as reverse_proxy's
// transport does without TLS settings.
type plainHTTP struct{}

func (plainHTTP) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme == "" {
		r.URL.Scheme = "http"
	}
	return http.DefaultTransport.RoundTrip(r)
}

// flushCounter is a ResponseRecorder that counts flushes.
type flushCounter struct {
	*httptest.ResponseRecorder
	flushes int
}

func (f *flushCounter) Flush() { f.flushes++; f.ResponseRecorder.Flush() }

// TestServeHTTPFlushes: an answer of unknown length, and server-sent
// events, go to the client piece by piece (as reverse_proxy sends them);
// one of known length is not flushed on the way.
func TestServeHTTPFlushes(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/events" {
			w.Header().Set("Content-Type", "text/event-stream")
		}
		if r.URL.Path == "/known" {
			w.Header().Set("Content-Length", "6")
		}
		_, _ = io.WriteString(w, "abc")
		w.(http.Flusher).Flush()
		_, _ = io.WriteString(w, "def")
	}))
	defer up.Close()
	f := &Forwarder{Transport: plainHTTP{}, Address: strings.TrimPrefix(up.URL, "http://")}
	for path, flushed := range map[string]bool{"/chunked": true, "/events": true, "/known": false} {
		w := &flushCounter{ResponseRecorder: httptest.NewRecorder()}
		r := httptest.NewRequest(http.MethodGet, path, nil)
		if err := f.ServeHTTP(w, r); err != nil {
			t.Fatal(err)
		}
		if w.Body.String() != "abcdef" || (w.flushes > 0) != flushed {
			t.Errorf("%s: body %q, %d flushes, want flushed %v", path, w.Body, w.flushes, flushed)
		}
		if via := w.Header().Get("Via"); via != "1.1 Caddy" {
			t.Errorf("%s: Via %q", path, via)
		}
	}
}
