// Package egress is the destination policy of every connection the gateway
// opens to an address a user chose (drop-off webhooks today; imports from a
// URL or any later outbound call tomorrow): one home for the rule, enforced
// where it cannot be got around, on the socket address being dialled.
//
// The rule: a destination is allowed when the IP address dialled (after DNS
// resolution, after unmapping IPv4-mapped IPv6) is a public unicast address,
// or lies in a network the operator allowed. Loopback, unspecified,
// link-local, private (RFC 1918, unique local), shared address space (CGNAT,
// 100.64.0.0/10), multicast, broadcast, documentation, benchmarking,
// reserved, IPv4-compatible, NAT64, 6to4 and Teredo addresses are refused
// unless allowed (the last three embed an IPv4 address the gateway cannot
// vouch for). Plain http is allowed only to an allowed network; anything
// else must be https. Redirects are never followed.
//
// Check validates a URL when it is saved (resolving its host); Client's
// transport checks again at connect time, on every address the dialer is
// about to connect to, so DNS rebinding, a redirect or a changed record
// cannot reach a refused address. Proxies from the environment are not used
// (the proxy would do the dialling).
package egress

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"
)

// ErrRefused is wrapped by every refusal of the policy: the destination can
// never be reached under the current configuration, so retrying it is
// pointless.
var ErrRefused = errors.New("destination refused by the outbound policy")

// refused wraps ErrRefused with the reason.
func refused(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrRefused, fmt.Sprintf(format, args...))
}

// blocked are the special-purpose networks refused by default (IANA IPv4
// and IPv6 Special-Purpose Address Registries, plus multicast and the
// transition mechanisms that embed an IPv4 address), each with its name for
// the refusal message.
var blocked = []struct {
	prefix netip.Prefix
	name   string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "\"this network\" (unspecified)"},
	{netip.MustParsePrefix("10.0.0.0/8"), "private (RFC 1918)"},
	{netip.MustParsePrefix("100.64.0.0/10"), "shared address space (CGNAT)"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local"},
	{netip.MustParsePrefix("172.16.0.0/12"), "private (RFC 1918)"},
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol assignments"},
	{netip.MustParsePrefix("192.0.2.0/24"), "documentation"},
	{netip.MustParsePrefix("192.88.99.0/24"), "6to4 relay anycast"},
	{netip.MustParsePrefix("192.168.0.0/16"), "private (RFC 1918)"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking"},
	{netip.MustParsePrefix("198.51.100.0/24"), "documentation"},
	{netip.MustParsePrefix("203.0.113.0/24"), "documentation"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved (and broadcast)"},
	{netip.MustParsePrefix("::/128"), "unspecified"},
	{netip.MustParsePrefix("::1/128"), "loopback"},
	{netip.MustParsePrefix("::/96"), "IPv4-compatible (deprecated)"},
	{netip.MustParsePrefix("64:ff9b::/96"), "NAT64"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "local NAT64"},
	{netip.MustParsePrefix("100::/64"), "discard-only"},
	{netip.MustParsePrefix("2001::/23"), "IETF protocol assignments (incl. Teredo)"},
	{netip.MustParsePrefix("2001:db8::/32"), "documentation"},
	{netip.MustParsePrefix("2002::/16"), "6to4"},
	{netip.MustParsePrefix("3fff::/20"), "documentation"},
	{netip.MustParsePrefix("5f00::/16"), "segment routing"},
	{netip.MustParsePrefix("fc00::/7"), "unique local (private)"},
	{netip.MustParsePrefix("fe80::/10"), "link-local"},
	{netip.MustParsePrefix("fec0::/10"), "site-local (deprecated)"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
}

// Policy says where outbound connections may go. The zero value refuses
// every special-purpose address and allows public ones over https.
type Policy struct {
	// Allow lists networks the operator allows although they are refused
	// by default (an in-house receiver on 10.0.0.0/8, say). Plain http is
	// allowed to them.
	Allow []netip.Prefix
	// LookupNetIP resolves host names. Default net.DefaultResolver.
	// Tests set it to make a name resolve where they want.
	LookupNetIP func(ctx context.Context, network, host string) ([]netip.Addr, error)
	// RootCAFile names a PEM file of CA certificates trusted for https
	// besides the system's roots: a private CA, or the root of another
	// Caddy's `tls internal`. It is read each time Client is called, so
	// a root created or renewed after the start is seen; a file that
	// cannot be read fails every request of that client. The destination
	// rules are the same with it.
	RootCAFile string
}

// IsLocalhost reports whether host is localhost or a name under
// .localhost: the loopback address by definition (RFC 6761, 6.3), never
// asked of DNS.
func IsLocalhost(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	return host == "localhost" || strings.HasSuffix(host, ".localhost")
}

// ParseAllow parses the networks of a webhook_allow setting: CIDR
// prefixes ("10.0.0.0/8", "fd00::/8") or single addresses ("10.1.2.3").
func ParseAllow(networks []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(networks))
	for _, s := range networks {
		if p, err := netip.ParsePrefix(s); err == nil {
			if p.Addr().Is4In6() {
				p = netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0))
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("egress: %q is neither an IP network (CIDR) nor an IP address", s)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// allowed reports whether a is in a network the operator allowed.
func (p *Policy) allowed(a netip.Addr) bool {
	for _, n := range p.Allow {
		if n.Contains(a) {
			return true
		}
	}
	return false
}

// CheckAddr says whether a connection to a may be opened, plain (http) or
// not: nil, or an error wrapping ErrRefused that says why.
func (p *Policy) CheckAddr(a netip.Addr, plain bool) error {
	a = a.Unmap().WithZone("")
	if !a.IsValid() {
		return refused("no valid IP address")
	}
	if p.allowed(a) {
		return nil
	}
	for _, b := range blocked {
		if b.prefix.Contains(a) {
			return refused("%s is a %s address; allow its network with webhook_allow to use it", a, b.name)
		}
	}
	if plain {
		return refused("plain http to %s: https is required except to a network allowed with webhook_allow", a)
	}
	return nil
}

// Check validates a destination URL when it is saved: an absolute http or
// https URL without user information, whose host (an IP literal, or every
// address its name resolves to now) passes CheckAddr. It does not dial.
// Refusals wrap ErrRefused; a name that does not resolve is refused too.
func (p *Policy) Check(ctx context.Context, raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return refused("not a URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return refused("the scheme must be https (or http to an allowed network), not %q", u.Scheme)
	}
	if u.Host == "" || u.Hostname() == "" || u.Opaque != "" {
		return refused("the URL must be absolute, with a host")
	}
	if u.User != nil {
		return refused("the URL must not carry user information")
	}
	if port := u.Port(); port != "" {
		if n, err := parsePort(port); err != nil || n == 0 {
			return refused("invalid port %q", port)
		}
	}
	addrs, err := p.resolve(ctx, u.Hostname())
	if err != nil {
		return err
	}
	for _, a := range addrs {
		if err := p.CheckAddr(a, u.Scheme == "http"); err != nil {
			return fmt.Errorf("%s resolves to %s: %w", u.Hostname(), a, err)
		}
	}
	return nil
}

func parsePort(s string) (int, error) {
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' || n > 65535 {
			return 0, errors.New("bad port")
		}
		n = n*10 + int(c-'0')
	}
	if n > 65535 {
		return 0, errors.New("bad port")
	}
	return n, nil
}

// resolve returns the addresses of host: the literal itself, or what the
// resolver answers. Every literal form net.ParseIP would not take (octal,
// hex, short dotted forms) is handed to the resolver, which treats it as a
// name, and whatever it answers is checked like any other address.
func (p *Policy) resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a}, nil
	}
	lookup := p.LookupNetIP
	if lookup == nil && IsLocalhost(host) {
		// Loopback, which CheckAddr refuses unless allowed.
		return []netip.Addr{netip.IPv6Loopback(), netip.MustParseAddr("127.0.0.1")}, nil
	}
	if lookup == nil {
		lookup = net.DefaultResolver.LookupNetIP
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	addrs, err := lookup(ctx, "ip", strings.TrimSuffix(host, "."))
	if err != nil || len(addrs) == 0 {
		return nil, refused("the host name %q does not resolve", host)
	}
	return addrs, nil
}

// plainKey marks a dial made for a plain-http request.
type plainKey struct{}

// Client returns an HTTP client whose every connection obeys the policy:
// the dialer resolves the host itself, refuses the request unless every
// address it would dial passes CheckAddr (plain http only to allowed
// networks), and checks the socket address again just before connecting.
// It follows no redirect (a 3xx is the answer), ignores proxy settings and
// gives up after timeout.
func (p *Policy) Client(timeout time.Duration) *http.Client {
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	var rootsErr error
	if p.RootCAFile != "" {
		tlsConfig.RootCAs, rootsErr = rootsWith(p.RootCAFile)
	}
	dialer := &net.Dialer{
		Timeout: 10 * time.Second,
		ControlContext: func(ctx context.Context, network, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return refused("cannot read the address being dialled %q", address)
			}
			plain, _ := ctx.Value(plainKey{}).(bool)
			return p.CheckAddr(ap.Addr(), plain)
		},
	}
	transport := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, address string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(address)
			if err != nil {
				return nil, refused("cannot read the address %q", address)
			}
			addrs, err := p.resolve(ctx, host)
			if err != nil {
				return nil, err
			}
			plain, _ := ctx.Value(plainKey{}).(bool)
			var firstErr error
			for _, a := range addrs {
				if err := p.CheckAddr(a, plain); err != nil {
					// One refused address refuses the name: a name that
					// resolves to both a public and a loopback address is
					// an attack, not a failover.
					return nil, fmt.Errorf("%s resolves to %s: %w", host, a, err)
				}
			}
			for _, a := range addrs {
				conn, err := dialer.DialContext(ctx, network, net.JoinHostPort(a.Unmap().String(), port))
				if err == nil {
					return conn, nil
				}
				if errors.Is(err, ErrRefused) {
					return nil, err
				}
				if firstErr == nil {
					firstErr = err
				}
			}
			return nil, firstErr
		},
		TLSClientConfig:       tlsConfig,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          16,
		IdleConnTimeout:       30 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: timeout,
	}
	return &http.Client{
		Timeout:   timeout,
		Transport: policyTransport{p: p, next: transport, err: rootsErr},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// policyTransport checks each request's URL before it reaches the
// transport and tells the dialer whether the request is plain http.
type policyTransport struct {
	p    *Policy
	next http.RoundTripper
	err  error // the client cannot be used (its trusted roots did not load)
}

// rootsWith is the system's roots and the PEM certificates of file.
func rootsWith(file string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("egress: reading the trusted roots: %w", err)
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("egress: %s holds no PEM certificate", file)
	}
	return pool, nil
}

func (t policyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if t.err != nil {
		if r.Body != nil {
			_ = r.Body.Close()
		}
		return nil, t.err
	}
	switch r.URL.Scheme {
	case "https":
	case "http":
		r = r.Clone(context.WithValue(r.Context(), plainKey{}, true))
	default:
		if r.Body != nil {
			_ = r.Body.Close()
		}
		return nil, refused("the scheme must be https (or http to an allowed network), not %q", r.URL.Scheme)
	}
	if r.URL.User != nil {
		if r.Body != nil {
			_ = r.Body.Close()
		}
		return nil, refused("the URL must not carry user information")
	}
	return t.next.RoundTrip(r)
}

// AtOrigin adds h (credentials: a bearer token, an API key, a server's
// partition header) to req when req's URL is at origin home (Origin), and
// nothing when it is anywhere else: what a user gave for one server never
// goes to a URL another server's answer named.
func AtOrigin(req *http.Request, home string, h http.Header) {
	if home == "" || Origin(req.URL.String()) != home {
		return
	}
	for k, vs := range h {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
}

// Origin is the origin of an absolute http(s) URL, scheme://host:port
// with the port made explicit (https://a and https://a:443 are one
// origin) and scheme and host in lower case; "" when u is not one. A
// credential meant for one server goes only to URLs of its origin.
func Origin(u string) string {
	p, err := url.Parse(u)
	if err != nil || p.Host == "" || p.Hostname() == "" {
		return ""
	}
	scheme := strings.ToLower(p.Scheme)
	port := p.Port()
	switch {
	case port != "":
	case scheme == "https":
		port = "443"
	case scheme == "http":
		port = "80"
	default:
		return ""
	}
	return scheme + "://" + net.JoinHostPort(strings.ToLower(p.Hostname()), port)
}
