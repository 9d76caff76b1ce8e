package caddymodule

import (
	"errors"
	"fmt"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/certmagic"

	"github.com/pfrgateway/caddy-pfr/internal/pgstate"
)

func init() {
	caddy.RegisterModule(PostgresStorage{})
}

// PostgresStorage keeps Caddy's certificates, keys and ACME accounts in
// PostgreSQL, so that every gateway node uses the certificates one of them
// obtained, and its cluster lock keeps two nodes from ordering the same
// certificate at once (locks expire 30 s after a holder stops renewing
// them; a released lock is released only by its own holder):
//
//	{
//	    storage postgres {env.PFR_POSTGRES_DSN}
//	}
//
// It may use the same database as `state postgres` (its own tables,
// created by the same migrations).
type PostgresStorage struct {
	// PostgreSQL connection string (a `postgres://` URL or `key=value`
	// pairs); placeholders such as `{env.PFR_POSTGRES_DSN}` are replaced.
	// Required.
	DSN string `json:"dsn,omitempty"`

	db  *pgstate.DB
	key string
}

// CaddyModule returns the Caddy module information.
func (PostgresStorage) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "caddy.storage.postgres",
		New: func() caddy.Module { return new(PostgresStorage) },
	}
}

// Provision connects to (or shares) the database and migrates it.
func (s *PostgresStorage) Provision(caddy.Context) error {
	dsn := caddy.NewReplacer().ReplaceKnown(s.DSN, "")
	if dsn == "" {
		return errors.New("caddy.storage.postgres: dsn is required")
	}
	db, err := openPostgres(dsn)
	if err != nil {
		return fmt.Errorf("caddy.storage.postgres: %w", err)
	}
	s.db, s.key = db, dsn
	return nil
}

// CertMagicStorage implements caddy.StorageConverter.
func (s *PostgresStorage) CertMagicStorage() (certmagic.Storage, error) {
	if s.db == nil {
		return nil, errors.New("caddy.storage.postgres: not provisioned")
	}
	return pgstate.NewCertStorage(s.db), nil
}

// Cleanup releases the database.
func (s *PostgresStorage) Cleanup() error {
	if s.key == "" {
		return nil
	}
	_, err := pgPool.Delete(s.key)
	return err
}

// UnmarshalCaddyfile parses
//
//	storage postgres <dsn>
//	storage postgres {
//	    dsn <dsn>
//	}
func (s *PostgresStorage) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // module name
	if d.NextArg() {
		s.DSN = d.Val()
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "dsn":
			if err := oneArg(d, &s.DSN); err != nil {
				return err
			}
		default:
			return d.Errf("unrecognized postgres storage option '%s'", d.Val())
		}
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner      = (*PostgresStorage)(nil)
	_ caddy.CleanerUpper     = (*PostgresStorage)(nil)
	_ caddy.StorageConverter = (*PostgresStorage)(nil)
	_ caddyfile.Unmarshaler  = (*PostgresStorage)(nil)
)
