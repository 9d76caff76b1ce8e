// Package rfc2136 adds and deletes DNS records with RFC 2136 dynamic
// updates signed with a TSIG key (RFC 8945), the standard protocol that
// BIND, Knot, PowerDNS and many managed DNS services accept. Its Provider
// is a libdns provider (RecordAppender and RecordDeleter), which is what
// an ACME DNS-01 solver (certmagic's DNS01Solver, so Caddy's `dns`
// challenge) needs to publish and remove _acme-challenge TXT records.
//
// Updates go over TCP to the zone's primary server, one message per call,
// so the records of one call are applied together or not at all (RFC 2136
// section 3.4: an update is atomic). Every message is signed, and every
// answer's signature is verified.
package rfc2136

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/libdns/libdns"
	"github.com/miekg/dns"
)

// DefaultTimeout bounds one exchange with the server (connect, send,
// answer) when Provider.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// DefaultAlgorithm is the TSIG algorithm when Provider.KeyAlgorithm is
// empty.
const DefaultAlgorithm = "hmac-sha256"

// fudge is the TSIG time window (RFC 8945 section 5.2.3): the server and
// this host's clocks may differ by this much.
const fudge = 300

// ErrConfig reports a Provider that cannot work as configured.
var ErrConfig = errors.New("rfc2136: invalid configuration")

// ErrUpdate reports an update or query the server refused or failed.
var ErrUpdate = errors.New("rfc2136: the DNS server did not apply the change")

// Provider changes the records of zones on one primary server.
type Provider struct {
	// The primary server that accepts the updates: host or host:port (port
	// 53 when none is given).
	Server string

	// The TSIG key's name, as the server knows it (e.g. "acme-update").
	KeyName string

	// The TSIG algorithm: hmac-sha256 (default), hmac-sha1, hmac-sha224,
	// hmac-sha384 or hmac-sha512.
	KeyAlgorithm string

	// The TSIG key's secret, base64 as in BIND's key statement and
	// tsig-keygen's output.
	KeySecret string

	// Bounds one exchange with the server (connect, send, answer).
	// Default: DefaultTimeout.
	Timeout time.Duration
}

// algorithms maps the accepted names (lowercase, without the final dot)
// to miekg/dns's canonical names.
var algorithms = map[string]string{
	"hmac-sha1":   dns.HmacSHA1,
	"hmac-sha224": dns.HmacSHA224,
	"hmac-sha256": dns.HmacSHA256,
	"hmac-sha384": dns.HmacSHA384,
	"hmac-sha512": dns.HmacSHA512,
}

// Validate reports what is missing or malformed in the configuration.
func (p *Provider) Validate() error {
	if p.Server == "" {
		return fmt.Errorf("%w: no server", ErrConfig)
	}
	if _, err := p.serverAddr(); err != nil {
		return err
	}
	if _, ok := dns.IsDomainName(p.KeyName); !ok || p.KeyName == "" || p.KeyName == "." {
		return fmt.Errorf("%w: key name %q is not a domain name", ErrConfig, p.KeyName)
	}
	if _, err := p.algorithm(); err != nil {
		return err
	}
	secret, err := base64.StdEncoding.DecodeString(p.KeySecret)
	if err != nil || len(secret) == 0 {
		return fmt.Errorf("%w: the key secret is not base64 (tsig-keygen prints it)", ErrConfig)
	}
	if p.Timeout < 0 {
		return fmt.Errorf("%w: negative timeout", ErrConfig)
	}
	return nil
}

// serverAddr is Server with port 53 added when it has none.
func (p *Provider) serverAddr() (string, error) {
	if host, port, err := net.SplitHostPort(p.Server); err == nil {
		if host == "" || port == "" {
			return "", fmt.Errorf("%w: server %q lacks a host or a port", ErrConfig, p.Server)
		}
		return p.Server, nil
	}
	host := strings.TrimSuffix(strings.TrimPrefix(p.Server, "["), "]")
	if strings.ContainsAny(host, "/ ") {
		return "", fmt.Errorf("%w: server %q is not a host or host:port", ErrConfig, p.Server)
	}
	return net.JoinHostPort(host, "53"), nil
}

func (p *Provider) algorithm() (string, error) {
	name := strings.TrimSuffix(strings.ToLower(p.KeyAlgorithm), ".")
	if name == "" {
		name = DefaultAlgorithm
	}
	algo, ok := algorithms[name]
	if !ok {
		return "", fmt.Errorf("%w: TSIG algorithm %q (use hmac-sha256, hmac-sha1, hmac-sha224, hmac-sha384 or hmac-sha512)", ErrConfig, p.KeyAlgorithm)
	}
	return algo, nil
}

// keyName is the key's name in canonical form (lowercase, fully qualified),
// which TSIG signs and miekg/dns looks secrets up by.
func (p *Provider) keyName() string { return dns.CanonicalName(p.KeyName) }

func (p *Provider) timeout() time.Duration {
	if p.Timeout > 0 {
		return p.Timeout
	}
	return DefaultTimeout
}

// AppendRecords adds recs to zone in one update and returns them as
// libdns's typed records. Existing records are left alone; adding a record
// that exists already changes nothing (RFC 2136 section 3.4.2.2).
func (p *Provider) AppendRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	zone = dns.CanonicalName(zone)
	rrs := make([]dns.RR, 0, len(recs))
	out := make([]libdns.Record, 0, len(recs))
	for _, rec := range recs {
		rr, err := toDNS(rec.RR(), zone)
		if err != nil {
			return nil, err
		}
		typed, err := fromDNS(rr, zone)
		if err != nil {
			return nil, err
		}
		rrs = append(rrs, rr)
		out = append(out, typed)
	}
	if len(rrs) == 0 {
		return out, nil
	}
	m := new(dns.Msg)
	m.SetUpdate(zone)
	m.Insert(rrs)
	if err := p.update(ctx, zone, m); err != nil {
		return nil, err
	}
	return out, nil
}

// DeleteRecords removes from zone, in one update, every record that
// matches one of recs and returns those it removed. A record matches when
// its name is the same and so are its type, TTL and data where recs give
// them (an empty type or data, or a zero TTL, matches any). The records
// are looked up on the server itself first, so only what exists is
// reported; records that do not exist are ignored.
func (p *Provider) DeleteRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	zone = dns.CanonicalName(zone)
	var remove []dns.RR
	var out []libdns.Record
	for _, rec := range recs {
		found, err := p.matching(ctx, zone, rec.RR())
		if err != nil {
			return nil, err
		}
		for _, rr := range found {
			if slicesContainDuplicate(remove, rr) {
				continue
			}
			typed, err := fromDNS(rr, zone)
			if err != nil {
				return nil, err
			}
			remove = append(remove, rr)
			out = append(out, typed)
		}
	}
	if len(remove) == 0 {
		return nil, nil
	}
	m := new(dns.Msg)
	m.SetUpdate(zone)
	m.Remove(copyRRs(remove))
	if err := p.update(ctx, zone, m); err != nil {
		return nil, err
	}
	return out, nil
}

// matching asks the server for the records of want's name (and type, when
// given) and returns those that match want.
func (p *Provider) matching(ctx context.Context, zone string, want libdns.RR) ([]dns.RR, error) {
	name, err := absoluteName(want.Name, zone)
	if err != nil {
		return nil, err
	}
	qtype := dns.TypeANY
	var wantRR dns.RR
	if want.Type != "" {
		t, ok := dns.StringToType[strings.ToUpper(want.Type)]
		if !ok {
			return nil, fmt.Errorf("%w: unknown record type %q", ErrConfig, want.Type)
		}
		qtype = t
		if want.Data != "" {
			if wantRR, err = toDNS(want, zone); err != nil {
				return nil, err
			}
		}
	}
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.RecursionDesired = false
	r, err := p.exchange(ctx, m)
	if err != nil {
		return nil, err
	}
	if r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError {
		return nil, fmt.Errorf("%w: %s answered %s to the query for %s %s", ErrUpdate, p.Server, dns.RcodeToString[r.Rcode], name, dns.TypeToString[qtype])
	}
	var found []dns.RR
	for _, rr := range r.Answer {
		h := rr.Header()
		if !strings.EqualFold(h.Name, name) || (qtype != dns.TypeANY && h.Rrtype != qtype) {
			continue
		}
		switch h.Rrtype {
		case dns.TypeRRSIG, dns.TypeNSEC, dns.TypeNSEC3, dns.TypeSOA:
			continue // DNSSEC records and the SOA are the server's, never ours to delete
		}
		if want.TTL != 0 && time.Duration(h.Ttl)*time.Second != want.TTL.Truncate(time.Second) {
			continue
		}
		if wantRR != nil && !sameData(wantRR, rr) {
			continue
		}
		found = append(found, rr)
	}
	return found, nil
}

// update sends an update message and checks the answer.
func (p *Provider) update(ctx context.Context, zone string, m *dns.Msg) error {
	r, err := p.exchange(ctx, m)
	if err != nil {
		return err
	}
	if r.Rcode == dns.RcodeSuccess {
		return nil
	}
	var hint string
	switch r.Rcode {
	case dns.RcodeRefused:
		hint = ": the key may not change these names (see the zone's update-policy or allow-update)"
	case dns.RcodeNotAuth:
		hint = ": the server is not the zone's primary, or it does not accept this key (name, algorithm, secret, clock)"
	case dns.RcodeNotZone:
		hint = ": a name is outside the zone"
	}
	return fmt.Errorf("%w: %s answered %s to the update of zone %s%s", ErrUpdate, p.Server, dns.RcodeToString[r.Rcode], zone, hint)
}

// exchange signs m with the key, sends it over TCP and returns the
// answer, whose signature miekg/dns verifies.
func (p *Provider) exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
	addr, err := p.serverAddr()
	if err != nil {
		return nil, err
	}
	algo, err := p.algorithm()
	if err != nil {
		return nil, err
	}
	key := p.keyName()
	m.SetTsig(key, algo, fudge, time.Now().Unix())
	c := &dns.Client{Net: "tcp", Timeout: p.timeout(), TsigSecret: map[string]string{key: p.KeySecret}}
	r, _, err := c.ExchangeContext(ctx, m, addr)
	if err != nil {
		if errors.Is(err, dns.ErrAuth) || errors.Is(err, dns.ErrSig) || errors.Is(err, dns.ErrSecret) || errors.Is(err, dns.ErrTime) {
			return nil, fmt.Errorf("%w: %s's answer does not authenticate key %s (is the key name, algorithm or secret wrong, or the clock off?): %w", ErrUpdate, p.Server, key, err)
		}
		return nil, fmt.Errorf("%w: exchanging with %s: %w", ErrUpdate, addr, err)
	}
	if t := r.IsTsig(); t != nil && t.Error != dns.RcodeSuccess {
		return nil, fmt.Errorf("%w: %s refused key %s: TSIG %s", ErrUpdate, p.Server, key, dns.RcodeToString[int(t.Error)])
	}
	return r, nil
}

// sameData reports whether two records of one name and type hold the same
// data. TXT records compare as one text (libdns's view), however the
// server split them into strings.
func sameData(want, have dns.RR) bool {
	if w, ok := want.(*dns.TXT); ok {
		h, ok := have.(*dns.TXT)
		return ok && txtText(w) == txtText(h)
	}
	return dns.IsDuplicate(want, have)
}

// slicesContainDuplicate reports whether rrs holds a record with rr's name,
// type and data.
func slicesContainDuplicate(rrs []dns.RR, rr dns.RR) bool {
	for _, have := range rrs {
		if dns.IsDuplicate(have, rr) {
			return true
		}
	}
	return false
}

// copyRRs copies each record, because dns.Msg.Remove rewrites their
// headers (class NONE, TTL 0).
func copyRRs(rrs []dns.RR) []dns.RR {
	out := make([]dns.RR, len(rrs))
	for i, rr := range rrs {
		out[i] = dns.Copy(rr)
	}
	return out
}

// Interface guards: what an ACME DNS-01 solver needs.
var (
	_ libdns.RecordAppender = (*Provider)(nil)
	_ libdns.RecordDeleter  = (*Provider)(nil)
)
