package gateway

import (
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

// TestExchangeReuse: an exchange given back keeps nothing of its request
// (only its two maps' memory, empty), so that no header of one record's
// request reaches the next one's upstream request; what it builds is
// what upstreamCopy builds; and a request with a body is never built in
// it (the transport may still read the body after the exchange is done).
func TestExchangeReuse(t *testing.T) {
	g := newTestGateway(t)
	r := httptest.NewRequest(http.MethodGet, "https://john.pfr.localhost/fhir/Observation/o1?code=a", nil)
	r.Header.Set("Authorization", "Bearer secret")
	r.Header.Set("X-Custom", "a")
	rq := &request{r: r, rec: testRecord(), base: "https://john.pfr.localhost/fhir", rest: "/Observation/o1"}

	x := newExchange()
	out, _, err := g.outboundInto(x, rq, false)
	if err != nil {
		t.Fatal(err)
	}
	if out != &x.out {
		t.Fatal("a request without a body was not built in the exchange")
	}
	alone, _, err := g.outbound(rq, false)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(out.Header, alone.Header) || out.URL.String() != alone.URL.String() ||
		out.Method != alone.Method || out.Host != alone.Host {
		t.Errorf("built in the exchange: %s %s %v; alone: %s %s %v", out.Method, out.URL, out.Header, alone.Method, alone.URL, alone.Header)
	}
	x.res.header.Set("X-Upstream", "1")
	x.filter.record = "r1"
	x.tw.wroteHeader = true
	header, answer := x.header, x.res.header
	x.done()
	fresh := exchange{header: http.Header{}, res: captured{header: http.Header{}}}
	if !reflect.DeepEqual(*x, fresh) {
		t.Errorf("an exchange given back still holds its request: %+v", *x)
	}
	if reflect.ValueOf(x.header).UnsafePointer() != reflect.ValueOf(header).UnsafePointer() ||
		reflect.ValueOf(x.res.header).UnsafePointer() != reflect.ValueOf(answer).UnsafePointer() {
		t.Error("an exchange given back dropped its maps' memory")
	}

	for _, method := range []string{http.MethodPost, http.MethodPut} {
		w := httptest.NewRequest(method, "https://john.pfr.localhost/fhir/Observation", strings.NewReader(`{"resourceType":"Observation"}`))
		y := newExchange()
		out, _, err := g.outboundInto(y, &request{r: w, rec: testRecord(), base: rq.base, rest: "/Observation"}, false)
		if err != nil {
			t.Fatal(err)
		}
		if out == &y.out || y.out.URL != nil || len(y.header) != 0 {
			t.Errorf("%s with a body was built in the exchange", method)
		}
		y.done()
	}
}
