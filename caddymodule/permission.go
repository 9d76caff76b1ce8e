package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"go.uber.org/zap"

	"github.com/pfrgateway/caddy-pfr/gateway"
	"github.com/pfrgateway/caddy-pfr/tenancy"
)

func init() {
	caddy.RegisterModule(Permission{})
}

// Permission allows on-demand TLS certificates only for the apex and the
// subdomains of active records, so a client cannot make Caddy request
// certificates for arbitrary names:
//
//	on_demand_tls {
//	    permission pfr {
//	        base_domain pfr.example.com
//	        data_dir    /var/lib/pfr
//	        state       postgres {env.PFR_POSTGRES_DSN}
//	    }
//	}
type Permission struct {
	// The gateway's base domain. Required.
	BaseDomain string `json:"base_domain"`

	// The gateway's data directory (the same as the `pfr` handler's).
	// Default: `pfr` in Caddy's data directory.
	DataDir string `json:"data_dir,omitempty"`

	// Where the gateway's state lives: the same as the `pfr` handler's
	// (default: the bbolt file in data_dir). See StateConfig.
	State *StateConfig `json:"state,omitempty"`

	store  tenancy.Store
	state  *openedState
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Permission) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "tls.permission.pfr",
		New: func() caddy.Module { return new(Permission) },
	}
}

// Provision opens (or shares) the gateway's database.
func (p *Permission) Provision(ctx caddy.Context) error {
	p.logger = ctx.Logger()
	if p.BaseDomain == "" {
		return errors.New("tls.permission.pfr: base_domain is required")
	}
	if p.DataDir == "" {
		p.DataDir = filepath.Join(caddy.AppDataDir(), "pfr")
	}
	st, err := openState(p.State, p.DataDir)
	if err != nil {
		return fmt.Errorf("tls.permission.pfr: %w", err)
	}
	p.state = st
	p.store, err = tenancy.NewStore(st.kv)
	if err != nil {
		return fmt.Errorf("tls.permission.pfr: %w", err)
	}
	return nil
}

// Cleanup releases the database.
func (p *Permission) Cleanup() error {
	return p.state.release()
}

// CertificateAllowed implements caddytls.OnDemandPermission.
func (p *Permission) CertificateAllowed(ctx context.Context, name string) error {
	err := gateway.CertificatePermitted(ctx, p.store, p.BaseDomain, name)
	if errors.Is(err, gateway.ErrNoCertificate) {
		p.logger.Debug("certificate refused", zap.String("name", name), zap.Error(err))
		return fmt.Errorf("%w: %w", caddytls.ErrPermissionDenied, err)
	}
	return err
}

// UnmarshalCaddyfile parses
//
//	permission pfr [<base_domain>] {
//	    base_domain <domain>
//	    data_dir    <dir>
//	    state       bolt | postgres <dsn>
//	}
func (p *Permission) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // module name
	if d.NextArg() {
		p.BaseDomain = d.Val()
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "base_domain":
			if err := oneArg(d, &p.BaseDomain); err != nil {
				return err
			}
		case "data_dir":
			if err := oneArg(d, &p.DataDir); err != nil {
				return err
			}
		case "state":
			st, err := unmarshalState(d)
			if err != nil {
				return err
			}
			p.State = st
		default:
			return d.Errf("unrecognized pfr permission option '%s'", d.Val())
		}
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Permission)(nil)
	_ caddy.CleanerUpper          = (*Permission)(nil)
	_ caddytls.OnDemandPermission = (*Permission)(nil)
	_ caddyfile.Unmarshaler       = (*Permission)(nil)
)
