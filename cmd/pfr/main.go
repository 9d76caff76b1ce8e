// Command pfr is Caddy with the caddy-pfr modules linked in: exactly what
// `xcaddy build --with github.com/pfrgateway/caddy-pfr` produces.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// Caddy's standard modules, as in Caddy's own main.
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	// The caddy-pfr modules.
	_ "github.com/pfrgateway/caddy-pfr"
)

func main() {
	caddycmd.Main()
}
