package rfc2136

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/libdns/libdns"
	"github.com/miekg/dns"
)

// maxTXTString is the longest character-string a TXT record holds
// (RFC 1035 section 3.3); longer texts are split into several.
const maxTXTString = 255

// absoluteName turns a libdns name (relative to zone, "@" for the apex)
// into a fully qualified name inside zone.
func absoluteName(name, zone string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("%w: a record without a name (use \"@\" for the zone's apex)", ErrConfig)
	}
	abs := dns.CanonicalName(libdns.AbsoluteName(name, zone))
	if _, ok := dns.IsDomainName(abs); !ok {
		return "", fmt.Errorf("%w: %q is not a domain name", ErrConfig, name)
	}
	if !dns.IsSubDomain(zone, abs) {
		return "", fmt.Errorf("%w: %s is outside zone %s", ErrConfig, abs, zone)
	}
	return abs, nil
}

// toDNS converts a libdns record into a miekg/dns one in zone. TXT data is
// raw text (libdns's convention), split into 255-byte strings; every other
// type's data is zone-file RDATA.
func toDNS(rec libdns.RR, zone string) (dns.RR, error) {
	name, err := absoluteName(rec.Name, zone)
	if err != nil {
		return nil, err
	}
	typ := strings.ToUpper(rec.Type)
	rrtype, ok := dns.StringToType[typ]
	if !ok || typ == "" {
		return nil, fmt.Errorf("%w: unknown record type %q for %s", ErrConfig, rec.Type, name)
	}
	if rec.TTL < 0 || rec.TTL > time.Duration(1<<31-1)*time.Second {
		return nil, fmt.Errorf("%w: TTL %s for %s is out of range", ErrConfig, rec.TTL, name)
	}
	ttl := uint32(rec.TTL / time.Second)
	if rrtype == dns.TypeTXT {
		return &dns.TXT{
			Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: ttl},
			Txt: splitTXT(rec.Data),
		}, nil
	}
	if strings.TrimSpace(rec.Data) == "" {
		return nil, fmt.Errorf("%w: %s record %s without data", ErrConfig, typ, name)
	}
	if strings.ContainsAny(rec.Data, "\n\r;") {
		return nil, fmt.Errorf("%w: %s record %s: data %q holds a line break or a comment", ErrConfig, typ, name, rec.Data)
	}
	rr, err := dns.NewRR(fmt.Sprintf("%s %d IN %s %s", name, ttl, typ, rec.Data))
	if err != nil || rr == nil {
		return nil, fmt.Errorf("%w: %s record %s: data %q: %v", ErrConfig, typ, name, rec.Data, err)
	}
	if rr.Header().Rrtype != rrtype || !strings.EqualFold(rr.Header().Name, name) {
		return nil, fmt.Errorf("%w: %s record %s: data %q does not parse as one", ErrConfig, typ, name, rec.Data)
	}
	return rr, nil
}

// fromDNS converts a miekg/dns record of zone into libdns's typed record
// (libdns.TXT, libdns.Address, …; libdns.RR for types libdns has no
// struct for).
func fromDNS(rr dns.RR, zone string) (libdns.Record, error) {
	h := rr.Header()
	out := libdns.RR{
		Name: libdns.RelativeName(dns.CanonicalName(h.Name), zone),
		TTL:  time.Duration(h.Ttl) * time.Second,
		Type: dns.TypeToString[h.Rrtype],
	}
	if txt, ok := rr.(*dns.TXT); ok {
		out.Data = txtText(txt)
	} else {
		out.Data = strings.TrimPrefix(rr.String(), h.String())
	}
	typed, err := out.Parse()
	if err != nil {
		return nil, fmt.Errorf("rfc2136: %s record %s: %w", out.Type, h.Name, err)
	}
	return typed, nil
}

// txtText is a TXT record's strings joined into one raw text.
func txtText(txt *dns.TXT) string {
	var text strings.Builder
	for _, s := range txt.Txt {
		text.WriteString(unescapeTXT(s))
	}
	return text.String()
}

// splitTXT splits raw text into character-strings of at most 255 bytes,
// each in the escaped form miekg/dns keeps TXT strings in. Empty text is
// one empty string.
func splitTXT(text string) []string {
	var out []string
	for len(text) > maxTXTString {
		out = append(out, escapeTXT(text[:maxTXTString]))
		text = text[maxTXTString:]
	}
	return append(out, escapeTXT(text))
}

// escapeTXT writes raw bytes in miekg/dns's TXT string form: a backslash
// before '"' and '\', and \DDD for bytes that are not printable ASCII.
func escapeTXT(raw string) string {
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < ' ' || c > '~':
			fmt.Fprintf(&b, "\\%03d", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// unescapeTXT undoes the escaping miekg/dns applies to TXT strings it
// reads (\DDD and \c).
func unescapeTXT(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		if i+3 < len(s) && isDigits(s[i+1:i+4]) {
			if n, err := strconv.Atoi(s[i+1 : i+4]); err == nil && n < 256 {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i+1])
		i++
	}
	return b.String()
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
