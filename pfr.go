// Package pfr is caddy-pfr: a Caddy-based gateway that gives every person a
// Personal FHIR Record (PFR), their own FHIR R4 server address, in front of
// FHIR servers that organizations already run.
//
// Importing this package registers every caddy-pfr module with Caddy, so that
//
//	xcaddy build --with github.com/pfrgateway/caddy-pfr
//
// builds a Caddy with the gateway (http.handlers.pfr), the embedded FHIR store
// (http.handlers.pfr_store), the on-demand TLS permission (tls.permission.pfr)
// and an RFC 2136 DNS provider for wildcard certificates through the ACME
// DNS-01 challenge (dns.providers.rfc2136).
package pfr

import (
	// Registers the Caddy modules and the `pfr` CLI subcommands.
	_ "github.com/pfrgateway/caddy-pfr/caddymodule"
)
