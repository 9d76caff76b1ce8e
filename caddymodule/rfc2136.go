package caddymodule

import (
	"context"
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/certmagic"
	"github.com/libdns/libdns"
	"go.uber.org/zap"

	"github.com/pfrgateway/caddy-pfr/rfc2136"
)

func init() {
	caddy.RegisterModule(RFC2136DNS{})
}

// RFC2136DNS is a DNS provider for the ACME DNS-01 challenge that changes
// records with RFC 2136 dynamic updates signed with a TSIG key: BIND,
// Knot, PowerDNS and managed DNS services that accept RFC 2136. With it,
// Caddy obtains a wildcard certificate for every record's subdomain:
//
//	tls {
//	    dns rfc2136 {
//	        server   ns1.example.com:53
//	        key_name acme-update
//	        key_alg  hmac-sha256
//	        key      {env.RFC2136_KEY}
//	    }
//	}
//
// or globally with `acme_dns rfc2136 { … }`. Every field accepts Caddy
// placeholders such as {env.RFC2136_KEY}, replaced when the module is
// provisioned. Its field names are those of github.com/caddy-dns/rfc2136,
// which registers the same module ID: build with one of the two, not both.
type RFC2136DNS struct {
	// The primary name server that accepts the updates for the zone: host
	// or host:port (port 53 when none is given). Required.
	Server string `json:"server,omitempty"`

	// The TSIG key's name, as the server knows it (BIND: the name in the
	// `key` statement that the zone's update-policy grants). Required.
	KeyName string `json:"key_name,omitempty"`

	// The TSIG algorithm: hmac-sha256 (default), hmac-sha1, hmac-sha224,
	// hmac-sha384 or hmac-sha512.
	KeyAlgorithm string `json:"key_alg,omitempty"`

	// The TSIG key's secret, base64 (as tsig-keygen prints it). Required;
	// keep it out of the Caddyfile with {env.…}.
	Key string `json:"key,omitempty"`

	// How long one exchange with the server (connect, send, answer) may
	// take. Default: 10s. How long Caddy waits for the record to be
	// visible is the challenge's own propagation_timeout.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	provider *rfc2136.Provider
	logger   *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (RFC2136DNS) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "dns.providers.rfc2136",
		New: func() caddy.Module { return new(RFC2136DNS) },
	}
}

// Provision replaces placeholders and checks the configuration.
func (r *RFC2136DNS) Provision(ctx caddy.Context) error {
	r.logger = ctx.Logger()
	repl := caddy.NewReplacer()
	r.provider = &rfc2136.Provider{
		Server:       repl.ReplaceAll(r.Server, ""),
		KeyName:      repl.ReplaceAll(r.KeyName, ""),
		KeyAlgorithm: repl.ReplaceAll(r.KeyAlgorithm, ""),
		KeySecret:    repl.ReplaceAll(r.Key, ""),
		Timeout:      time.Duration(r.Timeout),
	}
	if err := r.provider.Validate(); err != nil {
		return fmt.Errorf("dns.providers.rfc2136: %w", err)
	}
	return nil
}

// AppendRecords implements libdns.RecordAppender.
func (r *RFC2136DNS) AppendRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	out, err := r.provider.AppendRecords(ctx, zone, recs)
	if err != nil {
		r.logger.Warn("dns update failed", zap.String("zone", zone), zap.String("server", r.provider.Server), zap.Error(err))
		return nil, fmt.Errorf("dns.providers.rfc2136: %w", err)
	}
	r.logger.Debug("records added", zap.String("zone", zone), zap.Int("count", len(out)))
	return out, nil
}

// DeleteRecords implements libdns.RecordDeleter.
func (r *RFC2136DNS) DeleteRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	out, err := r.provider.DeleteRecords(ctx, zone, recs)
	if err != nil {
		r.logger.Warn("dns update failed", zap.String("zone", zone), zap.String("server", r.provider.Server), zap.Error(err))
		return nil, fmt.Errorf("dns.providers.rfc2136: %w", err)
	}
	r.logger.Debug("records deleted", zap.String("zone", zone), zap.Int("count", len(out)))
	return out, nil
}

// UnmarshalCaddyfile parses
//
//	rfc2136 [<server>] {
//	    server   <host[:port]>
//	    key_name <name>
//	    key_alg  <hmac-sha256|hmac-sha1|hmac-sha224|hmac-sha384|hmac-sha512>
//	    key      <base64 secret>
//	    timeout  <duration>
//	}
func (r *RFC2136DNS) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // module name
	if d.NextArg() {
		r.Server = d.Val()
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		var err error
		switch d.Val() {
		case "server":
			err = oneArg(d, &r.Server)
		case "key_name":
			err = oneArg(d, &r.KeyName)
		case "key_alg":
			err = oneArg(d, &r.KeyAlgorithm)
		case "key":
			err = oneArg(d, &r.Key)
		case "timeout":
			var s string
			if err = oneArg(d, &s); err == nil {
				var dur time.Duration
				if dur, err = caddy.ParseDuration(s); err != nil || dur <= 0 {
					return d.Errf("rfc2136 timeout %q: want a positive duration", s)
				}
				r.Timeout = caddy.Duration(dur)
			}
		default:
			return d.Errf("unrecognized rfc2136 option '%s'", d.Val())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner     = (*RFC2136DNS)(nil)
	_ caddyfile.Unmarshaler = (*RFC2136DNS)(nil)
	_ certmagic.DNSProvider = (*RFC2136DNS)(nil)
	_ libdns.RecordAppender = (*RFC2136DNS)(nil)
	_ libdns.RecordDeleter  = (*RFC2136DNS)(nil)
)
