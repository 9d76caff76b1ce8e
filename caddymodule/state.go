package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	bolt "go.etcd.io/bbolt"

	"github.com/pfrgateway/caddy-pfr/internal/kv"
	"github.com/pfrgateway/caddy-pfr/internal/pgstate"
)

// StateConfig says where the gateway keeps its state (records, accounts,
// memberships, invitations, drop-offs with their bodies, the alert outbox
// and the access log). It is not a module: the `pfr` handler and
// `tls.permission.pfr` both carry one and must agree.
//
//	state bolt              # the default: pfr.db in data_dir, one node
//	state postgres <dsn>    # PostgreSQL, shared by any number of nodes
type StateConfig struct {
	// PostgreSQL connection string (a `postgres://` URL or `key=value`
	// pairs) of the database shared by every gateway node. Empty: the
	// state is in the bbolt file `pfr.db` in data_dir, which only one
	// process can open (a single node). Placeholders such as
	// `{env.PFR_POSTGRES_DSN}` are replaced, so the password need not be
	// in the config. The schema is migrated at start (see `pfr migrate`).
	// With PostgreSQL the gateway runs as one node of a cluster: its FHIR
	// data upstream must be shared too, so `pfr_store` is refused.
	Postgres string `json:"postgres,omitempty"`
}

// postgresDSN returns the DSN with placeholders replaced, or "" for bbolt.
func (c *StateConfig) postgresDSN() string {
	if c == nil || c.Postgres == "" {
		return ""
	}
	return caddy.NewReplacer().ReplaceKnown(c.Postgres, "")
}

// cluster reports whether the state is shared by several nodes.
func (c *StateConfig) cluster() bool { return c.postgresDSN() != "" }

// unmarshalState parses the arguments after `state`.
func unmarshalState(d *caddyfile.Dispenser) (*StateConfig, error) {
	if !d.NextArg() {
		return nil, d.ArgErr()
	}
	switch d.Val() {
	case "bolt":
		if d.NextArg() {
			return nil, d.ArgErr()
		}
		return nil, nil
	case "postgres":
		var c StateConfig
		if !d.NextArg() {
			return nil, d.Err("state postgres needs a connection string")
		}
		c.Postgres = d.Val()
		if d.NextArg() {
			return nil, d.ArgErr()
		}
		return &c, nil
	}
	return nil, d.Errf("unknown state '%s': want bolt or postgres <dsn>", d.Val())
}

// openedState is the state a module opened; release it in Cleanup.
type openedState struct {
	kv   kv.DB
	bolt *bolt.DB // set for bbolt only
	path string   // the bbolt file, or a description of the database
	key  string
	pool *caddy.UsagePool
}

func (s *openedState) release() error {
	if s == nil || s.key == "" {
		return nil
	}
	_, err := s.pool.Delete(s.key)
	return err
}

// pgPool shares one PostgreSQL connection pool per DSN between the modules
// of a config and across reloads, as boltPool does for files.
var pgPool = caddy.NewUsagePool()

type pooledPG struct{ db *pgstate.DB }

func (p pooledPG) Destruct() error { p.db.Close(); return nil }

// pgStartTimeout bounds connecting and migrating at start.
const pgStartTimeout = time.Minute

// openState opens (or shares) the configured state: PostgreSQL, or the
// bbolt file in dataDir.
func openState(c *StateConfig, dataDir string) (*openedState, error) {
	dsn := c.postgresDSN()
	if dsn == "" {
		db, key, err := openBolt(filepath.Join(dataDir, "pfr.db"))
		if err != nil {
			return nil, err
		}
		return &openedState{kv: kv.Bolt(db), bolt: db, path: key, key: key, pool: boltPool}, nil
	}
	db, err := openPostgres(dsn)
	if err != nil {
		return nil, fmt.Errorf("state postgres: %w", err)
	}
	return &openedState{kv: db, path: "PostgreSQL", key: dsn, pool: pgPool}, nil
}

// openPostgres opens (or shares) the database at dsn, migrated. The caller
// must delete dsn from pgPool in Cleanup.
func openPostgres(dsn string) (*pgstate.DB, error) {
	val, _, err := pgPool.LoadOrNew(dsn, func() (caddy.Destructor, error) {
		ctx, cancel := context.WithTimeout(context.Background(), pgStartTimeout)
		defer cancel()
		db, err := pgstate.Open(ctx, dsn)
		if err != nil {
			return nil, err
		}
		return pooledPG{db: db}, nil
	})
	if err != nil {
		return nil, err
	}
	return val.(pooledPG).db, nil
}

// errStoreInCluster is why pfr_store cannot serve a cluster.
var errStoreInCluster = errors.New("the upstream is pfr_store, whose FHIR data is a bbolt file on this node only, " +
	"but state is postgres (several gateway nodes): every node must reach the same FHIR data, " +
	"so use a shared upstream (e.g. reverse_proxy to HAPI on PostgreSQL), or state bolt for one node")
