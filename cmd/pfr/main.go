// Command pfr is Caddy with the caddy-pfr modules linked in (exactly what
// `xcaddy build --with github.com/pfrgateway/caddy-pfr` produces), with
// caddy-pfr's own commands (token, records, version) in front of Caddy's and
// listed first in its help. The commands live in internal/cli.
package main

import (
	"fmt"
	"os"
	"runtime/debug"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

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
		Version: version(),
	}))
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
