package pgstate_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"testing"

	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/internal/kv"
	"github.com/pfrgateway/caddy-pfr/internal/kv/kvtest"
	"github.com/pfrgateway/caddy-pfr/internal/pgstate"
	"github.com/pfrgateway/caddy-pfr/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func TestConformance(t *testing.T) {
	kvtest.Run(t, func(t *testing.T) kv.DB { return pgtest.OpenState(t, pgtest.DSN(t)) })
}

// Two "nodes" (pools) on one database: their Updates serialize too.
func TestConformanceTwoPools(t *testing.T) {
	kvtest.Run(t, func(t *testing.T) kv.DB {
		dsn := pgtest.DSN(t)
		return alternating{a: pgtest.OpenState(t, dsn), b: pgtest.OpenState(t, dsn), mu: new(sync.Mutex), n: new(int)}
	})
}

// alternating sends each transaction to one of two pools in turn.
type alternating struct {
	a, b *pgstate.DB
	mu   *sync.Mutex
	n    *int
}

func (d alternating) pick() *pgstate.DB {
	if d.mu == nil {
		return d.a
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	*d.n++
	if *d.n%2 == 0 {
		return d.b
	}
	return d.a
}

func (d alternating) Update(ctx context.Context, owner string, fn func(kv.Tx) error) error {
	return d.pick().Update(ctx, owner, fn)
}
func (d alternating) View(ctx context.Context, owner string, fn func(kv.Tx) error) error {
	return d.pick().View(ctx, owner, fn)
}
func (d alternating) CreateBuckets(names [][]byte) error { return d.a.CreateBuckets(names) }

func TestMigrateConcurrentStarts(t *testing.T) {
	dsn := pgtest.DSN(t)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db, err := pgstate.Open(context.Background(), dsn)
			if err != nil {
				errs <- err
				return
			}
			db.Close()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent start: %v", err)
	}
	db := pgtest.OpenState(t, dsn)
	applied, err := db.Migrate(context.Background())
	if err != nil || len(applied) != 0 {
		t.Fatalf("Migrate on an up-to-date database = %v, %v; want nothing applied", applied, err)
	}
	migs, _ := pgstate.Migrations()
	var n, max int
	if err := db.Pool().QueryRow(context.Background(), "SELECT count(*), max(version) FROM schema_migrations").Scan(&n, &max); err != nil {
		t.Fatal(err)
	}
	if n != len(migs) || max != len(migs) {
		t.Errorf("schema_migrations has %d rows up to %d, want %d", n, max, len(migs))
	}
	// A database from a newer binary is refused.
	if _, err := db.Pool().Exec(context.Background(), "INSERT INTO schema_migrations (version, name) VALUES ($1, 'future')", len(migs)+1); err != nil {
		t.Fatal(err)
	}
	if _, err := pgstate.Open(context.Background(), dsn); err == nil {
		t.Error("Open on a database newer than the binary succeeded")
	}
}

// A database that is gone is a 503 with Retry-After for the client, not a
// 500: the request was fine, and a balancer's retry may find another node.
func TestUnavailableIs503(t *testing.T) {
	db, err := pgstate.Open(context.Background(), pgtest.DSN(t))
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	err = db.Update(context.Background(), "test", func(kv.Tx) error { return nil })
	if !errors.Is(err, fhir.ErrStateUnavailable) {
		t.Fatalf("Update on a closed pool = %v, want ErrStateUnavailable", err)
	}
	fe := fhir.AsError(fmt.Errorf("reading the record: %w", err))
	if fe.Status != http.StatusServiceUnavailable || fe.Header.Get("Retry-After") == "" {
		t.Fatalf("client sees %d %v", fe.Status, fe.Header)
	}
}
