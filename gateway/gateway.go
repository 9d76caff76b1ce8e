// Package gateway is the request pipeline of caddy-pfr: it maps a request's
// host to a Personal FHIR Record, authenticates and authorizes the caller,
// sends the request to the upstream FHIR server in that record's partition and
// rewrites the response back to the record's address. The apex host is
// served by the management API (package api), mounted with Mount; what that
// API needs done upstream (provisioning, deletion, pick-up) it asks of the
// pipeline (service.go, inbox.go). It knows nothing of Caddy: the Caddy
// module hands it the configured upstream handler on every request.
package gateway

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/pfrgateway/caddy-pfr/audit"
	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/authz"
	"github.com/pfrgateway/caddy-pfr/backend"
	"github.com/pfrgateway/caddy-pfr/bulk"
	"github.com/pfrgateway/caddy-pfr/dopu"
	"github.com/pfrgateway/caddy-pfr/egress"
	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/tenancy"
)

// Upstream is the handler that reaches the upstream FHIR server: Caddy's
// reverse_proxy or the embedded store, adapted by the Caddy module.
type Upstream interface {
	ServeHTTP(w http.ResponseWriter, r *http.Request) error
}

// UpstreamFunc adapts a function to Upstream.
type UpstreamFunc func(w http.ResponseWriter, r *http.Request) error

// ServeHTTP calls f.
func (f UpstreamFunc) ServeHTTP(w http.ResponseWriter, r *http.Request) error { return f(w, r) }

// Config configures a Gateway.
type Config struct {
	// BaseDomain is the apex host; records live at {slug}.{BaseDomain}.
	BaseDomain string
	// FHIRPath is where each record's FHIR API is served. Default "/fhir".
	FHIRPath string
	// UpstreamFHIRPath is the FHIR base path on the upstream. Default "/fhir".
	UpstreamFHIRPath string
	// Backend maps records onto the upstream.
	Backend *backend.Backend
	// Tenancy holds records, accounts and memberships.
	Tenancy tenancy.Store
	// Verifier checks bearer tokens.
	Verifier *auth.Verifier
	// SetUpstream is called with the per-record upstream's host:port in
	// per_record_url mode, before the request is proxied.
	SetUpstream func(r *http.Request, dialAddress string)
	// ScopesWhenAbsent are the SMART scopes a token without any resource
	// scopes is treated as having. Default: none, so such a token reaches
	// no FHIR data (the management API does not look at scopes).
	ScopesWhenAbsent []string
	// SMART configures /.well-known/smart-configuration.
	SMART SMARTConfig
	// MaxBodyBytes bounds request bodies the gateway reads (writes are
	// validated before they go upstream). Default 32 MiB.
	MaxBodyBytes int64
	// Ownership says which resources outside the Patient's compartment may
	// be written. Default: fhir.DefaultOwnershipPolicy().
	Ownership fhir.OwnershipPolicy
	// TrustUpstreamIsolation says the upstream keeps partitions apart,
	// which turns off the defenses against one that does not (the
	// isolation policy chosen in New, see isolation.go). Default false.
	TrustUpstreamIsolation bool
	// DisableResponseFilter turns off removing resources that do not belong
	// to the record from responses (defense in depth, on by default). It is
	// ignored when the upstream is not trusted.
	DisableResponseFilter bool
	// DOPU parks Bundles that callers without write access post to a
	// record, for its owners to pick up. Nil: such posts are refused.
	DOPU *dopu.Service
	// Webhooks is the destination policy of drop-off webhooks, checked
	// when one is saved (422 with the reason). Default: the zero
	// egress.Policy (public addresses over https only).
	Webhooks *egress.Policy
	// Authz is the built-in SMART authorization server, served on the apex
	// (its endpoints under /oauth/) and announced by every record's
	// /.well-known/smart-configuration. Nil: none; records announce the
	// configured external issuer instead.
	Authz *authz.Server
	// Audit keeps each record's access log. Nil: no access log.
	Audit *audit.Log
	// ClientIP returns the client's address for drop-off records and rate
	// limits (in Caddy: after trusted proxies). Default: the peer address.
	ClientIP func(r *http.Request) string
	// Logger receives security events and failures. Default: a no-op logger.
	Logger *zap.Logger
	// DataPath is the file of the gateway's own database, named in the log
	// when a write to it fails for want of disk space.
	DataPath string
	// CallTimeout bounds each of the gateway's own calls to the upstream
	// (provisioning, pick-up, the reads and searches it makes before a
	// write, metadata): past it the client gets a 504 OperationOutcome.
	// Default 60s; negative: no deadline.
	CallTimeout time.Duration
	// InboxTimeout bounds how long the drop-off inbox waits for the
	// record's Patient (for the match scores) before it answers from the
	// gateway's own state without them. Default 2s.
	InboxTimeout time.Duration
	// Bulk enables FHIR Bulk Data export on every record (export.go).
	Bulk BulkConfig
}

// Defaults of Config's timeouts.
const (
	DefaultCallTimeout  = 60 * time.Second
	DefaultInboxTimeout = 2 * time.Second
)

// Gateway serves the records of one base domain.
type Gateway struct {
	cfg  Config
	log  *zap.Logger
	iso  isolation // what the upstream's trust decides, see isolation.go
	bulk *bulk.Manager
	apex Apex // the management API, see Mount
}

// New checks cfg and returns a Gateway.
func New(cfg Config) (*Gateway, error) {
	cfg.BaseDomain = normalizeHost(cfg.BaseDomain)
	if cfg.BaseDomain == "" {
		return nil, errors.New("gateway: base_domain is required")
	}
	if cfg.FHIRPath == "" {
		cfg.FHIRPath = "/fhir"
	}
	if cfg.UpstreamFHIRPath == "" {
		cfg.UpstreamFHIRPath = "/fhir"
	}
	for _, p := range []string{cfg.FHIRPath, cfg.UpstreamFHIRPath} {
		if !strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") && p != "/" {
			return nil, fmt.Errorf("gateway: FHIR path %q must start with '/' and not end with one", p)
		}
	}
	if cfg.Backend == nil || cfg.Tenancy == nil || cfg.Verifier == nil {
		return nil, errors.New("gateway: backend, tenancy and verifier are required")
	}
	if cfg.Ownership.AllowedTypes == nil {
		cfg.Ownership = fhir.DefaultOwnershipPolicy()
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 32 << 20
	}
	if cfg.Webhooks == nil {
		cfg.Webhooks = new(egress.Policy)
	}
	switch {
	case cfg.CallTimeout == 0:
		cfg.CallTimeout = DefaultCallTimeout
	case cfg.CallTimeout < 0:
		cfg.CallTimeout = 0
	}
	if cfg.InboxTimeout <= 0 {
		cfg.InboxTimeout = DefaultInboxTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	g := &Gateway{cfg: cfg, log: log}
	g.iso = newIsolation(g, cfg)
	if err := g.newBulk(); err != nil {
		return nil, err
	}
	if cfg.Authz != nil {
		cfg.Authz.SetPatientName(g.patientName)
	}
	return g, nil
}

// ServeHTTP routes r by host: the apex gets the mounted management API, a
// record's subdomain gets its FHIR API, anything else a 404 OperationOutcome.
// Client-visible errors are written here; the returned error is reserved for
// failures the caller should log.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request, up Upstream) error {
	up = g.guard(up)
	host := normalizeHost(hostOnly(r.Host))
	switch {
	case host == g.cfg.BaseDomain && g.cfg.Authz != nil && authz.IsEndpoint(r.URL.Path):
		g.serveAuthz(w, r, up)
	case host == g.cfg.BaseDomain && g.apex != nil:
		g.apex.ServeApex(w, r, up)
	case host == g.cfg.BaseDomain:
		fhir.WriteError(w, fhir.Errorf(http.StatusNotFound, fhir.CodeNotFound, "no management API is served here"))
	case strings.HasSuffix(host, "."+g.cfg.BaseDomain):
		slug := strings.TrimSuffix(host, "."+g.cfg.BaseDomain)
		if strings.Contains(slug, ".") || tenancy.ValidateSlug(slug) != nil {
			fhir.WriteError(w, unknownHost(host))
			return nil
		}
		if g.cfg.Authz != nil && authz.IsRecordEndpoint(r.URL.Path) {
			g.serveAuthz(w, r, up) // the record's own token endpoint
			return nil
		}
		g.serveRecord(w, r, up, slug)
	default:
		fhir.WriteError(w, unknownHost(host))
	}
	return nil
}

func unknownHost(host string) *fhir.Error {
	return fhir.Errorf(http.StatusNotFound, fhir.CodeNotFound, "no Personal FHIR Record is served at %q", host)
}

func hostOnly(hostport string) string {
	if strings.IndexByte(hostport, ':') < 0 {
		return hostport // no port: SplitHostPort would build an error to say so
	}
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}

func normalizeHost(h string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), ".")
}

// scheme is the scheme the client used to reach the gateway.
func scheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

// origin is scheme://host[:port] as the client addressed the gateway.
func origin(r *http.Request) string {
	return scheme(r) + "://" + strings.ToLower(r.Host)
}
