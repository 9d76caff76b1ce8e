package caddymodule

import (
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/pfrgateway/caddy-pfr/backend"
)

// partitionSyntax is each partition mode's Caddyfile syntax after
// `partition <mode>`: its arguments and block, keyed by the mode's name as
// backend registers the mode itself (backend/mode_*.go). A new mode is its
// file in backend and its entry here; TestPartitionSyntaxForEveryMode
// checks that none is missing.
var partitionSyntax = map[backend.Mode]func(d *caddyfile.Dispenser, pc *PartitionConfig) error{
	// partition header [<header>]
	backend.ModeHeader: func(d *caddyfile.Dispenser, pc *PartitionConfig) error {
		if d.NextArg() {
			pc.Header = d.Val()
		}
		return nil
	},
	// partition url_prefix
	backend.ModeURLPrefix: func(*caddyfile.Dispenser, *PartitionConfig) error { return nil },
	// partition tenant_header [<header>] {
	//     datastore_header <header>
	//     datastore_id     <id>
	// }
	backend.ModeTenantHeader: func(d *caddyfile.Dispenser, pc *PartitionConfig) error {
		if d.NextArg() {
			pc.TenantHeader = d.Val()
		}
		for nesting := d.Nesting(); d.NextBlock(nesting); {
			switch d.Val() {
			case "datastore_header":
				if err := oneArg(d, &pc.DataStoreHeader); err != nil {
					return err
				}
			case "datastore_id":
				if err := oneArg(d, &pc.DataStoreID); err != nil {
					return err
				}
			default:
				return d.Errf("unrecognized tenant_header option '%s'", d.Val())
			}
		}
		return nil
	},
	// partition per_record_url <url template>
	backend.ModePerRecordURL: func(d *caddyfile.Dispenser, pc *PartitionConfig) error {
		if !d.NextArg() {
			return d.ArgErr()
		}
		pc.URLTemplate = d.Val()
		return nil
	},
}

// parsePartition parses `partition <mode> …` by the mode's own syntax.
func parsePartition(d *caddyfile.Dispenser, pc *PartitionConfig) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	pc.Mode = d.Val()
	parse, ok := partitionSyntax[backend.Mode(pc.Mode)]
	if !ok {
		names := make([]string, 0, len(backend.Modes()))
		for _, m := range backend.Modes() {
			names = append(names, string(m))
		}
		return d.Errf("unknown partition mode '%s' (want %s)", pc.Mode, strings.Join(names, ", "))
	}
	if err := parse(d, pc); err != nil {
		return err
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}
