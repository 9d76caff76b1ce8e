package caddymodule

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
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
