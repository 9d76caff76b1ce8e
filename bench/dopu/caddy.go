package main

import (
	"fmt"

	"github.com/pfrgateway/caddy-pfr/internal/pfrproc"
)

// baseDomain is the gateway's base domain: under .localhost, as the dev
// issuer requires, and dialled as 127.0.0.1 by the bench client.
const baseDomain = "pfr.localhost"

// pendingBytes is the per-record quota of pending bytes: far above what a
// run drops off, so the quota never refuses a measured drop-off.
const pendingBytes = 64 << 30

// ports are the loopback ports of the bench Caddy, chosen by the kernel and
// held for the run (testkit.Port).
type ports struct {
	gateway int // the gateway's plain-HTTP sites (apex and records)
	admin   int // Caddy's admin endpoint (pprof)
}

// caddyfile renders the bench configuration: one gateway on plain HTTP in
// front of the embedded store, drop-off rate limits off and quotas out of
// reach, so the bench measures the work and not the limiter.
func caddyfile(p ports, workDir string) string {
	return pfrproc.PlainGateway(p.admin, p.gateway, workDir, baseDomain, fmt.Sprintf(`dropoff {
	source_rate -1
	record_rate -1
	pending_per_record 100000
	pending_bytes_per_record %d
}
%s`, int64(pendingBytes), pfrproc.StoreUpstream(workDir)))
}
