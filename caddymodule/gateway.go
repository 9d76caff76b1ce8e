package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/pfrgateway/caddy-pfr/api"
	"github.com/pfrgateway/caddy-pfr/audit"
	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/authz"
	"github.com/pfrgateway/caddy-pfr/backend"
	"github.com/pfrgateway/caddy-pfr/dopu"
	"github.com/pfrgateway/caddy-pfr/egress"
	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/forward"
	"github.com/pfrgateway/caddy-pfr/gateway"
	"github.com/pfrgateway/caddy-pfr/tenancy"
)

func init() {
	caddy.RegisterModule(Gateway{})
	httpcaddyfile.RegisterHandlerDirective("pfr", parseGatewayCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("pfr", httpcaddyfile.Before, "reverse_proxy")
}

// upstreamVar is the HTTP variable that holds the per-record upstream
// address (host:port) in `per_record_url` mode; use it as
// `reverse_proxy {http.vars.pfr_upstream}`.
const upstreamVar = "pfr_upstream"

// Gateway is the caddy-pfr gateway: it serves every Personal FHIR Record of
// one base domain at `{slug}.{base_domain}{fhir_path}` and the management API
// on the apex, in front of the configured upstream FHIR server.
type Gateway struct {
	// The apex domain. Records are served at its subdomains, the management
	// API at the apex itself. Required.
	BaseDomain string `json:"base_domain"`

	// Path of each record's FHIR API. Default: `/fhir`.
	FHIRPath string `json:"fhir_path,omitempty"`

	// Directory of the gateway's own data: records, accounts and memberships
	// (`pfr.db`) and the dev issuer's key. Shared across config reloads.
	// Default: `pfr` in Caddy's data directory.
	DataDir string `json:"data_dir,omitempty"`

	// Where the state lives: the bbolt file `pfr.db` in data_dir (the
	// default, one node) or PostgreSQL shared by several nodes. See
	// StateConfig.
	State *StateConfig `json:"state,omitempty"`

	// How records map onto the upstream FHIR server.
	Partition *PartitionConfig `json:"partition,omitempty"`

	// The OpenID providers whose access tokens are trusted.
	Issuers []IssuerConfig `json:"issuers,omitempty"`

	// Trust a development token issuer whose key lives in data_dir; mint
	// tokens with `pfr token`. Refused unless base_domain is `localhost` or
	// under `.localhost`.
	DevIssuer bool `json:"dev_issuer,omitempty"`

	// How long fetched signing keys (JWKS) are trusted before they are
	// fetched again; a key the issuer removed stops working after this.
	// Default: 10m.
	JWKSCacheTTL caddy.Duration `json:"jwks_cache_ttl,omitempty"`

	// The least time between two fetches of an issuer's keys caused by a
	// token with an unknown `kid`. Default: 1m.
	JWKSMinRefetch caddy.Duration `json:"jwks_min_refetch,omitempty"`

	// SMART scopes a token without any resource scopes counts as having.
	// Default: none, so such a token reaches no FHIR data; the management
	// API does not look at scopes.
	ScopesWhenAbsent []string `json:"scopes_when_absent,omitempty"`

	// The built-in SMART authorization server (see AuthzConfig). Off when
	// absent; each record's smart-configuration then describes the
	// external issuer.
	AuthorizationServer *AuthzConfig `json:"authorization_server,omitempty"`

	// What each record's `/.well-known/smart-configuration` shows.
	SMART *SMARTConfig `json:"smart,omitempty"`

	// Resource types outside every Patient compartment that may be written
	// to a record. Default: Practitioner, PractitionerRole, Organization,
	// Location, HealthcareService, Endpoint, Medication, Substance, Device.
	AllowedTypes []string `json:"allowed_types,omitempty"`

	// Whether the upstream is trusted to keep partitions apart. When it is
	// not, the gateway defends in depth: it stamps what it writes with the
	// record, removes other people's resources (and Bundle.total) from
	// responses, counts `_summary=count` itself and reads what an update or
	// delete targets first. Default: trusted for the embedded `pfr_store`,
	// which enforces its partitions; not trusted for any other upstream.
	TrustUpstreamIsolation *bool `json:"trust_upstream_isolation,omitempty"`

	// Networks (CIDR prefixes or single addresses) that drop-off webhooks
	// may reach although the outbound policy refuses them by default:
	// loopback, private, link-local, CGNAT, multicast and the other
	// special-purpose addresses, e.g. `10.0.0.0/8` for an in-house
	// receiver. Plain http is allowed only to these networks; every other
	// webhook must be https to a public address. Checked when a webhook is
	// saved and on every address dialled at delivery. Default: none.
	WebhookAllow []string `json:"webhook_allow,omitempty"`

	// Drop-off (DOPU) settings. Drop-offs are on by default.
	DropOff *DropOffConfig `json:"dropoff,omitempty"`

	// Remove from responses the resources that do not belong to the record
	// (defense in depth), logging each as a security event. Default: on.
	// Always on when the upstream is not trusted.
	ResponseFilter *bool `json:"response_filter,omitempty"`

	// The access log of each record (who did what, when, with what
	// outcome), readable by its owners and managers. On by default.
	Audit *AuditConfig `json:"audit,omitempty"`

	// FHIR Bulk Data export (`$export`) of every record; on by default.
	Export *ExportConfig `json:"export,omitempty"`

	// Largest request body the gateway reads, in bytes. Default: 32 MiB.
	MaxBodyBytes int64 `json:"max_body_bytes,omitempty"`

	// How long the gateway waits for its upstream; see UpstreamTimeouts.
	// Timeouts are on by default.
	UpstreamTimeouts *UpstreamTimeouts `json:"upstream_timeouts,omitempty"`

	// The handler that reaches the upstream FHIR server, usually
	// `reverse_proxy` or the embedded `pfr_store`. Required.
	UpstreamRaw json.RawMessage `json:"upstream,omitempty" caddy:"namespace=http.handlers inline_key=handler"`

	// Send requests through a `reverse_proxy` upstream's own transport,
	// skipping the handler's per-request work, when its configuration is
	// one fixed address and transport options only, which the gateway
	// carries out as the handler would (package forward; anything more,
	// and a request the forwarder does not handle, goes through the
	// handler). Default: on.
	DirectUpstream *bool `json:"direct_upstream,omitempty"`

	upstream  caddyhttp.MiddlewareHandler
	direct    *forward.Forwarder
	gw        *gateway.Gateway
	stopDOPU  func()
	stopAudit func()
	stopBulk  func()
	stopAuthz func()
	state     *openedState
	logger    *zap.Logger
}

// PartitionConfig says how a record maps onto the upstream.
type PartitionConfig struct {
	// One of `header` (default: HAPI's RequestHeaderPartitionInterceptor,
	// the numeric partition id in a header), `url_prefix` (HAPI's
	// UrlBaseTenantIdentificationStrategy: `/fhir/{partition name}/…`),
	// `tenant_header` (IBM/LinuxForHealth FHIR server) or `per_record_url`
	// (one FHIR service per record).
	Mode string `json:"mode,omitempty"`

	// Header carrying the partition id in `header` mode. Default:
	// `X-Request-Partition-IDs`.
	Header string `json:"header,omitempty"`

	// Header carrying the tenant in `tenant_header` mode. Default:
	// `X-FHIR-TENANT-ID`.
	TenantHeader string `json:"tenant_header,omitempty"`

	// Header carrying the datastore id in `tenant_header` mode. Default:
	// `X-FHIR-DSID`.
	DataStoreHeader string `json:"datastore_header,omitempty"`

	// Datastore id to send in `tenant_header` mode; not sent when empty.
	DataStoreID string `json:"datastore_id,omitempty"`

	// Upstream base URL template in `per_record_url` mode, with the
	// placeholders `{record_id}`, `{partition_name}` and `{partition_id}`,
	// e.g. `https://fhir-{record_id}.internal/fhir`. The upstream handler
	// dials the host it finds in the `{http.vars.pfr_upstream}` placeholder.
	URLTemplate string `json:"url_template,omitempty"`

	// FHIR base path on the upstream. Default: `/fhir`.
	UpstreamFHIRPath string `json:"upstream_fhir_path,omitempty"`

	// Absolute base URLs the upstream may write into responses (for
	// example its configured server address), rewritten to the record's
	// address like the ones derived from the request.
	UpstreamURLs []string `json:"upstream_urls,omitempty"`

	// More client-sent headers to remove before the request goes upstream,
	// besides every partition and tenant header.
	StripHeaders []string `json:"strip_headers,omitempty"`
}

// SMARTConfig says what `/.well-known/smart-configuration` shows.
type SMARTConfig struct {
	// The trusted issuer whose OIDC discovery document the SMART
	// configuration is built from. Default: the first one that has one.
	Issuer string `json:"issuer,omitempty"`

	// The external provider puts the record's Patient id in its token
	// responses (`patient`, for `launch/patient`): only then does the
	// configuration claim `context-standalone-patient`.
	PatientContext bool `json:"patient_context,omitempty"`

	// Members that replace or add to the document, e.g.
	// `authorization_endpoint` or `capabilities`.
	Overrides map[string]any `json:"overrides,omitempty"`
}

// AuditConfig configures the access log.
type AuditConfig struct {
	// Keep no access log.
	Disabled bool `json:"disabled,omitempty"`

	// How long events are kept. Default: 365 days.
	Retention caddy.Duration `json:"retention,omitempty"`

	// Most events kept per record; the oldest go first. Default: 10000.
	MaxPerRecord int `json:"max_per_record,omitempty"`
}

// IssuerConfig is one trusted OpenID provider.
type IssuerConfig struct {
	// The exact `iss` value of its tokens. Required.
	Issuer string `json:"issuer"`

	// Where its signing keys are. Default: the `jwks_uri` of its OpenID
	// discovery document.
	JWKSURL string `json:"jwks_url,omitempty"`

	// Audiences accepted from this issuer on every record and on the apex,
	// besides each record's own FHIR base URL.
	Audiences []string `json:"audiences,omitempty"`

	// Claims that hold the granted scopes. Default: `scope`, `scp`.
	ScopeClaims []string `json:"scope_claims,omitempty"`

	// Claims that name the client. Default: `client_id`, `azp`, `cid`, `appid`.
	ClientIDClaims []string `json:"client_id_claims,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (Gateway) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.pfr",
		New: func() caddy.Module { return new(Gateway) },
	}
}

// Provision loads the upstream handler, opens the data directory and builds
// the pipeline.
func (g *Gateway) Provision(ctx caddy.Context) error {
	g.logger = ctx.Logger()
	if g.DataDir == "" {
		g.DataDir = filepath.Join(caddy.AppDataDir(), "pfr")
	}
	if g.Partition == nil {
		g.Partition = new(PartitionConfig)
	}
	if g.UpstreamRaw == nil {
		return errors.New("pfr: an upstream handler is required (reverse_proxy or pfr_store)")
	}
	timeouts := g.UpstreamTimeouts.durations()
	err := timeouts.validate()
	if err != nil {
		return fmt.Errorf("pfr: %w", err)
	}
	if g.UpstreamRaw, err = withTransportTimeouts(g.UpstreamRaw, timeouts); err != nil {
		return fmt.Errorf("pfr: upstream timeouts: %w", err)
	}
	upstreamRaw := g.UpstreamRaw // LoadModule clears it
	mod, err := ctx.LoadModule(g, "UpstreamRaw")
	if err != nil {
		return fmt.Errorf("pfr: loading upstream handler: %w", err)
	}
	up, ok := mod.(caddyhttp.MiddlewareHandler)
	if !ok {
		return fmt.Errorf("pfr: upstream module %T is not an HTTP handler", mod)
	}
	g.upstream = up
	idleReads(up)
	if g.DirectUpstream == nil || *g.DirectUpstream {
		if g.direct = directForwarder(ctx, up, upstreamRaw); g.direct != nil {
			g.logger.Info("requests go straight through the upstream reverse_proxy's transport", zap.String("address", g.direct.Address))
		}
	}
	if _, embedded := up.(*Store); embedded && g.State.cluster() {
		return fmt.Errorf("pfr: %w", errStoreInCluster)
	}

	st, err := openState(g.State, g.DataDir)
	if err != nil {
		return fmt.Errorf("pfr: %w", err)
	}
	g.state = st
	tenants, err := tenancy.NewStore(st.kv)
	if err != nil {
		return fmt.Errorf("pfr: %w", err)
	}

	issuers := make([]auth.IssuerConfig, 0, len(g.Issuers)+1)
	for _, ic := range g.Issuers {
		issuers = append(issuers, auth.IssuerConfig{
			Issuer: ic.Issuer, JWKSURL: ic.JWKSURL, Audiences: ic.Audiences,
			ScopeClaims: ic.ScopeClaims, ClientIDClaims: ic.ClientIDClaims,
		})
	}
	if g.DevIssuer {
		if !auth.DevIssuerAllowed(g.BaseDomain) {
			return fmt.Errorf("pfr: dev_issuer is only allowed when base_domain is localhost or under .localhost, not %q", g.BaseDomain)
		}
		dev, err := auth.LoadOrCreateDevIssuer(g.DataDir)
		if err != nil {
			return fmt.Errorf("pfr: dev issuer: %w", err)
		}
		issuers = append(issuers, dev.Config())
		g.logger.Warn("development token issuer enabled; never use it in production",
			zap.String("issuer", dev.Issuer()), zap.String("audience", dev.Audience()))
	}
	var authServer *authz.Server
	if g.AuthorizationServer != nil {
		if authServer, err = g.newAuthzServer(st.kv, tenants); err != nil {
			return fmt.Errorf("pfr: authorization_server: %w", err)
		}
		issuers = append(issuers, authServer.IssuerConfig())
		logAuthz(g.logger, authServer)
		g.stopAuthz = g.background(authServer.Run)
	}
	verifier, err := auth.NewVerifier(issuers, auth.Options{
		HTTPClient:         &http.Client{Timeout: 10 * time.Second},
		JWKSCacheTTL:       time.Duration(g.JWKSCacheTTL),
		MinRefetchInterval: time.Duration(g.JWKSMinRefetch),
	})
	if err != nil {
		return fmt.Errorf("pfr: %w", err)
	}

	pc := g.Partition
	be, err := backend.New(backend.Config{
		Mode: backend.Mode(pc.Mode), FHIRPath: pc.UpstreamFHIRPath, PartitionHeader: pc.Header,
		TenantHeader: pc.TenantHeader, DataStoreHeader: pc.DataStoreHeader, DataStoreID: pc.DataStoreID,
		URLTemplate: pc.URLTemplate, UpstreamURLs: pc.UpstreamURLs, StripHeaders: pc.StripHeaders,
	})
	if err != nil {
		return fmt.Errorf("pfr: partition: %w", err)
	}

	var smart gateway.SMARTConfig
	if g.SMART != nil {
		smart = gateway.SMARTConfig{Issuer: g.SMART.Issuer, Overrides: g.SMART.Overrides, PatientContext: g.SMART.PatientContext}
	}
	ownership := fhir.DefaultOwnershipPolicy()
	if len(g.AllowedTypes) > 0 {
		ownership.AllowedTypes = map[string]bool{}
		for _, t := range g.AllowedTypes {
			if !fhir.IsResourceType(t) || fhir.InPatientCompartment(t) {
				return fmt.Errorf("pfr: allowed_types: %q is not an R4 resource type outside the Patient compartment", t)
			}
			ownership.AllowedTypes[t] = true
		}
	}
	allow, err := egress.ParseAllow(g.WebhookAllow)
	if err != nil {
		return fmt.Errorf("pfr: webhook_allow: %w", err)
	}
	webhooks := &egress.Policy{Allow: allow}
	var svc *dopu.Service
	if g.DropOff == nil || !g.DropOff.Disabled {
		opts := g.DropOff.options(dopu.Options{
			Logger:  g.logger.Named("dopu"),
			Webhook: api.WebhookFor(tenants),
			Egress:  webhooks,
		})
		if st.bolt != nil {
			// The file is this process's alone (dopu.New relies on it).
			svc, err = dopu.New(st.bolt, g.DropOff.limits(), opts)
		} else {
			var store *dopu.KVStore
			if store, err = dopu.NewStore(st.kv); err == nil {
				svc = dopu.NewWithStore(store, g.DropOff.limits(), opts)
			}
		}
		if err != nil {
			return fmt.Errorf("pfr: drop-offs: %w", err)
		}
		// Alerts and expiry run until this config is cleaned up; the
		// outbox lives in the database, so the next config takes over.
		g.stopDOPU = g.background(func(ctx context.Context) {
			if err := svc.Run(ctx); err != nil && ctx.Err() == nil {
				g.logger.Error("drop-off alerts stopped", zap.Error(err))
			}
		})
	}
	var accessLog *audit.Log
	if g.Audit == nil || !g.Audit.Disabled {
		opts := audit.Options{Logger: g.logger.Named("audit")}
		if g.Audit != nil {
			opts.Retention, opts.MaxPerRecord = time.Duration(g.Audit.Retention), g.Audit.MaxPerRecord
		}
		store, err := audit.NewStore(st.kv)
		if err != nil {
			return fmt.Errorf("pfr: access log: %w", err)
		}
		accessLog, err = audit.NewWithStore(store, opts)
		if err != nil {
			return fmt.Errorf("pfr: access log: %w", err)
		}
		g.stopAudit = g.background(func(ctx context.Context) {
			if err := accessLog.Run(ctx); err != nil {
				g.logger.Error("access log writer stopped", zap.Error(err))
			}
		})
	}
	g.gw, err = gateway.New(gateway.Config{
		DOPU: svc, Audit: accessLog, Webhooks: webhooks, Authz: authServer,
		ClientIP: func(r *http.Request) string {
			ip, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
			return ip
		},
		Ownership: ownership, TrustUpstreamIsolation: g.trustsUpstream(),
		DisableResponseFilter: g.ResponseFilter != nil && !*g.ResponseFilter,
		ScopesWhenAbsent:      g.ScopesWhenAbsent, SMART: smart, MaxBodyBytes: g.MaxBodyBytes,
		CallTimeout: time.Duration(timeouts.Call), InboxTimeout: time.Duration(timeouts.Inbox),
		BaseDomain: g.BaseDomain, FHIRPath: g.FHIRPath, UpstreamFHIRPath: pc.UpstreamFHIRPath,
		Backend: be, Tenancy: tenants, Verifier: verifier, Logger: g.logger, DataPath: st.path,
		SetUpstream: func(r *http.Request, dial string) { caddyhttp.SetVar(r.Context(), upstreamVar, dial) },
		Bulk:        g.bulkConfig(gateway.UpstreamFunc(g.serveUpstream), st),
	})
	if err != nil {
		return fmt.Errorf("pfr: %w", err)
	}
	api.New(g.gw) // the management API, on the apex host
	fhirPath := g.FHIRPath
	if fhirPath == "" {
		fhirPath = "/fhir" // gateway.New's default
	}
	go announceReady(ctx, g.logger, g.BaseDomain, fhirPath)
	// Export jobs run (and those a stopped process left resume) until
	// this config is cleaned up.
	g.stopBulk = g.background(func(ctx context.Context) {
		if err := g.gw.RunBulk(ctx); err != nil {
			g.logger.Error("bulk export jobs stopped", zap.Error(err))
		}
	})
	return nil
}

// trustsUpstream says whether the upstream keeps partitions apart: as
// configured, or by default only for the embedded store.
func (g *Gateway) trustsUpstream() bool {
	if g.TrustUpstreamIsolation != nil {
		return *g.TrustUpstreamIsolation
	}
	_, embedded := g.upstream.(*Store)
	return embedded
}

// Validate checks the configuration.
func (g *Gateway) Validate() error {
	if g.BaseDomain == "" {
		return errors.New("pfr: base_domain is required")
	}
	if len(g.Issuers) == 0 && !g.DevIssuer && g.AuthorizationServer == nil {
		return errors.New("pfr: at least one issuer (or dev_issuer, or authorization_server) is required")
	}
	return nil
}

// Cleanup stops the drop-off alerts and the access log writer (which
// writes what is queued) and releases the data directory.
func (g *Gateway) Cleanup() error {
	for _, stop := range []func(){g.stopBulk, g.stopDOPU, g.stopAudit, g.stopAuthz} {
		if stop != nil {
			stop()
		}
	}
	return g.state.release()
}

// background runs fn in a goroutine until the returned stop is called;
// stop waits (a bounded time) for fn to return, so the database it uses is
// still open when it finishes.
func (g *Gateway) background(fn func(ctx context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(ctx)
	}()
	return func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			g.logger.Warn("a background task did not stop in time")
		}
	}
}

// ServeHTTP runs the gateway pipeline. The gateway answers every request for
// its base domain; next is not called.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	return g.gw.ServeHTTP(w, r, gateway.UpstreamFunc(g.serveUpstream))
}

// serveUpstream sends a request upstream — through the forwarder when it
// takes the request (directForwarder, forward.Handles), through the
// upstream handler otherwise — its errors carrying their status to the
// gateway.
func (g *Gateway) serveUpstream(w http.ResponseWriter, r *http.Request) error {
	if g.direct != nil && forward.Handles(r) {
		err := g.direct.ServeHTTP(w, r)
		if fe, ok := err.(*forward.Error); ok {
			return statusError{caddyhttp.Error(fe.Status, fe.Err)}
		}
		return err
	}
	err := g.upstream.ServeHTTP(w, r, noNext)
	var he caddyhttp.HandlerError
	if errors.As(err, &he) {
		return statusError{he}
	}
	return err
}

// noNext ends the chain behind the upstream handler: an upstream that passes
// a request on has not answered it.
var noNext = caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
	return caddyhttp.Error(http.StatusBadGateway, errors.New("the upstream handler did not answer"))
})

// statusError carries a Caddy handler error's status to the gateway.
type statusError struct{ caddyhttp.HandlerError }

func (e statusError) HTTPStatus() int { return e.StatusCode }
func (e statusError) Unwrap() error   { return e.Err }

// Interface guards
var (
	_ caddy.Provisioner           = (*Gateway)(nil)
	_ caddy.Validator             = (*Gateway)(nil)
	_ caddy.CleanerUpper          = (*Gateway)(nil)
	_ caddyhttp.MiddlewareHandler = (*Gateway)(nil)
	_ gateway.StatusError         = statusError{}
)
