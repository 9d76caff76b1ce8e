package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/jackc/pgx/v5"
	"github.com/spf13/pflag"

	"github.com/pfrgateway/caddy-pfr/internal/pgstate"
	"github.com/pfrgateway/caddy-pfr/internal/pgtest"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
	"github.com/pfrgateway/caddy-pfr/internal/testkit/incaddy"
)

// TestMain keeps everything the in-process Caddy writes (its data and
// autosaved config) in a temporary folder, and stops the PostgreSQL the
// tests started.
func TestMain(m *testing.M) {
	home, err := incaddy.IsolateHome("pfr-caddymodule-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := pgtest.Main(m)
	_ = os.RemoveAll(home)
	os.Exit(code)
}

// gatewayConfig is a Caddy config with one pfr handler.
func gatewayConfig(t *testing.T, state map[string]any, upstream map[string]any) *caddy.Config {
	t.Helper()
	raw, err := json.Marshal(map[string]any{
		"admin":   map[string]any{"disabled": true},
		"storage": map[string]any{"module": "file_system", "root": t.TempDir()},
		"apps": map[string]any{"http": map[string]any{"servers": map[string]any{"s": map[string]any{
			"listen": []string{"127.0.0.1:0"},
			"routes": []any{map[string]any{"handle": []any{map[string]any{
				"handler": "pfr", "base_domain": "pfr.localhost", "dev_issuer": true,
				"data_dir": t.TempDir(), "state": state, "upstream": upstream,
			}}}},
		}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	var cfg caddy.Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	return &cfg
}

// With state postgres the gateway is one node of several: an embedded
// store on this node's disk is refused, naming why.
func TestStorePostgresRefusesEmbeddedStore(t *testing.T) {
	cfg := gatewayConfig(t, map[string]any{"postgres": "postgres://nobody@127.0.0.1:1/none"},
		map[string]any{"handler": "pfr_store", "path": t.TempDir() + "/store.db"})
	err := caddy.Validate(cfg)
	if err == nil || !strings.Contains(err.Error(), "pfr_store") || !strings.Contains(err.Error(), "state is postgres") {
		t.Fatalf("Validate = %v, want the refusal of pfr_store in a cluster", err)
	}
}

// A gateway on PostgreSQL provisions: it connects, migrates the schema and
// keeps its state there.
func TestStatePostgresProvisions(t *testing.T) {
	dsn := pgtest.DSN(t)
	t.Setenv("PFR_TEST_STATE_DSN", dsn)
	cfg := gatewayConfig(t, map[string]any{"postgres": "{env.PFR_TEST_STATE_DSN}"},
		map[string]any{"handler": "reverse_proxy", "upstreams": []any{map[string]any{"dial": "127.0.0.1:9"}}})
	if err := caddy.Validate(cfg); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM schema_migrations").Scan(&n); err != nil || n == 0 {
		t.Fatalf("schema_migrations: %d rows, %v", n, err)
	}
	// A wrong DSN is a clear error, not a hang or a panic.
	bad := gatewayConfig(t, map[string]any{"postgres": "postgres://nobody@127.0.0.1:1/none?connect_timeout=2"},
		map[string]any{"handler": "reverse_proxy", "upstreams": []any{map[string]any{"dial": "127.0.0.1:9"}}})
	if err := caddy.Validate(bad); err == nil || !strings.Contains(err.Error(), "state postgres") {
		t.Fatalf("Validate with an unreachable database = %v", err)
	}
}

func TestMigrateCommand(t *testing.T) {
	dsn := pgtest.DSN(t)
	fs := pflag.NewFlagSet("migrate", pflag.ContinueOnError)
	fs.String("postgres", "", "")
	if code, err := cmdMigrate(caddycmd.Flags{FlagSet: fs}); err == nil || code == 0 {
		t.Fatalf("migrate without a DSN: %d, %v", code, err)
	}
	t.Setenv("PFR_POSTGRES_DSN", dsn)
	for range 2 { // the second run finds nothing to do
		if code, err := cmdMigrate(caddycmd.Flags{FlagSet: fs}); err != nil || code != 0 {
			t.Fatalf("migrate: %d, %v", code, err)
		}
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	migs, _ := pgstate.Migrations()
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM schema_migrations").Scan(&n); err != nil || n != len(migs) {
		t.Fatalf("schema_migrations: %d rows (%v), want %d", n, err, len(migs))
	}
}

// Caddy on caddy.storage.postgres: the certificate it manages (from its
// internal CA here) is stored in PostgreSQL, where every node finds it.
func TestPostgresStorageInCaddy(t *testing.T) {
	dsn := pgtest.DSN(t)
	cfg, err := adapt(t, `{
	admin off
	storage postgres `+dsn+`
	skip_install_trust
	local_certs
	auto_https disable_redirects
}
node.localhost:`+strconv.Itoa(testkit.Reserve(t).Number)+` {
	bind 127.0.0.1
	respond "ok"
}`)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(testkit.JSONString(t, cfg), `"storage":{"dsn":"`+dsn+`","module":"postgres"}`) {
		t.Fatalf("adapted config lacks the storage: %s", testkit.JSONString(t, cfg))
	}
	if err := caddy.Load([]byte(testkit.JSONString(t, cfg)), true); err != nil {
		t.Fatalf("loading Caddy: %v", err)
	}
	defer func() { _ = caddy.Stop() }()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	testkit.WaitFor(t, "the certificate of node.localhost in PostgreSQL", 100*time.Millisecond, func() error {
		rows, err := conn.Query(ctx, "SELECT key FROM pfr_certs WHERE key LIKE '%node.localhost%'")
		if err != nil {
			t.Fatal(err)
		}
		keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) < 2 {
			return fmt.Errorf("the keys are %v", keys)
		}
		return nil
	})
}
