package backend

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// Defaults applied by New to empty Config fields.
const (
	DefaultFHIRPath        = "/fhir"
	DefaultPartitionHeader = "X-Request-Partition-IDs"
	DefaultTenantHeader    = "X-FHIR-TENANT-ID"
	DefaultDataStoreHeader = "X-FHIR-DSID"
)

// Config says how PFRs map onto the upstream. The zero value is header mode
// with HAPI FHIR's defaults.
type Config struct {
	// Mode is the partition mode; empty means ModeHeader.
	Mode Mode
	// FHIRPath is the path of the FHIR base, on the gateway and on the
	// upstream alike (default "/fhir"). It has no trailing slash.
	FHIRPath string
	// PartitionHeader carries the numeric partition id in header mode
	// (default "X-Request-Partition-IDs").
	PartitionHeader string
	// TenantHeader carries the partition name in tenant_header mode
	// (default "X-FHIR-TENANT-ID").
	TenantHeader string
	// DataStoreHeader carries DataStoreID in tenant_header mode (default
	// "X-FHIR-DSID"). Client-sent values are stripped in every mode.
	DataStoreHeader string
	// partitionKey is PartitionHeader in canonical form (set by New), so
	// that each request sets it without canonicalizing it again.
	partitionKey string
	// DataStoreID is sent in DataStoreHeader in tenant_header mode, only when
	// set.
	DataStoreID string
	// URLTemplate is the upstream FHIR base of one PFR in per_record_url mode,
	// e.g. "https://fhir-{record_id}.internal:8443/fhir". Placeholders:
	// {record_id}, {partition_name}, {partition_id}.
	URLTemplate string
	// UpstreamURLs are further absolute FHIR base URLs the upstream may write
	// into bodies and headers (e.g. "http://hapi:8080/fhir" when the proxy
	// sends the upstream's own Host). They take the same placeholders as
	// URLTemplate. In url_prefix mode the partition name is appended.
	UpstreamURLs []string
	// StripHeaders names further client headers to strip from every request.
	StripHeaders []string
}

// Backend applies a validated Config. It is safe for concurrent use.
type Backend struct {
	cfg  Config
	mode partitioner
	// strip holds the normalized names (see normalizeHeaderName) of every
	// header removed from client requests; stripLens their lengths, which
	// normalizing keeps: a header of another length is not looked up.
	strip     map[string]bool
	stripLens map[int]bool
}

// New validates cfg, fills in its defaults and returns the Backend.
func New(cfg Config) (*Backend, error) {
	if cfg.Mode == "" {
		cfg.Mode = ModeHeader
	}
	mode, err := lookupMode(cfg.Mode)
	if err != nil {
		return nil, err
	}
	if cfg.FHIRPath == "" {
		cfg.FHIRPath = DefaultFHIRPath
	}
	if !validFHIRPath(cfg.FHIRPath) {
		return nil, fmt.Errorf("backend: fhir path %q must look like /fhir: segments of letters, digits, '.', '_', '~', '-', no trailing slash", cfg.FHIRPath)
	}
	for _, h := range []struct {
		field *string
		def   string
	}{
		{&cfg.PartitionHeader, DefaultPartitionHeader},
		{&cfg.TenantHeader, DefaultTenantHeader},
		{&cfg.DataStoreHeader, DefaultDataStoreHeader},
	} {
		if *h.field == "" {
			*h.field = h.def
		}
		if !validToken(*h.field) {
			return nil, fmt.Errorf("backend: header name %q is not a valid HTTP token", *h.field)
		}
	}
	for _, name := range cfg.StripHeaders {
		if !validToken(name) {
			return nil, fmt.Errorf("backend: strip header %q is not a valid HTTP token", name)
		}
	}
	if cfg.DataStoreID != "" && !validName(cfg.DataStoreID) {
		return nil, fmt.Errorf("backend: data store id %q must be letters, digits, '_' or '-'", cfg.DataStoreID)
	}
	if err := mode.validate(&cfg); err != nil {
		return nil, err
	}
	if cfg.URLTemplate != "" {
		if _, err := parseBaseTemplate(cfg.URLTemplate, sampleTarget); err != nil {
			return nil, fmt.Errorf("backend: URL template: %w", err)
		}
	}
	for _, u := range cfg.UpstreamURLs {
		if _, err := parseBaseTemplate(u, sampleTarget); err != nil {
			return nil, fmt.Errorf("backend: upstream URL: %w", err)
		}
	}
	cfg.partitionKey = http.CanonicalHeaderKey(cfg.PartitionHeader)
	cfg.UpstreamURLs = append([]string(nil), cfg.UpstreamURLs...)
	cfg.StripHeaders = append([]string(nil), cfg.StripHeaders...)

	strip := map[string]bool{}
	for _, name := range append([]string{
		DefaultPartitionHeader, DefaultTenantHeader, DefaultDataStoreHeader,
		cfg.PartitionHeader, cfg.TenantHeader, cfg.DataStoreHeader,
		"Accept-Encoding",
	}, cfg.StripHeaders...) {
		strip[normalizeHeaderName(name)] = true
	}
	stripLens := map[int]bool{}
	for name := range strip {
		stripLens[len(name)] = true
	}
	return &Backend{cfg: cfg, mode: mode, strip: strip, stripLens: stripLens}, nil
}

// Config returns the configuration in effect, defaults filled in.
func (b *Backend) Config() Config { return b.cfg }

// sampleTarget expands templates while validating them.
var sampleTarget = Target{RecordID: "r1", PartitionID: 1, PartitionName: "p1"}

// parseBaseTemplate expands tmpl for t and checks that the result is an
// absolute http(s) base URL without user info, query or fragment. The
// returned URL has no trailing slash.
func parseBaseTemplate(tmpl string, t Target) (*url.URL, error) {
	if err := checkPlaceholders(tmpl); err != nil {
		return nil, err
	}
	u, err := url.Parse(expandTemplate(tmpl, t))
	if err != nil {
		return nil, fmt.Errorf("%q: %w", tmpl, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("%q: scheme must be http or https", tmpl)
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("%q: no host", tmpl)
	}
	if u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.Opaque != "" {
		return nil, fmt.Errorf("%q: must not have user info, query or fragment", tmpl)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = strings.TrimRight(u.RawPath, "/")
	return u, nil
}

// checkPlaceholders refuses unknown or unbalanced {placeholders}.
func checkPlaceholders(tmpl string) error {
	rest := tmpl
	for {
		open := strings.IndexAny(rest, "{}")
		if open < 0 {
			return nil
		}
		if rest[open] == '}' {
			return fmt.Errorf("%q: unbalanced '}'", tmpl)
		}
		end := strings.IndexByte(rest[open:], '}')
		if end < 0 {
			return fmt.Errorf("%q: unbalanced '{'", tmpl)
		}
		switch name := rest[open+1 : open+end]; name {
		case "record_id", "partition_name", "partition_id":
		default:
			return fmt.Errorf("%q: unknown placeholder {%s} (want {record_id}, {partition_name} or {partition_id})", tmpl, name)
		}
		rest = rest[open+end+1:]
	}
}

// expandTemplate replaces the placeholders of tmpl with t's values. The
// values are validated names (letters, digits, '_', '-'), safe in a host
// and in a path.
func expandTemplate(tmpl string, t Target) string {
	return strings.NewReplacer(
		"{record_id}", t.RecordID,
		"{partition_name}", t.PartitionName,
		"{partition_id}", fmt.Sprint(t.PartitionID),
	).Replace(tmpl)
}

// validFHIRPath accepts "/seg" or "/seg/seg…" with unreserved characters
// only, so that it is its own escaped form and cannot hide a dot segment.
func validFHIRPath(p string) bool {
	if len(p) < 2 || p[0] != '/' || p[len(p)-1] == '/' {
		return false
	}
	for _, seg := range strings.Split(p[1:], "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
		for i := 0; i < len(seg); i++ {
			if c := seg[i]; !isAlnum(c) && c != '.' && c != '_' && c != '~' && c != '-' {
				return false
			}
		}
	}
	return true
}

// validName accepts what HAPI FHIR accepts as a partition name
// ([a-zA-Z0-9_-]+), bounded in length; record ids, tenant ids and data store
// ids must fit it too because they end up in URLs, hosts and headers.
func validName(s string) bool {
	if s == "" || len(s) > maxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// maxNameLen bounds record ids and partition names.
const maxNameLen = 128

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// validToken reports whether s is an RFC 9110 token (a valid header name).
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isAlnum(c) || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}
