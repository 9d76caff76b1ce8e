package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/pfrgateway/caddy-pfr/internal/cli"
	"github.com/pfrgateway/caddy-pfr/internal/pgstate"
)

func init() {
	// The token command is internal/cli's: pfr runs it before Caddy sees it;
	// a Caddy built with xcaddy gets it here, with the same flags and usage.
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "token",
		Usage: "--data-dir <dir> --sub <subject> [--scope <scopes>] [--aud <audience>] [--ttl <duration>]",
		Short: "Prints an access token from the gateway's development issuer",
		Long: `
Prints a signed JWT from the development token issuer whose key lives in the
gateway's data directory; 'token --help' says more.`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.DisableFlagParsing = true
			cmd.RunE = func(_ *cobra.Command, args []string) error {
				if code := cli.Run(append([]string{"token"}, args...), &cli.Env{Stdout: os.Stdout, Stderr: os.Stderr}); code != cli.ExitOK {
					os.Exit(code)
				}
				return nil
			}
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
