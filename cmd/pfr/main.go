// Command pfr is Caddy with the caddy-pfr modules linked in (exactly what
// `xcaddy build --with github.com/pfrgateway/caddy-pfr` produces), with
// caddy-pfr's own commands (token, records, version) in front of Caddy's and
// listed first in its help. The commands live in internal/cli; a usage error
// of one of Caddy's commands is caught here (exit 2) before Caddy runs it.
package main

import (
	"fmt"
	"os"
	"runtime/debug"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	// Caddy's standard modules, as in Caddy's own main.
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	// The caddy-pfr modules.
	_ "github.com/pfrgateway/caddy-pfr"
	"github.com/pfrgateway/caddy-pfr/internal/cli"
)

func main() {
	caddyCommands := map[string]string{}
	for name, c := range caddycmd.Commands() {
		caddyCommands[name] = c.Short
	}
	os.Exit(cli.Run(os.Args[1:], &cli.Env{
		Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv,
		CaddyCommands: caddyCommands,
		Caddy: func(args []string) int {
			os.Args = append(os.Args[:1:1], args...)
			caddycmd.Main() // exits with Caddy's code when it fails
			return cli.ExitOK
		},
		CheckCaddyArgs: checkCaddyArgs,
		Version:        version(),
	}))
}

// checkCaddyArgs parses args against Caddy's command args[0] as Caddy's own
// command line would, without running it, and returns its usage and what is
// wrong with them.
func checkCaddyArgs(args []string) (string, error) {
	c, ok := caddycmd.Commands()[args[0]]
	if !ok {
		return "", nil
	}
	cmd := &cobra.Command{Use: c.Name + " " + c.Usage, Short: c.Short, Long: c.Long}
	if c.CobraFunc != nil {
		c.CobraFunc(cmd)
	} else if c.Flags != nil {
		cmd.Flags().AddGoFlagSet(c.Flags)
	}
	if cmd.DisableFlagParsing {
		return "", nil
	}
	cmd.InitDefaultHelpFlag()
	usage := fmt.Sprintf("Usage: pfr %s %s\n\n%s\n\nFlags:\n%s", c.Name, c.Usage, c.Short, cmd.Flags().FlagUsages())
	if err := cmd.ParseFlags(args[1:]); err != nil {
		return usage, err
	}
	if cmd.Args != nil {
		if err := cmd.Args(cmd, cmd.Flags().Args()); err != nil {
			return usage, err
		}
	}
	return usage, nil
}

// version names this build of caddy-pfr and the Caddy it contains.
func version() string {
	rev := "(unknown revision)"
	if info, ok := debug.ReadBuildInfo(); ok {
		rev = info.Main.Version
		var vcs, modified string
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				vcs = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					modified = "+dirty"
				}
			}
		}
		if len(vcs) > 12 {
			vcs = vcs[:12]
		}
		if vcs != "" {
			rev += " " + vcs + modified
		}
	}
	_, full := caddy.Version()
	return fmt.Sprintf("caddy-pfr %s\nCaddy %s", rev, full)
}
