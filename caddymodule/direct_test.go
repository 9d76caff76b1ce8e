package caddymodule

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/pfrgateway/caddy-pfr/forward"
)

// provisioningContext is a Caddy context to provision modules with, its
// storage in a temporary folder.
func provisioningContext(t *testing.T) caddy.Context {
	t.Helper()
	storage := fmt.Sprintf(`{"module":"file_system","root":%q}`, t.TempDir())
	ctx, err := caddy.ProvisionContext(&caddy.Config{StorageRaw: json.RawMessage(storage)})
	if err != nil {
		t.Fatal(err)
	}
	return ctx
}

// provisionProxy provisions the reverse_proxy of raw, as the gateway's
// upstream handler is.
func provisionProxy(t *testing.T, raw string) (caddy.Context, *reverseproxy.Handler) {
	t.Helper()
	ctx := provisioningContext(t)
	h := new(reverseproxy.Handler)
	if err := json.Unmarshal([]byte(raw), h); err != nil {
		t.Fatal(err)
	}
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Cleanup() })
	return ctx, h
}

// seen is what the recording upstream received.
type seen struct {
	Method, URI, Host string
	Header            http.Header
	Body              string
	Trailer           http.Header
}

// recordingUpstream answers every request with the same answer, hop-by-hop
// headers and a trailer included, and records what it received.
func recordingUpstream(t *testing.T) (*httptest.Server, func() seen) {
	t.Helper()
	var mu sync.Mutex
	var last seen
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		last = seen{Method: r.Method, URI: r.RequestURI, Host: r.Host, Header: r.Header.Clone(), Body: string(body), Trailer: r.Trailer.Clone()}
		mu.Unlock()
		h := w.Header()
		h.Set("Content-Type", "application/fhir+json")
		h.Set("Connection", "X-Hop")
		h.Set("X-Hop", "1")
		h.Set("Keep-Alive", "timeout=5")
		h.Set("Alt-Svc", `h3=":443"`)
		h.Set("Server", "upstream")
		h.Add("X-Multi", "a")
		h.Add("X-Multi", "b")
		h.Set("Trailer", "X-Checksum")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"resourceType":"Patient"}`)
		h.Set("X-Checksum", "c1")
		h.Set(http.TrailerPrefix+"X-Late", "unannounced")
	}))
	t.Cleanup(srv.Close)
	return srv, func() seen { mu.Lock(); defer mu.Unlock(); return last }
}

// answer is what a client would get.
type answer struct {
	Status int
	Header http.Header
	Body   string
}

// serveBoth sends the same client request through the reverse_proxy
// handler and through the forwarder, and returns what the upstream got and
// what the client got from each.
func serveBoth(t *testing.T, h *reverseproxy.Handler, f *forward.Forwarder, upstream func() seen,
	newReq func() *http.Request) (viaProxy, viaForwarder seen, proxyAnswer, forwarderAnswer answer) {
	t.Helper()
	prepare := func() (*httptest.ResponseRecorder, *http.Request) {
		r := newReq()
		repl := caddy.NewReplacer()
		w := httptest.NewRecorder()
		w.Header().Set("Server", "Caddy")
		return w, caddyhttp.PrepareRequest(r, repl, w, &caddyhttp.Server{})
	}
	w, r := prepare()
	if err := h.ServeHTTP(w, r, noNext); err != nil {
		t.Fatalf("reverse_proxy: %v", err)
	}
	viaProxy, proxyAnswer = upstream(), answer{w.Code, w.Result().Header, w.Body.String()}
	proxyAnswer.Header = mergeTrailer(w)

	w, r = prepare()
	// The gateway hands the forwarder its own copy of the request.
	if !forward.Handles(r) {
		t.Fatal("the forwarder refuses a plain request")
	}
	if err := f.ServeHTTP(w, r); err != nil {
		t.Fatalf("forwarder: %v", err)
	}
	viaForwarder, forwarderAnswer = upstream(), answer{w.Code, w.Result().Header, w.Body.String()}
	forwarderAnswer.Header = mergeTrailer(w)
	return
}

// mergeTrailer is the recorded answer's header with its trailers.
func mergeTrailer(w *httptest.ResponseRecorder) http.Header {
	res := w.Result()
	h := res.Header.Clone()
	for k, v := range res.Trailer {
		h["Trailer-"+k] = v
	}
	return h
}

// TestForwarderAsReverseProxy: for the configuration it takes over, the
// forwarder sends the upstream exactly what reverse_proxy sends (hop-by-hop
// headers and those Connection names removed, TE kept as trailers, the
// client's X-Forwarded-* replaced, Via added, the Host kept, no Go
// User-Agent, the body and its length) and gives the client exactly what
// reverse_proxy gives (status, headers without hop-by-hop ones and the
// server's Server, Via, body, trailers).
func TestForwarderAsReverseProxy(t *testing.T) {
	srv, upstream := recordingUpstream(t)
	dial := strings.TrimPrefix(srv.URL, "http://")
	raw := fmt.Sprintf(`{"handler":"reverse_proxy","upstreams":[{"dial":%q}],"transport":{"protocol":"http","dial_timeout":"3s","response_header_timeout":"30s"}}`, dial)
	ctx, h := provisionProxy(t, raw)
	f := directForwarder(ctx, h, json.RawMessage(raw))
	if f == nil {
		t.Fatal("a one-address reverse_proxy with transport options is not taken over")
	}
	requests := map[string]func() *http.Request{
		"read": func() *http.Request {
			r := httptest.NewRequest(http.MethodGet, "http://john.pfr.localhost/fhir/Patient/p1?_format=json", nil)
			r.Header.Set("Accept", "application/fhir+json")
			r.Header.Set("User-Agent", "fhir-kit-client")
			r.Header.Set("X-Request-Partition-IDs", "3")
			return r
		},
		"hop-by-hop and forwarded headers": func() *http.Request {
			r := httptest.NewRequest(http.MethodGet, "http://john.pfr.localhost/fhir/Observation?code=a%20b", nil)
			r.Header.Set("Connection", "X-Private, keep-alive")
			r.Header.Set("X-Private", "secret")
			r.Header.Set("Keep-Alive", "timeout=5")
			r.Header.Set("Proxy-Authorization", "Basic eA==")
			r.Header.Set("Te", "trailers, deflate")
			r.Header.Set("X-Forwarded-For", "10.9.9.9")
			r.Header.Set("X-Forwarded-Proto", "https")
			r.Header.Set("X-Forwarded-Host", "evil.example")
			r.Header.Set("Via", "1.0 client-proxy")
			r.RemoteAddr = "192.0.2.7:50000"
			return r
		},
		"create": func() *http.Request {
			r := httptest.NewRequest(http.MethodPost, "http://john.pfr.localhost/fhir/Patient", strings.NewReader(`{"resourceType":"Patient"}`))
			r.Header.Set("Content-Type", "application/fhir+json")
			return r
		},
		"escaped path": func() *http.Request {
			r := httptest.NewRequest(http.MethodGet, "http://john.pfr.localhost/fhir/Binary/a%27b%20c?x=%2F", nil)
			return r
		},
		"absolute https URL": func() *http.Request {
			// The request line's scheme does not choose TLS to the upstream
			// (the gateway's export reads are built from the record's https URL).
			r := httptest.NewRequest(http.MethodGet, "https://john.pfr.localhost/fhir/Patient?_count=5", nil)
			r.RequestURI = "/fhir/Patient?_count=5"
			return r
		},
		"delete": func() *http.Request {
			return httptest.NewRequest(http.MethodDelete, "http://john.pfr.localhost/fhir/Patient/p1", nil)
		},
	}
	for name, newReq := range requests {
		t.Run(name, func(t *testing.T) {
			viaProxy, viaForwarder, proxyAnswer, forwarderAnswer := serveBoth(t, h, f, upstream, newReq)
			if !reflect.DeepEqual(viaProxy, viaForwarder) {
				t.Errorf("the upstream got\n%+v\nfrom reverse_proxy and\n%+v\nfrom the forwarder", viaProxy, viaForwarder)
			}
			if !reflect.DeepEqual(proxyAnswer, forwarderAnswer) {
				t.Errorf("the client got\n%+v\nfrom reverse_proxy and\n%+v\nfrom the forwarder", proxyAnswer, forwarderAnswer)
			}
			if viaForwarder.Header.Get("X-Private") != "" || viaForwarder.Header.Get("Proxy-Authorization") != "" {
				t.Errorf("hop-by-hop headers went upstream: %v", viaForwarder.Header)
			}
		})
	}
}

// TestForwarderErrors: an upstream that cannot be reached is reverse_proxy's
// 502, one that does not answer in time its 504, and an answer cut short
// after its header aborts the client's answer (http.ErrAbortHandler), as
// reverse_proxy does.
func TestForwarderErrors(t *testing.T) {
	closed := closedAddr(t)
	req := func() *http.Request {
		r := httptest.NewRequest(http.MethodGet, "http://john.pfr.localhost/fhir/Patient/p1", nil)
		return caddyhttp.PrepareRequest(r, caddy.NewReplacer(), httptest.NewRecorder(), &caddyhttp.Server{})
	}
	forwarder := func(dial, timeout string) *forward.Forwarder {
		raw := fmt.Sprintf(`{"handler":"reverse_proxy","upstreams":[{"dial":%q}],"transport":{"protocol":"http","response_header_timeout":%q}}`, dial, timeout)
		ctx, h := provisionProxy(t, raw)
		f := directForwarder(ctx, h, json.RawMessage(raw))
		if f == nil {
			t.Fatal("not taken over")
		}
		return f
	}
	var fe *forward.Error
	if err := forwarder(closed, "5s").ServeHTTP(httptest.NewRecorder(), req()); !errorsAs(err, &fe) || fe.Status != http.StatusBadGateway {
		t.Errorf("unreachable upstream: %v, want a 502", err)
	}

	hang := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/cut" {
			w.Header().Set("Content-Length", "100")
			_, _ = io.WriteString(w, "short")
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
		select {
		case <-hang:
		case <-time.After(10 * time.Second):
		}
	}))
	defer slow.Close()
	defer close(hang)
	dial := strings.TrimPrefix(slow.URL, "http://")
	if err := forwarder(dial, "200ms").ServeHTTP(httptest.NewRecorder(), req()); !errorsAs(err, &fe) || fe.Status != http.StatusGatewayTimeout {
		t.Errorf("upstream without an answer: %v, want a 504", err)
	}
	cut := req()
	cut.URL.Path = "/cut"
	func() {
		defer func() {
			if v := recover(); v != http.ErrAbortHandler {
				t.Errorf("an answer cut short: recovered %v, want http.ErrAbortHandler", v)
			}
		}()
		_ = forwarder(dial, "5s").ServeHTTP(httptest.NewRecorder(), cut)
	}()
}

// closedAddr is a loopback address nothing listens on (an ephemeral port
// taken and given back): dialled, it refuses.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func errorsAs(err error, target **forward.Error) bool {
	fe, ok := err.(*forward.Error)
	*target = fe
	return ok
}

// TestDirectForwarderOnlyForPlainProxies: any option of reverse_proxy
// beyond one fixed TCP address and the transport's own settings keeps every
// request on the handler, and so do a request that upgrades its
// connection, one with trailers, and TLS early data.
func TestDirectForwarderOnlyForPlainProxies(t *testing.T) {
	a1, a2 := closedAddr(t), closedAddr(t)
	addrs := strings.NewReplacer("ADDR1", a1, "ADDR2", a2)
	for _, raw := range []string{
		`{"handler":"reverse_proxy","upstreams":[{"dial":"ADDR1"},{"dial":"ADDR2"}]}`,
		`{"handler":"reverse_proxy","upstreams":[{"dial":"{http.vars.pfr_upstream}"}]}`,
		`{"handler":"reverse_proxy","upstreams":[{"dial":"unix//tmp/fhir.sock"}]}`,
		`{"handler":"reverse_proxy","upstreams":[{"dial":"ADDR1","max_requests":5}]}`,
		`{"handler":"reverse_proxy","upstreams":[{"dial":"ADDR1"}],"headers":{"request":{"set":{"Authorization":["Bearer x"]}}}}`,
		`{"handler":"reverse_proxy","upstreams":[{"dial":"ADDR1"}],"load_balancing":{"retries":2}}`,
		`{"handler":"reverse_proxy","upstreams":[{"dial":"ADDR1"}],"health_checks":{"passive":{"fail_duration":"10s"}}}`,
		`{"handler":"reverse_proxy","upstreams":[{"dial":"ADDR1"}],"flush_interval":-1}`,
		`{"handler":"reverse_proxy","upstreams":[{"dial":"ADDR1"}],"trusted_proxies":["10.0.0.0/8"]}`,
		`{"handler":"reverse_proxy","upstreams":[{"dial":"ADDR1"}],"transport":{"protocol":"http","proxy_protocol":"v2"}}`,
		`{"handler":"reverse_proxy","upstreams":[{"dial":"ADDR1"}],"transport":{"protocol":"http","versions":["h2c","2"]}}`,
	} {
		raw = addrs.Replace(raw)
		ctx, h := provisionProxy(t, raw)
		if f := directForwarder(ctx, h, json.RawMessage(raw)); f != nil {
			t.Errorf("taken over: %s", raw)
		}
	}
	raw := `{"handler":"reverse_proxy","upstreams":[{"dial":"ADDR1"}],"transport":{"protocol":"http","tls":{},"keep_alive":{"max_idle_conns_per_host":64},"versions":["1.1","2"]}}`
	raw = addrs.Replace(raw)
	ctx, h := provisionProxy(t, raw)
	if f := directForwarder(ctx, h, json.RawMessage(raw)); f == nil || f.Address != a1 {
		t.Errorf("a plain proxy with TLS and keep-alive options is not taken over: %+v", f)
	}

	upgrade := httptest.NewRequest(http.MethodGet, "http://john.pfr.localhost/fhir/Patient", nil)
	upgrade.Header.Set("Connection", "Upgrade")
	upgrade.Header.Set("Upgrade", "websocket")
	withTrailer := httptest.NewRequest(http.MethodPost, "http://john.pfr.localhost/fhir/Patient", strings.NewReader("{}"))
	withTrailer.Trailer = http.Header{"X-Sum": nil}
	for _, r := range []*http.Request{upgrade, withTrailer} {
		if forward.Handles(r) {
			t.Errorf("the forwarder takes %s %v", r.Method, r.Header)
		}
	}
}

// TestGatewayGoesDirect: a gateway provisioned from a Caddyfile with a
// plain `upstream reverse_proxy` sends its requests through the forwarder,
// and with `direct_upstream off`, or an option of the handler's own,
// through the handler.
func TestGatewayGoesDirect(t *testing.T) {
	addrs := strings.NewReplacer("ADDR1", closedAddr(t), "ADDR2", closedAddr(t))
	for _, c := range []struct {
		lines  string
		direct bool
	}{
		{"upstream reverse_proxy ADDR1", true},
		{"upstream reverse_proxy ADDR1 {\n\t\t\ttransport http {\n\t\t\t\tkeepalive 30s\n\t\t\t}\n\t\t}", true},
		{"direct_upstream off\n\t\tupstream reverse_proxy ADDR1", false},
		{"upstream reverse_proxy ADDR1 {\n\t\t\theader_up Host {upstream_hostport}\n\t\t}", false},
		{"upstream reverse_proxy ADDR1 ADDR2", false},
	} {
		cfg, err := adapt(t, fmt.Sprintf("http://pfr.localhost {\n\tpfr {\n\t\tbase_domain pfr.localhost\n\t\tdev_issuer\n\t\t%s\n\t}\n}", addrs.Replace(c.lines)))
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := json.Marshal(handler(t, cfg, "pfr"))
		g := new(Gateway)
		if err := json.Unmarshal(raw, g); err != nil {
			t.Fatal(err)
		}
		g.DataDir = t.TempDir()
		if err := g.Provision(provisioningContext(t)); err != nil {
			t.Fatalf("%s: %v", c.lines, err)
		}
		if got := g.direct != nil; got != c.direct {
			t.Errorf("%q: direct %v, want %v", c.lines, got, c.direct)
		}
		if err := g.Cleanup(); err != nil {
			t.Error(err)
		}
	}
}
