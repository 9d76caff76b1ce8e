package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// Defaults of UpstreamTimeouts.
const (
	defaultDialTimeout           = 3 * time.Second
	defaultResponseHeaderTimeout = 30 * time.Second
	defaultReadTimeout           = 60 * time.Second
)

// UpstreamTimeouts bounds how long the gateway waits for its upstream, so
// that a hung upstream (stopped, overloaded, a firewall dropping packets)
// costs a client a 504 OperationOutcome instead of a request that never
// ends. Dial, ResponseHeader and Read are set on the `reverse_proxy`
// upstream's HTTP transport wherever its own configuration leaves them
// unset (`transport http { dial_timeout … }` wins); Call and Inbox are the
// gateway's own.
type UpstreamTimeouts struct {
	// How long to wait for a connection to the upstream (the transport's
	// `dial_timeout`). Default: `3s`.
	Dial caddy.Duration `json:"dial,omitempty"`

	// How long to wait for the upstream's response headers once the
	// request is sent (the transport's `response_header_timeout`).
	// Default: `30s`.
	ResponseHeader caddy.Duration `json:"response_header,omitempty"`

	// The longest wait for the next bytes from the upstream's connection
	// (the transport's `read_timeout`); a body that stalls is cut (the
	// client sees the answer aborted, or a 502 where the gateway checks the
	// answer before passing it on). It must be longer than response_header:
	// the deadline runs from the connection's last read, also while it
	// waits idle in the pool, and a GET whose connection fails that way is
	// sent again, so an equal value doubles the wait for a hung upstream.
	// The gateway enforces it with one timer per connection, not with
	// Caddy's deadline before every read (docs/upstreams.md).
	// Default: `60s`.
	Read caddy.Duration `json:"read,omitempty"`

	// The deadline of each of the gateway's own calls to the upstream:
	// record provisioning, pick-up, the reads and searches it makes before
	// a write, metadata. Default: `60s`.
	Call caddy.Duration `json:"call,omitempty"`

	// How long the drop-off inbox waits for the record's Patient (for the
	// match scores) before it answers without them. Default: `2s`.
	Inbox caddy.Duration `json:"inbox,omitempty"`
}

// durations returns the timeouts with their defaults.
func (t *UpstreamTimeouts) durations() UpstreamTimeouts {
	out := UpstreamTimeouts{
		Dial:           caddy.Duration(defaultDialTimeout),
		ResponseHeader: caddy.Duration(defaultResponseHeaderTimeout),
		Read:           caddy.Duration(defaultReadTimeout),
	}
	if t == nil {
		return out
	}
	for _, p := range []struct{ set, into *caddy.Duration }{
		{&t.Dial, &out.Dial}, {&t.ResponseHeader, &out.ResponseHeader}, {&t.Read, &out.Read},
		{&t.Call, &out.Call}, {&t.Inbox, &out.Inbox},
	} {
		if *p.set > 0 {
			*p.into = *p.set
		}
	}
	return out
}

// validate refuses a read timeout that does not exceed the response
// header timeout (see UpstreamTimeouts.Read).
func (t UpstreamTimeouts) validate() error {
	if t.Read <= t.ResponseHeader {
		return fmt.Errorf("upstream_timeouts: read (%s) must be longer than response_header (%s)",
			time.Duration(t.Read), time.Duration(t.ResponseHeader))
	}
	return nil
}

// withTransportTimeouts returns the upstream handler's JSON with t's dial,
// response header and read timeouts on its HTTP transport where that
// leaves them unset. Handlers other than `reverse_proxy`, and transports
// other than `http`, are returned unchanged.
func withTransportTimeouts(raw json.RawMessage, t UpstreamTimeouts) (json.RawMessage, error) {
	var handler map[string]json.RawMessage
	if err := json.Unmarshal(raw, &handler); err != nil {
		return nil, fmt.Errorf("reading the upstream handler: %w", err)
	}
	var name string
	if err := json.Unmarshal(handler["handler"], &name); err != nil || name != "reverse_proxy" {
		return raw, nil
	}
	transport := map[string]json.RawMessage{"protocol": json.RawMessage(`"http"`)}
	if tr, ok := handler["transport"]; ok {
		if err := json.Unmarshal(tr, &transport); err != nil {
			return nil, fmt.Errorf("reading the upstream's transport: %w", err)
		}
	}
	var protocol string
	if err := json.Unmarshal(transport["protocol"], &protocol); err != nil || protocol != "http" {
		return raw, nil
	}
	for key, d := range map[string]caddy.Duration{
		"dial_timeout": t.Dial, "response_header_timeout": t.ResponseHeader, "read_timeout": t.Read,
	} {
		if _, set := transport[key]; !set && d > 0 {
			transport[key] = json.RawMessage(fmt.Sprintf("%q", time.Duration(d).String()))
		}
	}
	tr, err := json.Marshal(transport)
	if err != nil {
		return nil, fmt.Errorf("writing the upstream's transport: %w", err)
	}
	handler["transport"] = tr
	out, err := json.Marshal(handler)
	if err != nil {
		return nil, fmt.Errorf("writing the upstream handler: %w", err)
	}
	return out, nil
}

// parseUpstreamTimeouts parses
//
//	upstream_timeouts {
//	    dial            <duration>
//	    response_header <duration>
//	    read            <duration>
//	    call            <duration>
//	    inbox           <duration>
//	}
func parseUpstreamTimeouts(d *caddyfile.Dispenser, g *Gateway) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	if g.UpstreamTimeouts == nil {
		g.UpstreamTimeouts = new(UpstreamTimeouts)
	}
	t := g.UpstreamTimeouts
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		key := d.Val()
		var v string
		if err := oneArg(d, &v); err != nil {
			return err
		}
		dur, err := caddy.ParseDuration(v)
		if err != nil || dur <= 0 {
			return d.Errf("upstream_timeouts %s must be a positive duration: %q", key, v)
		}
		switch key {
		case "dial":
			t.Dial = caddy.Duration(dur)
		case "response_header":
			t.ResponseHeader = caddy.Duration(dur)
		case "read":
			t.Read = caddy.Duration(dur)
		case "call":
			t.Call = caddy.Duration(dur)
		case "inbox":
			t.Inbox = caddy.Duration(dur)
		default:
			return d.Errf("unrecognized upstream_timeouts option '%s'", key)
		}
	}
	return nil
}

// idleReads replaces, on a provisioned reverse_proxy whose HTTP transport
// has a read timeout (the gateway's default `upstream_timeouts.read`, or
// the transport's own `read_timeout`), Caddy's way of enforcing it — a
// SetReadDeadline before every read of the upstream connection, which
// moves a runtime timer each time: a few microseconds a read, a dozen
// reads a search page — with one timer per connection that only looks at
// when the last read began (idleReadConn). What a client sees is the same:
// a read that waits longer than the timeout fails as past a deadline, also
// while the connection waits idle in the pool. It reports whether it did;
// transports it cannot reach whole (a custom TLS dialer, h2c, HTTP/3, a
// write timeout) keep Caddy's way.
func idleReads(up caddyhttp.MiddlewareHandler) bool {
	h, ok := up.(*reverseproxy.Handler)
	if !ok {
		return false
	}
	ht, ok := h.Transport.(*reverseproxy.HTTPTransport)
	if !ok || ht.Transport == nil || ht.ReadTimeout <= 0 || ht.WriteTimeout > 0 {
		return false
	}
	rt := ht.Transport
	if rt.DialContext == nil || rt.DialTLSContext != nil {
		return false
	}
	for _, v := range ht.Versions {
		if v != "1.1" && v != "2" {
			return false
		}
	}
	timeout, dial := time.Duration(ht.ReadTimeout), rt.DialContext
	// Caddy's dialer reads the field when it dials: with none, it wraps
	// nothing, and this wrapper enforces the timeout instead.
	ht.ReadTimeout = 0
	rt.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if tcp, ok := conn.(*net.TCPConn); ok {
			return newIdleReadConn(tcp, timeout), nil
		}
		return conn, nil
	}
	return true
}

// idleReadConn fails a read of the connection that has waited longer than
// timeout, as a read deadline set when it began would: each Read notes when
// it began and that it ended (a clock read and two atomic stores), and one
// timer per connection, due when the pending read's deadline would pass,
// cuts the connection's reads (a deadline in the past) if that read is
// still waiting, or waits again: for the newer read's deadline, or a whole
// timeout when no read is pending (time spent between reads, such as
// waiting for a slow client, counts no more than with a deadline per read).
type idleReadConn struct {
	*net.TCPConn
	timeout time.Duration
	born    time.Time // the connection's start, for a monotonic clock
	// reading is 1 + when the pending Read began (since born), 0 when none
	// is pending.
	reading atomic.Int64
	timer   *time.Timer
}

func newIdleReadConn(c *net.TCPConn, timeout time.Duration) *idleReadConn {
	ic := &idleReadConn{TCPConn: c, timeout: timeout, born: time.Now()}
	ic.timer = time.AfterFunc(time.Duration(math.MaxInt64), ic.check)
	ic.timer.Reset(timeout)
	return ic
}

// Read notes when it began and that it ended, and reads.
func (c *idleReadConn) Read(b []byte) (int, error) {
	c.reading.Store(1 + int64(time.Since(c.born)))
	n, err := c.TCPConn.Read(b)
	c.reading.Store(0)
	return n, err
}

// check runs when the read pending at the timer's setting would be past its
// deadline.
func (c *idleReadConn) check() {
	began := c.reading.Load()
	if began == 0 {
		c.timer.Reset(c.timeout) // no read pending: none can be late yet
		return
	}
	waited := time.Since(c.born) - time.Duration(began-1)
	if waited < c.timeout {
		c.timer.Reset(c.timeout - waited)
		return
	}
	if c.reading.Load() == began {
		// The read waiting since then (and any after it) fails with
		// os.ErrDeadlineExceeded, a timeout, as with Caddy's deadline.
		_ = c.TCPConn.SetReadDeadline(time.Unix(1, 0))
		return
	}
	c.timer.Reset(c.timeout) // it ended just now
}

// Close stops the timer and closes the connection.
func (c *idleReadConn) Close() error {
	c.timer.Stop()
	return c.TCPConn.Close()
}
