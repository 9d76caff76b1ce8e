package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"

	"github.com/pfrgateway/caddy-pfr/internal/hapitest"
)

// baseDomain is the gateway's base domain: under .localhost, as the dev
// issuer requires, and dialled as 127.0.0.1 by the bench client.
const baseDomain = "pfr.localhost"

// slug is the record every gateway request goes to.
const slug = "bench"

// ports are the loopback ports of one bench Caddy.
type ports struct {
	store      int // (a) pfr_store alone
	proxy      int // (b) bare reverse_proxy to the store
	gateway    int // (c) the gateway over plain HTTP
	gatewayTLS int // (d) the gateway over HTTPS
	trusted    int // (e) the gateway over plain HTTP with trust_upstream_isolation and response_filter off
	embedded   int // (f) the gateway over plain HTTP with the store in its own process (upstream pfr_store), as Caddyfile.example runs it
	admin      int // Caddy's admin endpoint (pprof)
}

// globalOptions are the Caddyfile's global options. Arguments: %[1]d
// admin, %[2]d HTTP port, %[3]d HTTPS port, %[4]s work directory.
const globalOptions = `{
	admin 127.0.0.1:%[1]d
	persist_config off
	default_bind 127.0.0.1
	http_port %[2]d
	https_port %[3]d
	auto_https disable_redirects
	local_certs
	skip_install_trust
	storage file_system {
		root %[4]s/caddy
	}
	on_demand_tls {
		permission pfr {
			base_domain ` + baseDomain + `
			data_dir %[4]s/gateway
		}
	}
}
`

// storeAndProxySites are (a) and (b). They have no host matcher: the
// gateway's upstream requests carry the PFR's Host, and a site bound to the
// host 127.0.0.1 would answer them with an empty 200. The bare proxy sends
// its upstream what the gateway sends: the client's bearer token removed. Arguments: %[1]d
// store, %[2]d proxy, %[3]s work directory.
const storeAndProxySites = `
http://:%[1]d {
	pfr_store {
		path %[3]s/store.db
	}
}

http://:%[2]d {
	reverse_proxy 127.0.0.1:%[1]d {
		header_up -Authorization
	}
}
`

// gatewaySite is a gateway site on scheme and port in front of the store,
// with extra lines in its pfr block. Every gateway site shares one data
// directory, so one record and one token serve them all.
func gatewaySite(scheme string, port int, p ports, workDir string, extra ...string) string {
	return gatewaySiteTo(scheme, port, fmt.Sprintf("reverse_proxy 127.0.0.1:%d", p.store), workDir, extra...)
}

// embeddedSite is (f): the gateway whose upstream handler is the store
// itself, on the same database file as (a) (one bbolt database, shared in
// the process), so that no request crosses a socket to reach it.
func embeddedSite(p ports, workDir string) string {
	return gatewaySiteTo("http", p.embedded, fmt.Sprintf("pfr_store {\n\t\t\tpath %s/store.db\n\t\t}", workDir), workDir)
}

// gatewaySiteTo is a gateway site whose pfr block's upstream is upstream
// (a handler and its configuration, as the Caddyfile writes it).
func gatewaySiteTo(scheme string, port int, upstream, workDir string, extra ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n%[1]s://%[2]s:%[3]d, %[1]s://*.%[2]s:%[3]d {\n", scheme, baseDomain, port)
	if scheme == "https" {
		b.WriteString("\ttls {\n\t\ton_demand\n\t}\n")
	}
	fmt.Fprintf(&b, "\tpfr {\n\t\tbase_domain %s\n\t\tdata_dir %s/gateway\n\t\tdev_issuer\n", baseDomain, workDir)
	for _, line := range extra {
		b.WriteString("\t\t" + line + "\n")
	}
	fmt.Fprintf(&b, "\t\tupstream %s\n\t}\n}\n", upstream)
	return b.String()
}

// proxySite is (b) alone, in front of an upstream that is not this Caddy's
// (the HAPI test server on p.store). Arguments: %[1]d upstream, %[2]d proxy.
const proxySite = `
http://:%[2]d {
	reverse_proxy 127.0.0.1:%[1]d {
		header_up -Authorization
	}
}
`

// sites says which targets caddyfile serves besides (a), (b) and (c).
type sites struct {
	tls, trusted, embedded bool // (d), (e), (f)
	// external: (a) is a server of its own on p.store (HAPI), and this
	// Caddy serves (b) to (e) in front of it; (f) is not served.
	external bool
	// handler: the gateways send their upstream requests through the
	// reverse_proxy handler (direct_upstream off) instead of its
	// transport directly.
	handler bool
}

// caddyfile renders the bench configuration: (a), (b), (c), and what s
// asks for.
func caddyfile(p ports, workDir string, s sites) string {
	var b strings.Builder
	fmt.Fprintf(&b, globalOptions, p.admin, p.gateway, p.gatewayTLS, workDir)
	if s.external {
		fmt.Fprintf(&b, proxySite, p.store, p.proxy)
	} else {
		fmt.Fprintf(&b, storeAndProxySites, p.store, p.proxy, workDir)
	}
	var direct []string
	if s.handler {
		direct = []string{"direct_upstream off"}
	}
	b.WriteString(gatewaySite("http", p.gateway, p, workDir, direct...))
	if s.tls {
		b.WriteString(gatewaySite("https", p.gatewayTLS, p, workDir, direct...))
	}
	if s.trusted {
		b.WriteString(gatewaySite("http", p.trusted, p, workDir, append(direct, "trust_upstream_isolation", "response_filter off")...))
	}
	if s.embedded && !s.external {
		b.WriteString(embeddedSite(p, workDir))
	}
	return b.String()
}

// startHAPI runs the HAPI test server (partition header) for -hapi.
func startHAPI(ctx context.Context, jar, dir string, logw io.Writer) (*hapitest.Server, error) {
	if jar == "" {
		var err error
		if jar, err = hapitest.ModuleJar(ctx); err != nil {
			return nil, fmt.Errorf("%w (or pass -hapi-jar)", err)
		}
	}
	fmt.Fprintln(logw, "starting the HAPI test server …")
	s, err := hapitest.Start(ctx, hapitest.Options{Mode: "header", Jar: jar, Dir: dir})
	if err != nil {
		return nil, fmt.Errorf("starting HAPI (%s): %w", hapitest.Build, err)
	}
	return s, nil
}

// portOf is the port of a host:port address.
func portOf(addr string) (int, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(port)
}
