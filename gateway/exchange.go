package gateway

import (
	"net/http"
	"net/url"
	"sync"

	"github.com/pfrgateway/caddy-pfr/backend"
)

// exchange is what proxy needs for one request besides the request
// itself: the upstream's copy of it, the writers between the upstream and
// the client, and the upstream's answer when it is held. One allocation,
// kept in a pool between requests: made one by one, these were a third of
// what the gateway allocated for a read, and their maps grew anew each
// time.
type exchange struct {
	out    http.Request
	url    url.URL
	header http.Header // out's, emptied between requests
	values [16]string  // out's header values, when they fit
	tw     trackingWriter
	filter filteringWriter
	rw     backend.ResponseRewriter
	res    captured // its header map emptied between requests
}

var exchanges = sync.Pool{New: func() any {
	return &exchange{header: http.Header{}, res: captured{header: http.Header{}}}
}}

// newExchange returns an empty exchange, from the pool when it has one.
func newExchange() *exchange { return exchanges.Get().(*exchange) }

// request returns the upstream's copy of r (upstreamCopy), built in x when
// r has no body. A body may still be read by the upstream's transport
// after the upstream handler returned (an upstream that answers before it
// read the whole request), together with the request it belongs to, which
// then must not be the next request's.
func (x *exchange) request(r *http.Request) *http.Request {
	if x == nil || r.Body != nil && r.Body != http.NoBody {
		return upstreamCopy(r)
	}
	copyForUpstream(&x.out, &x.url, x.header, x.values[:0], r)
	return &x.out
}

// answer returns x's captured answer, emptied, for capture.
func (x *exchange) answer() *captured { return &x.res }

// done gives x back to the pool. Call it only when the request is answered
// and nothing will use x again: not after a panic, which may leave the
// response filter's goroutine reading it.
func (x *exchange) done() {
	h, rh := x.header, x.res.header
	clear(h)
	clear(rh)
	*x = exchange{header: h, res: captured{header: rh}}
	exchanges.Put(x)
}
