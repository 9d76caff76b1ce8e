package backend

import (
	"bytes"
	"io"
	"net"
	"net/url"
	"slices"
	"sort"
	"strings"
)

// replacer replaces upstream FHIR base URLs by the public one. A base is
// replaced only at a boundary: when the byte after it cannot continue a
// path segment (so "/fhir" matches in "/fhir/Patient", "/fhir?x" and
// "/fhir\"" but not in "/fhir2"). At one position the longest base wins.
type replacer struct {
	patterns []pattern // longest first
	maxLen   int       // longest pattern
	// hostFirst marks the bytes a pattern's host starts with (the byte
	// after its "://" or ":\/\/"): a candidate whose host starts with
	// another (a code system's http://loinc.org in a resource) is passed
	// over without comparing it to every pattern.
	hostFirst [256]bool
	// hosts are the hosts the patterns name, each once, spelt as in them
	// (the bytes after a pattern's "://" or ":\/\/" up to its port or
	// path). A base starts only where one of them follows a scheme, so
	// rewrite finds candidates by looking for the hosts (bytes.Index, and
	// a FHIR body names the upstream's host far more rarely than it starts
	// a URL with "http": every coding's system does) and then for the
	// scheme just before them.
	hosts []host
}

// host is one host of a replacer's patterns, and where in it rewrite
// starts looking: at its rarest byte, by byteOrder (bytes.Index calls
// IndexByte for the first byte of what it looks for, and stops at every
// occurrence of it).
type host struct {
	name []byte
	from int
}

// byteOrder lists the printable ASCII bytes from the most to the least
// frequent in FHIR JSON (counted over the 18.9 MB of the project's shared
// FHIR test data: Synthea, vendors' documents, the specification's
// examples); bytes not in it are rarer still.
const byteOrder = ` "eti:raonsculd,/-h0fpym9b12g{}374.58v6S[]ATPxCIDORENUL<>MzBHGwqWVk\+_j=YF|XZQ)(KJ;@&#?'*%~!$` + "`"

// rarestByte returns the index of the byte of name that comes last in
// byteOrder (the first such byte).
func rarestByte(name []byte) int {
	best, rank := 0, -1
	for i, c := range name {
		r := strings.IndexByte(byteOrder, c)
		if r < 0 {
			r = len(byteOrder)
		}
		if r > rank {
			best, rank = i, r
		}
	}
	return best
}

// maxFoundHosts bounds the hosts rewrite looks for at once (the usual
// route has one or two); a replacer with more finds candidates by
// "http" alone.
const maxFoundHosts = 8

type pattern struct {
	from, to []byte
}

// candidatePrefix starts every pattern: all bases are http(s) URLs.
var candidatePrefix = []byte("http")

// newReplacer builds the patterns for bases (absolute http(s) base URLs) and
// the public base: each base in both schemes, with and without its default
// port, with its host as given and lower-cased, and each in JSON's
// escaped-slash form ("http:\/\/…"). It returns nil when there is nothing to
// replace.
func newReplacer(bases []string, publicBase string) *replacer {
	publicBase = strings.TrimRight(publicBase, "/")
	seen := map[string]bool{}
	rp := &replacer{}
	add := func(from, to string) {
		if from == to || seen[from] {
			return
		}
		seen[from] = true
		rp.patterns = append(rp.patterns, pattern{from: []byte(from), to: []byte(to)})
		rp.maxLen = max(rp.maxLen, len(from))
	}
	for _, base := range bases {
		for _, v := range baseVariants(base) {
			add(v, publicBase)
			add(escapeSlashes(v), escapeSlashes(publicBase))
		}
	}
	if len(rp.patterns) == 0 {
		return nil
	}
	for _, p := range rp.patterns {
		if i := hostStart(p.from); i < len(p.from) {
			rp.hostFirst[p.from[i]] = true
			name := p.from[i : i+hostLen(p.from[i:])]
			if !slices.ContainsFunc(rp.hosts, func(h host) bool { return bytes.Equal(h.name, name) }) {
				rp.hosts = append(rp.hosts, host{name: name, from: rarestByte(name)})
			}
		}
	}
	sort.SliceStable(rp.patterns, func(i, j int) bool {
		return len(rp.patterns[i].from) > len(rp.patterns[j].from)
	})
	return rp
}

// baseVariants spells one base URL every way an upstream might write it.
func baseVariants(base string) []string {
	u, err := url.Parse(strings.TrimRight(base, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return nil
	}
	path := u.EscapedPath()
	port := u.Port()
	hosts := []string{u.Hostname()}
	if lower := strings.ToLower(u.Hostname()); lower != hosts[0] {
		hosts = append(hosts, lower)
	}
	var out []string
	for _, host := range hosts {
		for _, scheme := range []string{"http", "https"} {
			if port != "" {
				out = append(out, scheme+"://"+joinHostPort(host, port)+path)
			}
			if port == "" || port == defaultPort(u.Scheme) {
				out = append(out,
					scheme+"://"+joinHostPort(host, "")+path,
					scheme+"://"+joinHostPort(host, defaultPort(scheme))+path)
			}
		}
	}
	return out
}

func defaultPort(scheme string) string {
	if scheme == "https" {
		return "443"
	}
	return "80"
}

// joinHostPort brackets IPv6 literals; an empty port gives the bare host.
func joinHostPort(host, port string) string {
	if port == "" {
		if strings.Contains(host, ":") {
			return "[" + host + "]"
		}
		return host
	}
	return net.JoinHostPort(host, port)
}

// escapeSlashes gives the form of s inside a JSON string written by an
// encoder that escapes '/'.
func escapeSlashes(s string) string { return strings.ReplaceAll(s, "/", `\/`) }

// isPathChar reports whether c can continue a URL path segment (RFC 3986
// pchar, plus '%'): a base followed by such a byte is not a base.
func isPathChar(c byte) bool {
	return isAlnum(c) || strings.IndexByte("-._~!$&'()*+,;=:@%", c) >= 0
}

// matchState is the verdict on a candidate position.
type matchState int

const (
	noMatch  matchState = iota
	matched             // pattern k matches here
	needMore            // a pattern may match, but more input is needed to know
)

// hostStart returns where the host of u, an http(s) URL spelt plainly or
// with JSON's escaped slashes, starts; len(u) when u is too short to say,
// or is no such URL.
func hostStart(u []byte) int {
	i := len(candidatePrefix)
	if i < len(u) && u[i] == 's' {
		i++
	}
	switch rest := u[min(i, len(u)):]; {
	case bytes.HasPrefix(rest, []byte("://")):
		return i + 3
	case bytes.HasPrefix(rest, []byte(`:\/\/`)):
		return i + 5
	}
	return len(u)
}

// hostLen returns the length of the host that u starts with: up to its
// port or path ("[…]" whole for an IPv6 literal).
func hostLen(u []byte) int {
	if len(u) > 0 && u[0] == '[' {
		if end := bytes.IndexByte(u, ']'); end >= 0 {
			return end + 1
		}
		return len(u)
	}
	if end := bytes.IndexAny(u, `:/\`); end >= 0 {
		return end
	}
	return len(u)
}

// The schemes that can come before a pattern's host: "http://",
// "https://" and their escaped forms; the longest is 10 bytes.
const minScheme, maxScheme = len("http://"), len(`https:\/\/`)

// schemeBefore returns where the scheme ending at buf[at] starts (the
// schemes exclude each other), or -1.
func schemeBefore(buf []byte, at int) int {
	if at < minScheme || buf[at-1] != '/' {
		return -1
	}
	if buf[at-2] == '/' {
		switch {
		case string(buf[at-7:at]) == "http://":
			return at - 7
		case at >= 8 && string(buf[at-8:at]) == "https://":
			return at - 8
		}
		return -1
	}
	switch {
	case at >= 9 && string(buf[at-9:at]) == `http:\/\/`:
		return at - 9
	case at >= 10 && string(buf[at-10:at]) == `https:\/\/`:
		return at - 10
	}
	return -1
}

// hostCandidate returns the start of the first candidate in buf[i:end)
// whose host is rp.hosts[k], or -1. A candidate starting before end must
// lie whole inside buf (end ≤ len(buf) - maxLen) so that its host is
// found. Candidates come in the order of their hosts: two hosts preceded
// by schemes cannot overlap, since no host starts with '/' or '\\'.
func (rp *replacer) hostCandidate(buf []byte, k, i, end int) int {
	h := rp.hosts[k]
	part := h.name[h.from:] // looked for; the host starts h.from bytes before it
	stop := min(len(buf), end+maxScheme+len(h.name))
	for from := i + minScheme + h.from; from < stop; {
		j := bytes.Index(buf[from:stop], part)
		if j < 0 {
			return -1
		}
		at := from + j - h.from
		if bytes.HasPrefix(buf[at:], h.name) {
			if c := schemeBefore(buf, at); c >= i {
				if c < end {
					return c
				}
				return -1
			}
		}
		from += j + 1
	}
	return -1
}

// matchAt judges buf, which starts at a candidate position. atEOF says that
// no byte follows buf.
func (rp *replacer) matchAt(buf []byte, atEOF bool) (int, matchState) {
	if i := hostStart(buf); i < len(buf) && !rp.hostFirst[buf[i]] {
		return -1, noMatch
	}
	for k, p := range rp.patterns {
		n := len(p.from)
		if len(buf) > n {
			if bytes.HasPrefix(buf, p.from) && !isPathChar(buf[n]) {
				return k, matched
			}
			continue
		}
		if bytes.HasPrefix(p.from, buf) {
			if !atEOF {
				return -1, needMore
			}
			if len(buf) == n {
				return k, matched
			}
		}
	}
	return -1, noMatch
}

// rewrite scans buf, writing literal spans and replacements to out, for
// candidates starting before limit. It returns the number of bytes of buf
// it consumed (at least limit unless it stopped at an undecided candidate,
// whose bytes are left for the caller to carry) and how many replacements
// it made. When limit < len(buf), every candidate before limit must have
// more than maxLen bytes after it, so none is undecided.
func (rp *replacer) rewrite(buf []byte, limit int, atEOF bool, out io.Writer) (consumed, replaced int, err error) {
	// Candidates starting before whole are wholly inside buf: they are
	// found by their hosts (next[k]: the first candidate of host k at or
	// after where it was last looked for, -1 if none before whole, -2 not
	// looked for yet). Those after it, which may be cut off by the end of
	// buf, by "http" and matchAt's needMore.
	whole := limit
	if !atEOF {
		whole = min(limit, len(buf)-rp.maxLen)
	}
	if len(rp.hosts) > maxFoundHosts {
		whole = 0
	}
	var next [maxFoundHosts]int
	for k := range rp.hosts[:min(len(rp.hosts), maxFoundHosts)] {
		next[k] = -2
	}
	i, lit := 0, 0
	for i < limit {
		pos := -1
		if i < whole {
			for k := range rp.hosts {
				if next[k] == -2 || next[k] >= 0 && next[k] < i {
					next[k] = rp.hostCandidate(buf, k, i, whole)
				}
				if next[k] >= 0 && (pos < 0 || next[k] < pos) {
					pos = next[k]
				}
			}
			if pos < 0 {
				i = whole
				continue
			}
		} else {
			j := bytes.Index(buf[i:], candidatePrefix)
			if j < 0 || i+j >= limit {
				break
			}
			pos = i + j
		}
		k, state := rp.matchAt(buf[pos:], atEOF)
		switch state {
		case noMatch:
			i = pos + 1
			continue
		case needMore:
			return pos, replaced, emitSpan(out, buf[lit:pos])
		}
		if err := emitSpan(out, buf[lit:pos]); err != nil {
			return pos, replaced, err
		}
		if _, err := out.Write(rp.patterns[k].to); err != nil {
			return pos, replaced, err
		}
		replaced++
		i = pos + len(rp.patterns[k].from)
		lit = i
	}
	end := max(lit, limit)
	if end == len(buf) && !atEOF {
		// A partial "http" at the very end may start a base.
		end -= partialTail(buf[lit:])
	}
	return end, replaced, emitSpan(out, buf[lit:end])
}

// partialTail returns the length of the longest proper prefix of
// candidatePrefix that buf ends with.
func partialTail(buf []byte) int {
	for t := min(len(candidatePrefix)-1, len(buf)); t > 0; t-- {
		if bytes.Equal(buf[len(buf)-t:], candidatePrefix[:t]) {
			return t
		}
	}
	return 0
}

func emitSpan(out io.Writer, span []byte) error {
	if len(span) == 0 {
		return nil
	}
	_, err := out.Write(span)
	return err
}

// replaceString rewrites a whole value (a header), reporting whether it
// changed.
func (rp *replacer) replaceString(s string) (string, bool) {
	if rp == nil || !strings.Contains(s, "http") {
		return s, false
	}
	var out bytes.Buffer
	_, n, _ := rp.rewrite([]byte(s), len(s), true, &out)
	return out.String(), n > 0
}
