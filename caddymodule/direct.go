package caddymodule

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap/zapcore"

	"github.com/pfrgateway/caddy-pfr/forward"
)

// directKeys are the members of a `reverse_proxy` configuration the
// forwarder carries out as the handler would: one fixed address, and a
// transport whose every option lives in the transport itself (its
// *http.Transport, dialer and TLS), which the forwarder uses.
var directKeys = map[string]bool{"handler": true, "upstreams": true, "transport": true}

// directTransportKeys are the `http` transport options that take effect
// inside HTTPTransport.RoundTrip, whoever calls it. Left out: proxy_protocol
// (it reads what the handler stores per request), and anything unknown.
var directTransportKeys = map[string]bool{
	"protocol": true, "resolver": true, "tls": true, "keep_alive": true, "compression": true,
	"max_conns_per_host": true, "forward_proxy_url": true, "network_proxy": true,
	"dial_timeout": true, "dial_fallback_delay": true, "response_header_timeout": true,
	"expect_continue_timeout": true, "max_response_header_size": true, "write_buffer_size": true,
	"read_buffer_size": true, "read_timeout": true, "write_timeout": true, "versions": true,
	"local_address": true,
}

// directForwarder returns a forwarder for the provisioned upstream handler
// up, configured by raw, when up is a `reverse_proxy` that the forwarder
// replaces exactly: one upstream at a fixed TCP address, no option beyond
// the transport's (no header operations, load balancing, health checks,
// retries, response handlers or buffering), an HTTP/1.1 or HTTP/2
// transport, and its logger not at debug level (whoever asked for its
// debug logs gets them). Otherwise nil, and every request goes through up.
func directForwarder(ctx caddy.Context, up caddyhttp.MiddlewareHandler, raw json.RawMessage) *forward.Forwarder {
	h, ok := up.(*reverseproxy.Handler)
	if !ok || len(h.Upstreams) != 1 || h.DynamicUpstreams != nil {
		return nil
	}
	ht, ok := h.Transport.(*reverseproxy.HTTPTransport)
	if !ok || ht.Transport == nil || ht.ProxyProtocol != "" {
		return nil
	}
	for _, v := range ht.Versions {
		if v != "1.1" && v != "2" {
			return nil
		}
	}
	var cfg map[string]json.RawMessage
	if json.Unmarshal(raw, &cfg) != nil {
		return nil
	}
	for k := range cfg {
		if !directKeys[k] {
			return nil
		}
	}
	var transport map[string]json.RawMessage
	if tr, ok := cfg["transport"]; ok && json.Unmarshal(tr, &transport) != nil {
		return nil
	}
	for k := range transport {
		if !directTransportKeys[k] {
			return nil
		}
	}
	var upstreams []map[string]json.RawMessage
	if json.Unmarshal(cfg["upstreams"], &upstreams) != nil || len(upstreams) != 1 ||
		len(upstreams[0]) != 1 || upstreams[0]["dial"] == nil {
		return nil
	}
	dial := h.Upstreams[0].Dial
	if strings.ContainsAny(dial, "{}") {
		return nil // placeholders: a per-request address
	}
	addr, err := caddy.ParseNetworkAddress(dial)
	if err != nil || addr.PortRangeSize() != 1 || !slices.Contains([]string{"", "tcp", "tcp4", "tcp6"}, addr.Network) {
		return nil
	}
	if ctx.Logger(h).Core().Enabled(zapcore.DebugLevel) {
		return nil
	}
	return &forward.Forwarder{
		Transport: ht,
		Address:   addr.JoinHostPort(0),
		Trusted: func(r *http.Request) bool {
			trusted, _ := caddyhttp.GetVar(r.Context(), caddyhttp.TrustedProxyVarKey).(bool)
			return trusted
		},
	}
}
