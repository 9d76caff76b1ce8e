package cli

import (
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/pfrgateway/caddy-pfr/auth"
)

const tokenUsage = `Usage: pfr token --data-dir <dir> --sub <subject> [--scope <scopes>] [--aud <audience>]... [--ttl <duration>]

Prints an access token (a signed JWT) from the development issuer whose key
lives in the gateway's data directory (created there if it does not exist
yet). A gateway configured with dev_issuer and the same data_dir trusts it;
the default audience is accepted on the apex and on every record of that
gateway. The development issuer is for localhost only: the gateway refuses it
unless its base_domain is localhost or under .localhost.

  --data-dir <dir>    the gateway's data_dir (required; ./pfr-data in the quickstart)
  --sub <subject>     who the token is for, e.g. john (required)
  --scope <scopes>    space-separated SMART scopes (default "openid patient/*.cruds")
  --aud <audience>    an audience, repeatable (default: the dev issuer's own)
  --ttl <duration>    lifetime as a Go duration, e.g. 30m or 2h (default 1h)

Example:
  TOKEN=$(pfr token --data-dir ./pfr-data --sub john)
`

// repeated is a flag that may be given several times.
type repeated []string

func (r *repeated) String() string     { return strings.Join(*r, " ") }
func (r *repeated) Set(v string) error { *r = append(*r, v); return nil }

func tokenCommand() *command {
	return &command{name: "token", usage: tokenUsage,
		short: "Prints an access token from the gateway's development issuer (localhost only)",
		run:   runToken}
}

func runToken(env *Env, args []string) int {
	if len(args) == 0 {
		fmt.Fprint(env.Stderr, tokenUsage)
		return ExitUsage
	}
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	dir := fs.String("data-dir", "", "")
	sub := fs.String("sub", "", "")
	scope := fs.String("scope", "openid patient/*.cruds", "")
	ttl := fs.Duration("ttl", time.Hour, "")
	var aud repeated
	fs.Var(&aud, "aud", "")
	rest, err := parse(env, fs, tokenUsage, args)
	switch {
	case errors.Is(err, errHelp):
		return ExitOK
	case err != nil:
		return usageError(env, tokenUsage, "token: %v", err)
	case len(rest) > 0:
		return usageError(env, tokenUsage, "token takes no arguments, only flags (got %q)", rest[0])
	case *dir == "" || strings.TrimSpace(*sub) == "":
		return usageError(env, tokenUsage, "token: --data-dir and --sub are required")
	case *ttl <= 0:
		return usageError(env, tokenUsage, "token: --ttl must be positive")
	}
	dev, err := auth.LoadOrCreateDevIssuer(*dir)
	if err != nil {
		fmt.Fprintf(env.Stderr, "pfr token: %v\n", err)
		return ExitError
	}
	tok, err := dev.Mint(strings.TrimSpace(*sub), *scope, aud, *ttl)
	if err != nil {
		fmt.Fprintf(env.Stderr, "pfr token: %v\n", err)
		return ExitError
	}
	fmt.Fprintln(env.Stdout, tok)
	return ExitOK
}
