package pfrproc

import (
	"fmt"
	"strings"
)

// PlainGateway is the Caddyfile of one gateway on plain HTTP (no TLS, no
// ACME) for a bench: admin on 127.0.0.1:admin (pprof), Caddy's storage and
// the gateway's data under workDir, every name below baseDomain on port,
// the development issuer, and lines added inside the pfr block (an
// upstream, drop-off limits), one directive per line, without indent.
func PlainGateway(admin, port int, workDir, baseDomain, lines string) string {
	var inner strings.Builder
	for _, l := range strings.Split(strings.Trim(lines, "\n"), "\n") {
		if l != "" {
			inner.WriteString("\t\t" + l + "\n")
		}
	}
	return fmt.Sprintf(`{
	admin 127.0.0.1:%[1]d
	persist_config off
	default_bind 127.0.0.1
	auto_https off
	skip_install_trust
	storage file_system {
		root %[2]s/caddy
	}
}

http://%[3]s:%[4]d, http://*.%[3]s:%[4]d {
	pfr {
		base_domain %[3]s
		data_dir %[2]s/gateway
		dev_issuer
%[5]s	}
}
`, admin, workDir, baseDomain, port, inner.String())
}

// StoreUpstream is the pfr block's upstream line for the embedded store in
// workDir/store.db.
func StoreUpstream(workDir string) string {
	return fmt.Sprintf("upstream pfr_store {\n\tpath %s/store.db\n}", workDir)
}
