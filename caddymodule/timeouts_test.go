package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// TestUpstreamTimeoutsCaddyfile: the block parses into the JSON config.
func TestUpstreamTimeoutsCaddyfile(t *testing.T) {
	cfg, err := adapt(t, `
:8443 {
	pfr {
		base_domain pfr.example.com
		dev_issuer
		upstream_timeouts {
			dial 2s
			response_header 10s
			read 15s
			call 20s
			inbox 500ms
		}
		upstream reverse_proxy 127.0.0.1:8090
	}
}`)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(handler(t, cfg, "pfr"))
	want := `"upstream_timeouts":{"call":20000000000,"dial":2000000000,"inbox":500000000,"read":15000000000,"response_header":10000000000}`
	if !strings.Contains(string(raw), want) {
		t.Errorf("adapted pfr handler lacks %s:\n%s", want, raw)
	}
	if _, err := adapt(t, ":8443 {\n\tpfr {\n\t\tupstream_timeouts {\n\t\t\tcall 0s\n\t\t}\n\t}\n}"); err == nil {
		t.Error("a zero timeout was accepted")
	}
}

// TestTransportTimeouts: the reverse_proxy transport gets the timeouts it
// leaves unset, keeps the ones it sets, and other handlers are untouched.
func TestTransportTimeouts(t *testing.T) {
	d := (*UpstreamTimeouts)(nil).durations()
	if d.Dial != caddy.Duration(3*time.Second) || d.ResponseHeader != caddy.Duration(30*time.Second) || d.Read != caddy.Duration(60*time.Second) {
		t.Errorf("defaults %+v", d)
	}
	if err := d.validate(); err != nil {
		t.Error(err)
	}
	if err := (UpstreamTimeouts{ResponseHeader: caddy.Duration(time.Minute), Read: caddy.Duration(time.Minute)}).validate(); err == nil {
		t.Error("a read timeout equal to the response header timeout was accepted")
	}
	for _, c := range []struct{ in, want string }{
		{`{"handler":"reverse_proxy","upstreams":[{"dial":"h:1"}]}`,
			`{"dial_timeout":"3s","protocol":"http","read_timeout":"1m0s","response_header_timeout":"30s"}`},
		{`{"handler":"reverse_proxy","transport":{"protocol":"http","response_header_timeout":5000000000,"tls":{}}}`,
			`{"dial_timeout":"3s","protocol":"http","read_timeout":"1m0s","response_header_timeout":5000000000,"tls":{}}`},
		{`{"handler":"reverse_proxy","transport":{"protocol":"fastcgi"}}`, `{"protocol":"fastcgi"}`},
		{`{"handler":"pfr_store","path":"x.db"}`, ``},
	} {
		out, err := withTransportTimeouts(json.RawMessage(c.in), d)
		if err != nil {
			t.Fatal(err)
		}
		var h map[string]json.RawMessage
		if err := json.Unmarshal(out, &h); err != nil {
			t.Fatal(err)
		}
		if got := string(h["transport"]); got != c.want {
			t.Errorf("%s: transport %s, want %s", c.in, got, c.want)
		}
	}
}

// TestIdleReadConn: a read that waits longer than the timeout fails as past
// a deadline; reads that each wait less go on however long the connection
// lives, and so does one after a pause between reads.
func TestIdleReadConn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server := <-accepted
	if server == nil {
		t.Fatal("no connection accepted")
	}
	defer server.Close()
	const timeout = 400 * time.Millisecond
	c := newIdleReadConn(raw.(*net.TCPConn), timeout)
	defer c.Close()
	// Flowing: a byte every tenth of the timeout, for three timeouts.
	go func() {
		for range 30 {
			if _, err := server.Write([]byte{'x'}); err != nil {
				return
			}
			time.Sleep(timeout / 10)
		}
	}()
	buf := make([]byte, 1)
	for i := range 30 {
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatalf("read %d of a flowing connection: %v", i, err)
		}
	}
	// A pause between reads longer than the timeout (a slow client, say)
	// fails no read: only a read's own wait counts.
	time.Sleep(2 * timeout)
	if _, err := server.Write([]byte{'y'}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf); err != nil || buf[0] != 'y' {
		t.Fatalf("a read after a pause between reads: %q, %v", buf, err)
	}
	// Stalled: nothing more comes.
	start := time.Now()
	_, err = c.Read(buf)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("a stalled read returned %v, want a timeout", err)
	}
	if waited := time.Since(start); waited < timeout/2 {
		t.Errorf("a stalled read failed after %s, before its timeout of %s", waited, timeout)
	}
}

// TestIdleReads: the reverse_proxy transport's read timeout moves from
// Caddy's per-read deadline to idleReadConn where the transport dials
// through DialContext alone, and stays Caddy's anywhere else.
func TestIdleReads(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	var d net.Dialer
	handler := func(versions ...string) (*reverseproxy.Handler, *reverseproxy.HTTPTransport) {
		ht := &reverseproxy.HTTPTransport{ReadTimeout: caddy.Duration(time.Minute), Versions: versions,
			Transport: &http.Transport{DialContext: d.DialContext}}
		return &reverseproxy.Handler{Transport: ht}, ht
	}
	h, ht := handler("1.1", "2")
	if !idleReads(h) || ht.ReadTimeout != 0 {
		t.Fatalf("not moved: read_timeout %v", ht.ReadTimeout)
	}
	conn, err := ht.Transport.DialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if ic, ok := conn.(*idleReadConn); !ok || ic.timeout != time.Minute {
		t.Errorf("dialled %T, want an idleReadConn with the transport's timeout", conn)
	}
	for _, versions := range [][]string{{"h2c", "2"}, {"3"}} {
		h, ht := handler(versions...)
		if idleReads(h) || ht.ReadTimeout != caddy.Duration(time.Minute) {
			t.Errorf("versions %v: moved", versions)
		}
	}
	h, ht = handler()
	ht.WriteTimeout = caddy.Duration(time.Minute)
	if idleReads(h) {
		t.Error("moved with a write timeout")
	}
	h, ht = handler()
	ht.ReadTimeout = 0
	if idleReads(h) {
		t.Error("moved without a read timeout")
	}
}
