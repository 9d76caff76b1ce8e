package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/internal/pgstate"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "token",
		Usage: "--data-dir <dir> --sub <subject> [--scope <scopes>] [--aud <audience>] [--ttl <duration>]",
		Short: "Prints an access token from the gateway's development issuer",
		Long: `
Prints a signed JWT from the development token issuer whose key lives in the
gateway's data directory (the key is created if it does not exist yet). A
gateway configured with dev_issuer and the same data_dir trusts it. The
default audience is accepted on the apex and on every record of that gateway.

The development issuer is for localhost only: the gateway refuses it unless
its base_domain is localhost or under .localhost.`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.Flags().String("data-dir", "", "the gateway's data_dir (required)")
			cmd.Flags().String("sub", "", "the token's subject, i.e. the user (required)")
			cmd.Flags().String("scope", "openid patient/*.cruds", "space-separated scopes")
			cmd.Flags().StringSlice("aud", nil, "audience (repeatable); default: the dev issuer's audience")
			cmd.Flags().Duration("ttl", time.Hour, "lifetime, as a Go duration (e.g. 30m, 2h)")
			cmd.RunE = caddycmd.WrapCommandFuncForCobra(cmdToken)
		},
	})
}

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "migrate",
		Usage: "[--postgres <dsn>]",
		Short: "Brings the gateway's PostgreSQL schema up to date",
		Long: `
Applies the schema migrations this binary carries to the PostgreSQL database
of 'state postgres' and prints the schema version. Every node also does this
at start (several nodes starting together wait for each other on an advisory
lock, so each migration runs once); run it by hand to migrate before a
rolling upgrade. A database whose schema is newer than the binary is refused.
The DSN comes from --postgres or the PFR_POSTGRES_DSN environment variable
(which keeps a password out of the process list).`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.Flags().String("postgres", "", "PostgreSQL DSN (default: $PFR_POSTGRES_DSN)")
			cmd.RunE = caddycmd.WrapCommandFuncForCobra(cmdMigrate)
		},
	})
}

func cmdMigrate(fl caddycmd.Flags) (int, error) {
	dsn := fl.String("postgres")
	if dsn == "" {
		dsn = os.Getenv("PFR_POSTGRES_DSN")
	}
	if dsn == "" {
		return caddy.ExitCodeFailedStartup, errors.New("--postgres or PFR_POSTGRES_DSN is required")
	}
	ctx, cancel := context.WithTimeout(context.Background(), pgStartTimeout)
	defer cancel()
	// Open migrates; Migrate then reports the version reached.
	db, err := pgstate.Open(ctx, dsn)
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	defer db.Close()
	version, err := db.Version(ctx)
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	fmt.Fprintf(os.Stdout, "schema at version %d\n", version)
	return caddy.ExitCodeSuccess, nil
}

func cmdToken(fl caddycmd.Flags) (int, error) {
	dir, sub := fl.String("data-dir"), strings.TrimSpace(fl.String("sub"))
	if dir == "" || sub == "" {
		return caddy.ExitCodeFailedStartup, errors.New("--data-dir and --sub are required")
	}
	ttl := fl.Duration("ttl")
	if ttl <= 0 {
		return caddy.ExitCodeFailedStartup, errors.New("--ttl must be positive")
	}
	auds, err := fl.GetStringSlice("aud")
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	dev, err := auth.LoadOrCreateDevIssuer(dir)
	if err != nil {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("dev issuer: %w", err)
	}
	tok, err := dev.Mint(sub, fl.String("scope"), auds, ttl)
	if err != nil {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("minting token: %w", err)
	}
	fmt.Fprintln(os.Stdout, tok)
	return caddy.ExitCodeSuccess, nil
}
