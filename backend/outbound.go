package backend

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/pfrgateway/caddy-pfr/fhir"
)

// Target is the PFR a request is for. Every field comes from the PFR's
// record, never from the client; the partition name is derived from the
// immutable record id, never from the slug.
type Target struct {
	// RecordID is the record's immutable id (letters, digits, '_', '-').
	RecordID string
	// PartitionID is the numeric partition id (header mode; 1 … 2^31-1,
	// the range of HAPI FHIR's Integer partition ids).
	PartitionID int64
	// PartitionName is the partition (url_prefix) or tenant (tenant_header)
	// name: letters, digits, '_', '-', never HAPI's DEFAULT or _ALL.
	PartitionName string
}

// Route is where Outbound sent a request and what the upstream may call
// itself in the response.
type Route struct {
	// Upstream is the PFR's own upstream FHIR base URL in per_record_url
	// mode (r.URL and r.Host already point there); nil in the other modes,
	// where the caller's configured upstream is used.
	Upstream *url.URL
	// UpstreamBases are the absolute FHIR base URLs the upstream may write
	// into the response for this PFR. Pass them to NewResponseRewriter.
	UpstreamBases []string
}

// DialAddress returns the host:port of Route.Upstream, with the scheme's
// default port filled in, or "" when there is no per-record upstream.
func (rt *Route) DialAddress() string {
	if rt == nil || rt.Upstream == nil {
		return ""
	}
	port := rt.Upstream.Port()
	if port == "" {
		port = defaultPort(rt.Upstream.Scheme)
	}
	return joinHostPort(rt.Upstream.Hostname(), port)
}

// Outbound rewrites r in place for the PFR t and returns its Route.
//
// It removes every client-sent partition and tenant header
// (X-Request-Partition-IDs, X-FHIR-TENANT-ID, X-FHIR-DSID, the configured
// names and Config.StripHeaders, in any letter case, with '_' for '-', every
// repeated value, from the header and the declared trailers) and
// Accept-Encoding, then, by mode:
//
//   - header: sets PartitionHeader to t.PartitionID;
//   - url_prefix: inserts t.PartitionName after FHIRPath in the path
//     (RawPath kept consistent, query untouched);
//   - tenant_header: sets TenantHeader to t.PartitionName, and
//     DataStoreHeader to DataStoreID when configured;
//   - per_record_url: points r.URL (scheme, host, path) and r.Host at the
//     PFR's expanded URLTemplate
//
// (each mode's file, mode_*.go, says it in code).
//
// The request path must be FHIRPath or below it, without dot segments,
// empty segments, encoded slashes or backslashes, or ';' (which some
// servlet containers treat as path parameters): such a path could escape the
// partition prefix upstream. Those requests get a *fhir.Error (400 or 404)
// and r is left unchanged; an invalid Target is a 500 (a bug in the caller).
func (b *Backend) Outbound(r *http.Request, t Target) (*Route, error) {
	if err := b.checkTarget(t); err != nil {
		return nil, fhir.Errorf(http.StatusInternalServerError, fhir.CodeException,
			"internal server error").WithCause(err)
	}
	rest, escRest, err := b.splitPath(r.URL)
	if err != nil {
		return nil, err
	}
	up, err := b.mode.upstream(&b.cfg, t)
	if err != nil {
		return nil, fhir.Errorf(http.StatusInternalServerError, fhir.CodeException,
			"internal server error").WithCause(err)
	}
	route := &Route{Upstream: up}

	b.stripClientHeaders(r.Header)
	// A declared trailer would be copied to the upstream request and
	// filled after the body: strip it too.
	b.stripClientHeaders(r.Trailer)
	b.mode.apply(&b.cfg, r, t, up, rest, escRest)
	route.UpstreamBases = b.upstreamBases(r, t, route.Upstream)
	return route, nil
}

// checkTarget validates the fields of t that the mode uses.
func (b *Backend) checkTarget(t Target) error {
	if err := b.mode.checkTarget(&b.cfg, t); err != nil {
		return err
	}
	// Every value a template uses must be safe in a host and a path.
	templates := append([]string{b.cfg.URLTemplate}, b.cfg.UpstreamURLs...)
	for _, tmpl := range templates {
		if strings.Contains(tmpl, "{record_id}") && !validName(t.RecordID) {
			return fmt.Errorf("backend: record id %q must be 1…%d letters, digits, '_' or '-'", t.RecordID, maxNameLen)
		}
		if strings.Contains(tmpl, "{partition_name}") && !validName(t.PartitionName) {
			return fmt.Errorf("backend: partition name %q must be 1…%d letters, digits, '_' or '-'", t.PartitionName, maxNameLen)
		}
		if strings.Contains(tmpl, "{partition_id}") && t.PartitionID < 1 {
			return fmt.Errorf("backend: partition id %d must be positive", t.PartitionID)
		}
	}
	return nil
}

// checkPartitionName refuses names HAPI FHIR would refuse or treat
// specially (DEFAULT, _ALL).
func checkPartitionName(name string) error {
	if !validName(name) {
		return fmt.Errorf("backend: partition name %q must be 1…%d letters, digits, '_' or '-'", name, maxNameLen)
	}
	if strings.EqualFold(name, "DEFAULT") || strings.EqualFold(name, "_ALL") {
		return fmt.Errorf("backend: partition name %q is reserved by the upstream", name)
	}
	return nil
}

// splitPath returns the part of the path below FHIRPath, decoded and
// escaped ("" or starting with '/'), refusing paths that could be read
// differently upstream.
func (b *Backend) splitPath(u *url.URL) (rest, escRest string, err error) {
	base := b.cfg.FHIRPath
	escaped := u.EscapedPath()
	if !hasPathPrefix(u.Path, base) || !hasPathPrefix(escaped, base) {
		return "", "", fhir.Errorf(http.StatusNotFound, fhir.CodeNotFound,
			"not a FHIR path: %q is not below %s", u.Path, base)
	}
	rest, escRest = u.Path[len(base):], escaped[len(base):]
	lower := strings.ToLower(escRest)
	if strings.ContainsAny(rest, `\;`) || strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c") {
		return "", "", fhir.Errorf(http.StatusBadRequest, fhir.CodeInvalid,
			"path %q contains an encoded slash, a backslash or ';'", escaped)
	}
	if rest != "" {
		segs := strings.Split(rest[1:], "/")
		for i, seg := range segs {
			last := i == len(segs)-1
			if seg == "." || seg == ".." || (seg == "" && !last) {
				return "", "", fhir.Errorf(http.StatusBadRequest, fhir.CodeInvalid,
					"path %q contains a dot segment or an empty segment", escaped)
			}
		}
	}
	return rest, escRest, nil
}

// hasPathPrefix reports whether p is base or below it.
func hasPathPrefix(p, base string) bool {
	return p == base || strings.HasPrefix(p, base+"/")
}

// setPath sets r's path to prefix+rest, keeping RawPath consistent and
// RequestURI in step for handlers that read it.
func setPath(r *http.Request, prefix, escPrefix, rest, escRest string) {
	r.URL.Path = prefix + rest
	r.URL.RawPath = ""
	if escaped := escPrefix + escRest; escaped != r.URL.EscapedPath() {
		r.URL.RawPath = escaped
	}
	if r.RequestURI != "" {
		r.RequestURI = r.URL.RequestURI()
	}
}

// stripClientHeaders removes every header whose normalized name is in the
// strip set. It walks the whole map because a header map built by hand (or
// by a middleware) may hold names that are not in canonical form.
func (b *Backend) stripClientHeaders(h http.Header) {
	for name := range h {
		if b.stripLens[len(name)] && b.strip[normalizeHeaderName(name)] {
			delete(h, name)
		}
	}
}

// normalizeHeaderName folds case and maps '_' to '-', because some servers
// (CGI-style, and proxies configured to) treat X_FHIR_TENANT_ID as
// X-FHIR-TENANT-ID.
func normalizeHeaderName(name string) string {
	return strings.ReplaceAll(strings.ToLower(name), "_", "-")
}

// upstreamBases lists the FHIR base URLs the upstream may use for t: the
// base it was reached at (the outbound Host, any scheme) and the configured
// UpstreamURLs; in url_prefix mode each with the partition name appended.
func (b *Backend) upstreamBases(r *http.Request, t Target, perRecord *url.URL) []string {
	var bases []string
	suffix := b.mode.baseSuffix(t)
	if perRecord != nil {
		bases = append(bases, perRecord.String())
	} else if host := r.Host; host != "" && validHost(host) {
		bases = append(bases, "http://"+host+b.cfg.FHIRPath+suffix)
	}
	for _, tmpl := range b.cfg.UpstreamURLs {
		if u, err := parseBaseTemplate(tmpl, t); err == nil {
			bases = append(bases, u.String()+suffix)
		}
	}
	return bases
}

// validHost refuses Host values that could smuggle anything but a
// host[:port] into a base URL.
func validHost(host string) bool {
	if plainHost(host) {
		return true // what url.Parse accepts as a host, as it is
	}
	u, err := url.Parse("http://" + host)
	return err == nil && u.Host == host && u.Path == "" && u.User == nil && u.Hostname() != ""
}

// plainHost reports whether host is a name of ASCII letters, digits, dots
// and hyphens with an optional port of one to five digits: the Host of
// nearly every request, checked without url.Parse.
func plainHost(host string) bool {
	name, port, hasPort := strings.Cut(host, ":")
	if name == "" || hasPort && (port == "" || len(port) > 5) {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			return false
		}
	}
	for i := 0; i < len(port); i++ {
		if port[i] < '0' || port[i] > '9' {
			return false
		}
	}
	return true
}
