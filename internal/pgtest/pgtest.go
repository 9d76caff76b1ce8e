// Package pgtest gives tests a real, throwaway PostgreSQL: each call of DSN
// returns an empty database of its own.
//
// When PFR_TEST_POSTGRES_DSN is set (scripts/test.sh sets it), databases
// are made on that server. Otherwise the first call starts a private
// cluster for the test binary: initdb into a temporary folder (as the
// postgres user when the tests run as root, since initdb refuses root), a
// postgres on 127.0.0.1 and an ephemeral port, killed when the test binary
// exits (parent-death signal; Main also stops it and removes the folder).
// So `go test ./tenancy/` works alone wherever Debian's postgresql package
// is installed. Under `go test -short` the tests needing PostgreSQL skip
// (testkit.Needs); otherwise a missing PostgreSQL fails them.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pfrgateway/caddy-pfr/internal/childproc"
	"github.com/pfrgateway/caddy-pfr/internal/pgstate"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// EnvDSN names a server to make test databases on; its user must be
// allowed to CREATE DATABASE.
const EnvDSN = "PFR_TEST_POSTGRES_DSN"

var (
	mu      sync.Mutex
	server  string // admin DSN of the server in use
	started *cluster
	failed  error
	counter atomic.Int64
)

type cluster struct {
	dir  string
	proc *childproc.Process
}

// Main runs the package's tests and stops the cluster they started. Use it
// from TestMain: os.Exit(pgtest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	Stop()
	return code
}

// Stop stops the private cluster, if one was started, and removes its
// folder.
func Stop() {
	mu.Lock()
	defer mu.Unlock()
	if started != nil {
		started.proc.Stop()
		_ = os.RemoveAll(started.dir)
		started = nil
		server = ""
	}
}

// DSN returns the DSN of a new, empty database for t, dropped when t ends.
func DSN(t testing.TB) string {
	t.Helper()
	testkit.Needs(t, "PostgreSQL")
	ctx := testkit.WaitContext(t)
	if _, err := adminDSN(ctx); err != nil {
		t.Fatalf("no PostgreSQL for this test (set %s or install Debian's postgresql; `go test -short` skips it): %v", EnvDSN, err)
	}
	dsn, drop, err := Database(ctx)
	if err != nil {
		t.Fatalf("pgtest: creating a database: %v", err)
	}
	t.Cleanup(drop)
	return dsn
}

// Database makes a new, empty database on PFR_TEST_POSTGRES_DSN's server
// or the private cluster (started on first use), for benchmarks and other
// programs outside `go test`; drop removes it. Call Stop at the end.
func Database(ctx context.Context) (dsn string, drop func(), err error) {
	admin, err := adminDSN(ctx)
	if err != nil {
		return "", nil, err
	}
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return "", nil, err
	}
	defer conn.Close(ctx)
	name := fmt.Sprintf("pfrtest_%d_%d", os.Getpid(), counter.Add(1))
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", nil, err
	}
	u, err := url.Parse(admin)
	if err != nil {
		return "", nil, err
	}
	u.Path = "/" + name
	drop = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if conn, err := pgx.Connect(ctx, admin); err == nil {
			_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			_ = conn.Close(ctx)
		}
	}
	return u.String(), drop, nil
}

// adminDSN returns the DSN to make databases with, starting the private
// cluster on first use (waiting for it while ctx lasts).
func adminDSN(ctx context.Context) (string, error) {
	mu.Lock()
	defer mu.Unlock()
	if server != "" {
		return server, nil
	}
	if dsn := os.Getenv(EnvDSN); dsn != "" {
		server = dsn
		return server, nil
	}
	if failed != nil {
		return "", failed
	}
	c, dsn, err := startCluster(ctx)
	if err != nil {
		failed = err
		return "", err
	}
	started, server = c, dsn
	return server, nil
}

// binDir finds the folder with initdb and postgres: PATH, or Debian's
// /usr/lib/postgresql/<newest>/bin.
func binDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if _, err := exec.LookPath("postgres"); err == nil {
			real, err := filepath.EvalSymlinks(p)
			if err == nil {
				return filepath.Dir(real), nil
			}
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		a, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		b, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return a > b
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("initdb not found in PATH or /usr/lib/postgresql/*/bin")
}

// startCluster runs initdb and postgres in a new temporary folder and
// waits until postgres answers, it exits or ctx ends.
func startCluster(ctx context.Context) (*cluster, string, error) {
	bin, err := binDir()
	if err != nil {
		return nil, "", err
	}
	dir, err := os.MkdirTemp("", "pfr-pgtest-")
	if err != nil {
		return nil, "", err
	}
	ok := false
	defer func() {
		if !ok {
			_ = os.RemoveAll(dir)
		}
	}()
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		// initdb and postgres refuse to run as root.
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, "", fmt.Errorf("running as root and no postgres user to run PostgreSQL as: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, "", err
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres",
		"--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, "", fmt.Errorf("initdb: %w: %s", err, out)
	}
	port, err := testkit.FreePort()
	if err != nil {
		return nil, "", err
	}
	// A throwaway cluster: no fsync (the tests kill gateways, never this
	// server), a socket folder of its own, loopback only.
	pg := exec.Command(filepath.Join(bin, "postgres"), "-D", data,
		"-c", "listen_addresses=127.0.0.1", "-c", "port="+strconv.Itoa(port),
		"-c", "unix_socket_directories="+dir, "-c", "fsync=off",
		"-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections=200")
	pg.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	proc, err := childproc.Start(pg)
	if err != nil {
		return nil, "", err
	}
	dsn := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	for {
		// One attempt's bound, not the wait's: a connection that hangs
		// is tried again.
		attempt, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(attempt, dsn)
		if err == nil {
			_ = conn.Close(attempt)
			cancel()
			break
		}
		cancel()
		select {
		case <-proc.Exited():
			return nil, "", fmt.Errorf("postgres exited: %v: %s", proc.Err(), proc.Output())
		case <-ctx.Done():
			proc.Stop()
			return nil, "", fmt.Errorf("postgres not ready: %v: %s", err, proc.Output())
		case <-time.After(50 * time.Millisecond):
		}
	}
	ok = true
	return &cluster{dir: dir, proc: proc}, dsn, nil
}

// OpenState opens the gateway's state on the database at dsn (migrating
// it), closed when t ends.
func OpenState(t testing.TB, dsn string) *pgstate.DB {
	t.Helper()
	db, err := pgstate.Open(context.Background(), dsn)
	if err != nil {
		t.Fatalf("pgstate.Open: %v", err)
	}
	t.Cleanup(db.Close)
	return db
}
