// Package pgstate keeps the gateway's state in PostgreSQL so that several
// gateway nodes share it: a connection pool, versioned migrations run at
// start, and the internal/kv model on top (the same code as the bbolt file
// of a single node).
//
// Update transactions serialize per owner (tenancy, dopu, audit) across
// every node through a transaction-scoped advisory lock, which gives them
// the "as if run alone" guarantee the stores promise; View transactions
// run in REPEATABLE READ, read-only, so they see one snapshot and never
// wait for a writer.
package pgstate

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/internal/kv"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrationLock is the advisory lock key that makes concurrent starts of
// several nodes run the migrations once, one after the other.
const migrationLock = 0x7066722d6d6967 // "pfr-mig"

// DB is the gateway's PostgreSQL state. Share one per DSN in a process.
type DB struct {
	pool *pgxpool.Pool
	once sync.Once
}

var _ kv.DB = (*DB)(nil)

// Open connects to the database at dsn (a PostgreSQL URL or key=value
// string) and brings its schema up to date (Migrate).
func Open(ctx context.Context, dsn string) (*DB, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// The DSN may hold a password: name the problem, not the string.
		return nil, errors.New("pgstate: parsing the PostgreSQL DSN failed (check its syntax)")
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pgstate: connecting: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("pgstate: connecting to %s:%d/%s: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database, err)
	}
	db := &DB{pool: pool}
	if _, err := db.Migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return db, nil
}

// Pool returns the connection pool, for packages that keep their own
// tables in the same database.
func (db *DB) Pool() *pgxpool.Pool { return db.pool }

// Close closes the pool.
func (db *DB) Close() { db.once.Do(db.pool.Close) }

// Migration is one versioned schema change.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Migrations returns the embedded migrations in version order. Their file
// names are "NNNN_name.sql"; a version once released never changes.
func Migrations() ([]Migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, fmt.Errorf("pgstate: reading migrations: %w", err)
	}
	var out []Migration
	for _, e := range entries {
		name := e.Name()
		num, rest, ok := strings.Cut(strings.TrimSuffix(name, ".sql"), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("pgstate: migration file %q: want NNNN_name.sql", name)
		}
		data, err := migrationFiles.ReadFile("migrations/" + name)
		if err != nil {
			return nil, fmt.Errorf("pgstate: reading migration %s: %w", name, err)
		}
		out = append(out, Migration{Version: v, Name: rest, SQL: string(data)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	for i := range out {
		if out[i].Version != i+1 {
			return nil, fmt.Errorf("pgstate: migrations must be numbered 1, 2, 3…: found %d at position %d", out[i].Version, i+1)
		}
	}
	return out, nil
}

// Migrate applies the migrations the database has not seen, each in its
// own transaction with its row in schema_migrations, and returns the
// versions it applied. Concurrent callers (nodes starting together) wait
// for each other on an advisory lock, so each migration runs once. A
// database newer than this binary (a version it does not know) is refused:
// an older node must not run against a schema it does not understand.
func (db *DB) Migrate(ctx context.Context) ([]int, error) {
	migs, err := Migrations()
	if err != nil {
		return nil, err
	}
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("pgstate: migrating: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(migrationLock)); err != nil {
		return nil, fmt.Errorf("pgstate: taking the migration lock: %w", err)
	}
	defer func() {
		// A fresh context: the lock must go even when ctx is done.
		_, _ = conn.Exec(context.Background(), "SELECT pg_advisory_unlock($1)", int64(migrationLock))
	}()
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version integer PRIMARY KEY,
		name text NOT NULL,
		applied timestamptz NOT NULL DEFAULT now())`); err != nil {
		return nil, fmt.Errorf("pgstate: creating schema_migrations: %w", err)
	}
	var current int
	if err := conn.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM schema_migrations").Scan(&current); err != nil {
		return nil, fmt.Errorf("pgstate: reading schema_migrations: %w", err)
	}
	if current > len(migs) {
		return nil, fmt.Errorf("pgstate: the database is at schema version %d, newer than this binary knows (%d): upgrade the binary", current, len(migs))
	}
	var applied []int
	for _, m := range migs[current:] {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.Version, m.Name)
			return err
		})
		if err != nil {
			return applied, fmt.Errorf("pgstate: migration %04d_%s: %w", m.Version, m.Name, err)
		}
		applied = append(applied, m.Version)
	}
	return applied, nil
}

// Version returns the schema version the database is at.
func (db *DB) Version(ctx context.Context) (int, error) {
	var v int
	if err := db.pool.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM schema_migrations").Scan(&v); err != nil {
		return 0, fmt.Errorf("pgstate: reading schema_migrations: %w", err)
	}
	return v, nil
}

// lockKey is the advisory lock serializing one owner's Updates.
func lockKey(owner string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte("pfr-kv/" + owner))
	return int64(h.Sum64())
}

// CreateBuckets implements kv.DB. Buckets are rows' labels in PostgreSQL:
// nothing has to be made.
func (db *DB) CreateBuckets([][]byte) error { return nil }

// Update implements kv.DB.
func (db *DB) Update(ctx context.Context, owner string, fn func(kv.Tx) error) error {
	return db.run(ctx, owner, true, fn)
}

// View implements kv.DB.
func (db *DB) View(ctx context.Context, owner string, fn func(kv.Tx) error) error {
	return db.run(ctx, owner, false, fn)
}

func (db *DB) run(ctx context.Context, owner string, writable bool, fn func(kv.Tx) error) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	opts := pgx.TxOptions{IsoLevel: pgx.ReadCommitted, AccessMode: pgx.ReadWrite}
	if !writable {
		opts = pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}
	}
	ptx, err := db.pool.BeginTx(ctx, opts)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%s: beginning transaction: %w", owner, classify(err))
	}
	// Rolls back unless committed, also when fn panics.
	defer func() { _ = ptx.Rollback(context.Background()) }()
	if writable {
		// Serialize this owner's writers across every node. The lock is
		// taken before anything is read, so every read in fn sees every
		// write committed before it (read committed, nobody else writing).
		if _, err := ptx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", lockKey(owner)); err != nil {
			return fmt.Errorf("%s: waiting for the write lock: %w", owner, err)
		}
	}
	t := &tx{ctx: ctx, tx: ptx}
	ferr := fn(t)
	if t.err != nil {
		return fmt.Errorf("%s: %w", owner, classify(t.err))
	}
	if ferr != nil {
		return ferr
	}
	if !writable {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := ptx.Commit(ctx); err != nil {
		return fmt.Errorf("%s: committing: %w", owner, classify(err))
	}
	return nil
}

// classify marks database errors that are no fault of the request, so that
// clients get the right status (see fhir.AsError): a full disk
// (SQLSTATE 53100) as ENOSPC (507), a lost or refused connection, a
// shutting-down server or an unreachable one as fhir.ErrStateUnavailable
// (503). Anything else is left as it is.
func classify(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == "53100":
			return fmt.Errorf("%w: %w", syscall.ENOSPC, err)
		case strings.HasPrefix(pgErr.Code, "08"), strings.HasPrefix(pgErr.Code, "57P"):
			return fmt.Errorf("%w: %w", fhir.ErrStateUnavailable, err)
		}
		return err
	}
	// No answer from the server at all: connecting, a broken connection,
	// a closed pool.
	return fmt.Errorf("%w: %w", fhir.ErrStateUnavailable, err)
}
