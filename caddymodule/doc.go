// Package caddymodule is the Caddy glue of caddy-pfr: module structs,
// provisioning, Caddyfile parsing, CLI subcommands. The logic lives in plain
// packages (gateway, store, auth, backend, tenancy, dopu, fhir) that test
// without Caddy.
package caddymodule
