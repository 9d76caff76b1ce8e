package caddymodule

import (
	"github.com/caddyserver/caddy/v2"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/pfrgateway/caddy-pfr/egress"
)

// UnmarshalCaddyfile sets up the gateway from Caddyfile tokens:
//
//	pfr {
//	    base_domain  <domain>
//	    fhir_path    <path>
//	    data_dir     <dir>
//	    state        bolt | postgres <dsn>
//	    partition    header [<header name>]
//	    partition    url_prefix
//	    partition    tenant_header [<tenant header>] {
//	        datastore_header <name>
//	        datastore_id     <id>
//	    }
//	    partition    per_record_url <url template>
//	    upstream_fhir_path <path>
//	    upstream_url <absolute base URL>...
//	    strip_header <name>...
//	    issuer <issuer URL> {
//	        jwks_url        <url>
//	        audience        <aud>...
//	        scope_claim     <claim>...
//	        client_id_claim <claim>...
//	    }
//	    dev_issuer
//	    authorization_server {
//	        <see parseAuthz>
//	    }
//	    scopes_when_absent <scope>...
//	    smart {
//	        issuer <issuer URL>
//	        patient_context     # the provider puts the record's Patient in token responses
//	        <member> <value>...   # e.g. authorization_endpoint https://…, capabilities a b c
//	    }
//	    allowed_types <type>...
//	    webhook_allow <cidr or address>...
//	    trust_upstream_isolation [true|false]
//	    response_filter on|off
//	    direct_upstream on|off
//	    dropoff [off] {
//	        <see DropOffConfig>
//	    }
//	    audit [off] {
//	        retention      <duration>
//	        max_per_record <n>
//	    }
//	    export [off] {
//	        dir     <path>
//	        ttl     <duration>
//	        workers <n>
//	        lease   <duration>
//	    }
//	    max_body_bytes <n>
//	    jwks_cache_ttl <duration>
//	    jwks_min_refetch <duration>
//	    upstream_timeouts {
//	        dial            <duration>
//	        response_header <duration>
//	        read            <duration>
//	        call            <duration>
//	        inbox           <duration>
//	    }
//	    upstream <handler> [<args...>] {
//	        <handler options>
//	    }
//	}
func (g *Gateway) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	if g.Partition == nil {
		g.Partition = new(PartitionConfig)
	}
	pc := g.Partition
	for d.NextBlock(0) {
		switch d.Val() {
		case "base_domain":
			if err := oneArg(d, &g.BaseDomain); err != nil {
				return err
			}
		case "fhir_path":
			if err := oneArg(d, &g.FHIRPath); err != nil {
				return err
			}
		case "data_dir":
			if err := oneArg(d, &g.DataDir); err != nil {
				return err
			}
		case "state":
			st, err := unmarshalState(d)
			if err != nil {
				return err
			}
			g.State = st
		case "upstream_fhir_path":
			if err := oneArg(d, &pc.UpstreamFHIRPath); err != nil {
				return err
			}
		case "upstream_url":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			pc.UpstreamURLs = append(pc.UpstreamURLs, args...)
		case "strip_header":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			pc.StripHeaders = append(pc.StripHeaders, args...)
		case "partition":
			if err := parsePartition(d, pc); err != nil {
				return err
			}
		case "issuer":
			ic, err := parseIssuer(d)
			if err != nil {
				return err
			}
			g.Issuers = append(g.Issuers, ic)
		case "authorization_server":
			c, err := parseAuthz(d)
			if err != nil {
				return err
			}
			g.AuthorizationServer = c
		case "dev_issuer":
			if d.NextArg() {
				return d.ArgErr()
			}
			g.DevIssuer = true
		case "dropoff":
			if g.DropOff == nil {
				g.DropOff = new(DropOffConfig)
			}
			if err := parseDropOff(d, g.DropOff); err != nil {
				return err
			}
		case "audit":
			if err := parseAudit(d, g); err != nil {
				return err
			}
		case "export":
			if err := parseExport(d, g); err != nil {
				return err
			}
		case "webhook_allow":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			if _, err := egress.ParseAllow(args); err != nil {
				return d.Errf("webhook_allow: %v", err)
			}
			g.WebhookAllow = append(g.WebhookAllow, args...)
		case "allowed_types":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			g.AllowedTypes = append(g.AllowedTypes, args...)
		case "response_filter":
			on, err := onOff(d)
			if err != nil {
				return err
			}
			g.ResponseFilter = &on
		case "direct_upstream":
			on, err := onOff(d)
			if err != nil {
				return err
			}
			g.DirectUpstream = &on
		case "trust_upstream_isolation":
			trust := true
			if d.NextArg() {
				v, err := strconv.ParseBool(d.Val())
				if err != nil {
					return d.Errf("trust_upstream_isolation takes true or false, not %q", d.Val())
				}
				trust = v
			}
			if d.NextArg() {
				return d.ArgErr()
			}
			g.TrustUpstreamIsolation = &trust
		case "scopes_when_absent":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			g.ScopesWhenAbsent = append(g.ScopesWhenAbsent, args...)
		case "smart":
			if err := parseSMART(d, g); err != nil {
				return err
			}
		case "max_body_bytes":
			var v string
			if err := oneArg(d, &v); err != nil {
				return err
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n <= 0 {
				return d.Errf("max_body_bytes must be a positive number of bytes: %q", v)
			}
			g.MaxBodyBytes = n
		case "jwks_cache_ttl", "jwks_min_refetch":
			name := d.Val()
			var v string
			if err := oneArg(d, &v); err != nil {
				return err
			}
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur <= 0 {
				return d.Errf("%s must be a positive duration: %q", name, v)
			}
			if name == "jwks_cache_ttl" {
				g.JWKSCacheTTL = caddy.Duration(dur)
			} else {
				g.JWKSMinRefetch = caddy.Duration(dur)
			}
		case "upstream_timeouts":
			if err := parseUpstreamTimeouts(d, g); err != nil {
				return err
			}
		case "upstream":
			if !d.NextArg() {
				return d.ArgErr()
			}
			name := d.Val()
			unm, err := caddyfile.UnmarshalModule(d, "http.handlers."+name)
			if err != nil {
				return err
			}
			h, ok := unm.(caddyhttp.MiddlewareHandler)
			if !ok {
				return d.Errf("upstream %q is not an HTTP handler", name)
			}
			g.UpstreamRaw = caddyconfig.JSONModuleObject(h, "handler", name, nil)
		default:
			return d.Errf("unrecognized pfr option '%s'", d.Val())
		}
	}
	return nil
}

// parseAudit parses `audit [off] { retention <d>; max_per_record <n> }`.
func parseAudit(d *caddyfile.Dispenser, g *Gateway) error {
	if g.Audit == nil {
		g.Audit = new(AuditConfig)
	}
	if d.NextArg() {
		if d.Val() != "off" {
			return d.Errf("audit takes 'off' or a block, not %q", d.Val())
		}
		g.Audit.Disabled = true
		if d.NextArg() {
			return d.ArgErr()
		}
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var v string
		key := d.Val()
		if err := oneArg(d, &v); err != nil {
			return err
		}
		switch key {
		case "retention":
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur <= 0 {
				return d.Errf("retention must be a positive duration: %q", v)
			}
			g.Audit.Retention = caddy.Duration(dur)
		case "max_per_record":
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return d.Errf("max_per_record must be a positive number: %q", v)
			}
			g.Audit.MaxPerRecord = n
		default:
			return d.Errf("unrecognized audit option '%s'", key)
		}
	}
	return nil
}

// parseSMART parses the smart block; a member with one value is a string,
// with several a list (capabilities, scopes_supported, …).
func parseSMART(d *caddyfile.Dispenser, g *Gateway) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	if g.SMART == nil {
		g.SMART = &SMARTConfig{}
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		key := d.Val()
		args := d.RemainingArgs()
		if key == "patient_context" {
			if len(args) != 0 {
				return d.ArgErr()
			}
			g.SMART.PatientContext = true
			continue
		}
		if len(args) == 0 {
			return d.ArgErr()
		}
		if key == "issuer" {
			if len(args) != 1 {
				return d.ArgErr()
			}
			g.SMART.Issuer = args[0]
			continue
		}
		if g.SMART.Overrides == nil {
			g.SMART.Overrides = map[string]any{}
		}
		if len(args) == 1 && key != "capabilities" && !strings.HasSuffix(key, "_supported") {
			g.SMART.Overrides[key] = args[0]
		} else {
			g.SMART.Overrides[key] = args
		}
	}
	return nil
}

func parseIssuer(d *caddyfile.Dispenser) (IssuerConfig, error) {
	var ic IssuerConfig
	if err := oneArgNoEnd(d, &ic.Issuer); err != nil {
		return ic, err
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "jwks_url":
			if err := oneArg(d, &ic.JWKSURL); err != nil {
				return ic, err
			}
		case "audience":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return ic, d.ArgErr()
			}
			ic.Audiences = append(ic.Audiences, args...)
		case "scope_claim":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return ic, d.ArgErr()
			}
			ic.ScopeClaims = append(ic.ScopeClaims, args...)
		case "client_id_claim":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return ic, d.ArgErr()
			}
			ic.ClientIDClaims = append(ic.ClientIDClaims, args...)
		default:
			return ic, d.Errf("unrecognized issuer option '%s'", d.Val())
		}
	}
	return ic, nil
}

// oneArg reads exactly one argument into dst.
func oneArg(d *caddyfile.Dispenser, dst *string) error {
	if err := oneArgNoEnd(d, dst); err != nil {
		return err
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}

// oneArgNoEnd reads one argument into dst; a block may follow.
func oneArgNoEnd(d *caddyfile.Dispenser, dst *string) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	*dst = d.Val()
	return nil
}

func parseGatewayCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	g := new(Gateway)
	err := g.UnmarshalCaddyfile(h.Dispenser)
	return g, err
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Gateway)(nil)

// onOff reads the one argument of the current option, on or off.
func onOff(d *caddyfile.Dispenser) (bool, error) {
	name := d.Val()
	if !d.NextArg() {
		return false, d.ArgErr()
	}
	on := d.Val() == "on"
	if !on && d.Val() != "off" {
		return false, d.Errf("%s takes on or off, not %q", name, d.Val())
	}
	if d.NextArg() {
		return false, d.ArgErr()
	}
	return on, nil
}
