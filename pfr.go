// Package pfr is caddy-pfr: a Caddy-based gateway that gives every person a
// Personal FHIR Record (PFR), their own FHIR R4 server address, in front of
// FHIR servers that organizations already run.
//
// Importing this package registers every caddy-pfr module with Caddy, so that
//
//	xcaddy build --with github.com/pfrgateway/caddy-pfr
//
// builds a Caddy with the gateway (http.handlers.pfr), the embedded FHIR store
// (http.handlers.pfr_store) and the on-demand TLS permission (tls.permission.pfr).
package pfr

import (
	// Registers the Caddy modules and the `pfr` CLI subcommands.
	_ "github.com/pfrgateway/caddy-pfr/caddymodule"
)
