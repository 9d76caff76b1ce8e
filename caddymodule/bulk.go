package caddymodule

import (
	"context"
	"net/http"
	"path/filepath"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/pfrgateway/caddy-pfr/egress"
	"github.com/pfrgateway/caddy-pfr/gateway"
)

// ExportConfig configures FHIR Bulk Data export (`$export`) on every
// record. Export is on by default.
type ExportConfig struct {
	// Turn `$export` off.
	Disabled bool `json:"disabled,omitempty"`

	// Where export jobs and their NDJSON files are kept. Default: `bulk`
	// in data_dir. With `state postgres` (a cluster) the jobs and their
	// files are kept in PostgreSQL, shared by the nodes, and this
	// directory holds only a node's working files.
	Dir string `json:"dir,omitempty"`

	// How long a finished export's files can be downloaded. Default: 24h.
	TTL caddy.Duration `json:"ttl,omitempty"`

	// How many exports run at once on this node. Default: 2.
	Workers int `json:"workers,omitempty"`

	// With `state postgres` (a cluster): how long a node's claim on a
	// running job lasts unless the node renews it (every third of it).
	// When a node dies, another node resumes its jobs once their claims
	// expired. Default: 30s.
	Lease caddy.Duration `json:"lease,omitempty"`

	// How many resources an import writes per transaction: a larger
	// import is written in chunks of this size (more when a reference
	// cycle is larger), so that its memory does not grow with it. An
	// import of at most this many is one transaction. Default: 250.
	ImportChunk int `json:"import_chunk,omitempty"`

	// A PEM file of CA certificates that an import from a manifest URL
	// trusts for https besides the system's roots: a private CA, or the
	// root of another gateway's `tls internal`. Read at each import (a
	// root renewed after the start is seen). The destination policy
	// (webhook_allow) applies all the same.
	ImportCA string `json:"import_ca,omitempty"`
}

// bulkConfig is the gateway's bulk configuration: jobs reach the upstream
// through the same handler as client requests, with the request context
// Caddy's handlers expect (a replacer, variables, a server) prepared for
// requests that no client sent. On PostgreSQL state (a cluster) the jobs
// and their files are kept there, shared by every node; on bbolt in dir.
func (g *Gateway) bulkConfig(up gateway.Upstream, st *openedState) gateway.BulkConfig {
	ec := g.Export
	if ec != nil && ec.Disabled {
		return gateway.BulkConfig{}
	}
	bc := gateway.BulkConfig{Dir: filepath.Join(g.DataDir, "bulk"), Upstream: up, Context: detachedContext}
	if st != nil && st.bolt == nil {
		bc.Shared = st.kv
	}
	if ec != nil {
		if ec.Dir != "" {
			bc.Dir = ec.Dir
		}
		bc.TTL, bc.Workers, bc.LeaseTTL = time.Duration(ec.TTL), ec.Workers, time.Duration(ec.Lease)
		bc.ImportChunk = ec.ImportChunk
		if ec.ImportCA != "" {
			// webhook_allow was checked when the gateway was provisioned.
			allow, _ := egress.ParseAllow(g.WebhookAllow)
			bc.ImportPolicy = &egress.Policy{Allow: allow, RootCAFile: ec.ImportCA}
		}
	}
	return bc
}

// detachedContext gives ctx what Caddy's HTTP handlers read from a
// request's context, for a request the gateway makes on its own.
func detachedContext(ctx context.Context) context.Context {
	r, _ := http.NewRequestWithContext(ctx, http.MethodGet, "/", nil)
	return caddyhttp.PrepareRequest(r, caddy.NewReplacer(), nil, &caddyhttp.Server{}).Context()
}

// parseExport parses `export [off] { dir <path>; ttl <duration>; workers <n>; lease <duration>;
// import_chunk <n>; import_ca <pem file> }`.
func parseExport(d *caddyfile.Dispenser, g *Gateway) error {
	if g.Export == nil {
		g.Export = new(ExportConfig)
	}
	if d.NextArg() {
		if d.Val() != "off" {
			return d.Errf("export takes 'off' or a block, not %q", d.Val())
		}
		g.Export.Disabled = true
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
		case "dir":
			g.Export.Dir = v
		case "import_ca":
			g.Export.ImportCA = v
		case "import_chunk":
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return d.Errf("import_chunk must be a positive number: %q", v)
			}
			g.Export.ImportChunk = n
		case "ttl":
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur <= 0 {
				return d.Errf("ttl must be a positive duration: %q", v)
			}
			g.Export.TTL = caddy.Duration(dur)
		case "lease":
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur <= 0 {
				return d.Errf("lease must be a positive duration: %q", v)
			}
			g.Export.Lease = caddy.Duration(dur)
		case "workers":
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return d.Errf("workers must be a positive number: %q", v)
			}
			g.Export.Workers = n
		default:
			return d.Errf("unrecognized export option '%s'", key)
		}
	}
	return nil
}
