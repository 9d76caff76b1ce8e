// Command tls measures the first visit of a new record over HTTPS with its
// certificate obtained on demand (one ACME order per record, as the
// gateway does by default) against the same visit under one wildcard
// certificate obtained beforehand through the ACME DNS-01 challenge. One
// Caddy process (cmd/pfr) serves both, with certificates from a real ACME
// server (Pebble) that validates for real: the on-demand certificates over
// HTTP-01 or TLS-ALPN-01, the wildcard over DNS-01, whose TXT records the
// gateway publishes with RFC 2136 updates to a real BIND that Pebble
// resolves with. Visits alternate between the two kinds, so the ratio
// compares them under the same load.
//
//	go run ./bench/tls [-n visits] [-pfr binary]
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"time"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/internal/named"
	"github.com/pfrgateway/caddy-pfr/internal/pebble"
	"github.com/pfrgateway/caddy-pfr/internal/pfrproc"
)

// The zone BIND serves, and the two gateways' base domains inside it
// (under .localhost, as the dev issuer requires; the bench dials every
// name to 127.0.0.1, Pebble resolves them through BIND).
const (
	zone         = "pfr.localhost"
	onDemandBase = "od." + zone // records get certificates on demand
	wildcardBase = "wc." + zone // records are covered by *.wc.pfr.localhost
)

// options are the command's flags.
type options struct {
	visits    int    // first visits measured per kind
	pfrBinary string // a built pfr; empty: build cmd/pfr
}

func main() {
	var o options
	flag.IntVar(&o.visits, "n", 10, "first visits of new records measured per kind (on demand, wildcard)")
	flag.StringVar(&o.pfrBinary, "pfr", "", "a built pfr binary (default: go build github.com/pfrgateway/caddy-pfr/cmd/pfr)")
	flag.Parse()
	pfrproc.Main("bench/tls", func(ctx context.Context) error { return run(ctx, o, os.Stdout, os.Stderr) })
}

// ports are the bench Caddy's kernel-chosen loopback ports.
type ports struct {
	http, https, admin int
}

// run does one whole bench: BIND, Pebble and Caddy up, the wildcard
// obtained, first visits measured alternately, report, everything down.
// A visit that is not served as it must be fails the run.
func run(ctx context.Context, o options, out, logw io.Writer) error {
	if o.visits < 1 {
		return errors.New("-n must be at least 1")
	}
	caddy, err := pfrproc.NewBench(ctx, "tls", o.pfrBinary, 3, logw)
	if err != nil {
		return err
	}
	defer caddy.Close()
	p := ports{http: caddy.Ports[0], https: caddy.Ports[1], admin: caddy.Ports[2]}

	dnsDir := filepath.Join(caddy.WorkDir, "named")
	pebbleDir := filepath.Join(caddy.WorkDir, "pebble")
	for _, d := range []string{dnsDir, pebbleDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	fmt.Fprintln(logw, "starting BIND and Pebble …")
	dns, err := named.Start(ctx, named.Options{
		Zone:  zone,
		Dir:   dnsDir,
		Grant: "zonesub TXT",
		Records: []string{
			"od 60 IN A 127.0.0.1", "*.od 60 IN A 127.0.0.1", // Pebble validates on-demand names over HTTP
		},
	})
	if err != nil {
		return err
	}
	defer dns.Stop()
	ca, err := pebble.Start(ctx, pebble.Options{HTTPPort: p.http, TLSPort: p.https, DNSServer: dns.Addr, Dir: pebbleDir})
	if err != nil {
		return err
	}
	defer ca.Stop()

	started := time.Now()
	ready := fmt.Sprintf("http://%s:%d/", onDemandBase, p.http) // any answer: Caddy is up
	if err := caddy.Start(ctx, caddyfile(p, caddy.WorkDir, ca, dns), ready, 0); err != nil {
		return err
	}
	fmt.Fprintln(logw, "waiting for the wildcard certificate …")
	wildcard, err := waitForCertificate(ctx, ca.RootPool(), p.https, "probe."+wildcardBase)
	if err != nil {
		return fmt.Errorf("%w\ncaddy log:\n%s", err, caddy.LogTail())
	}
	wildcardTime := time.Since(started)
	if !slices.Equal(wildcard.DNSNames, []string{"*." + wildcardBase}) {
		return fmt.Errorf("the wildcard site was served a certificate for %v", wildcard.DNSNames)
	}

	b := &bench{ca: ca}
	for _, base := range []string{onDemandBase, wildcardBase} {
		g, err := newGateway(filepath.Join(caddy.WorkDir, base), base, p.https, ca.RootPool())
		if err != nil {
			return err
		}
		b.gateways = append(b.gateways, g)
	}
	fmt.Fprintf(out, "bench/tls: %d CPUs, %s %s/%s; pfr at %s; Pebble validating through BIND; -n %d\n\n",
		runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH, caddy.Revision(ctx), o.visits)

	results := []*result{{kind: "on demand", base: onDemandBase}, {kind: "wildcard", base: wildcardBase}}
	for i := range o.visits {
		fmt.Fprintf(logw, "first visits %d/%d …\n", i+1, o.visits)
		for k, r := range results {
			v, err := b.firstVisit(ctx, b.gateways[k], fmt.Sprintf("visit-%d", i+1))
			if err != nil {
				return fmt.Errorf("%s: %w\ncaddy log:\n%s", r.kind, err, caddy.LogTail())
			}
			r.add(v)
		}
	}
	report(out, results, wildcardTime)
	return check(results, wildcard)
}

// caddyfile renders the bench configuration: the wildcard gateway (apex
// and *.wc.pfr.localhost through DNS-01 with dns.providers.rfc2136) and,
// for every other name, the on-demand gateway behind the permission
// module, both with certificates from Pebble.
func caddyfile(p ports, workDir string, ca *pebble.Server, dns *named.Server) string {
	return fmt.Sprintf(`{
	admin 127.0.0.1:%[1]d
	persist_config off
	default_bind 127.0.0.1
	http_port %[2]d
	https_port %[3]d
	skip_install_trust
	storage file_system {
		root %[4]s/caddy
	}
	on_demand_tls {
		permission pfr {
			base_domain %[5]s
			data_dir %[4]s/%[5]s
		}
	}
}

https://%[6]s:%[3]d, https://*.%[6]s:%[3]d {
	tls {
		issuer acme {
			dir %[7]s
			trusted_roots %[8]s
			dns rfc2136 {
				server %[9]s
				key_name %[10]s
				key %[11]s
			}
			resolvers %[9]s
		}
	}
	pfr {
		base_domain %[6]s
		data_dir %[4]s/%[6]s
		dev_issuer
		upstream pfr_store {
			path %[4]s/%[6]s/store.db
		}
	}
}

https://:%[3]d {
	tls {
		on_demand
		issuer acme {
			dir %[7]s
			trusted_roots %[8]s
		}
	}
	pfr {
		base_domain %[5]s
		data_dir %[4]s/%[5]s
		dev_issuer
		upstream pfr_store {
			path %[4]s/%[5]s/store.db
		}
	}
}
`, p.admin, p.http, p.https, workDir, onDemandBase, wildcardBase, ca.DirectoryURL, ca.TLSRootFile, dns.Addr, dns.KeyName, dns.KeySecret)
}

// waitForCertificate polls (bounded) a handshake for name, verifying the
// chain against roots, until a certificate is served.
func waitForCertificate(ctx context.Context, roots *x509.CertPool, port int, name string) (*x509.Certificate, error) {
	var lastErr error
	dialer := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: &tls.Config{ServerName: name, RootCAs: roots}}
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); {
		conn, err := dialer.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			leaf := conn.(*tls.Conn).ConnectionState().PeerCertificates[0]
			_ = conn.Close()
			return leaf, nil
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return nil, fmt.Errorf("no certificate for %s within 2 minutes: %v", name, lastErr)
}

// newGateway returns the bench's client of one gateway, with a token of
// the records' owner from that gateway's development issuer.
func newGateway(dataDir, base string, port int, roots *x509.CertPool) (*gateway, error) {
	dev, err := auth.LoadOrCreateDevIssuer(dataDir)
	if err != nil {
		return nil, fmt.Errorf("loading the dev issuer of %s: %w", base, err)
	}
	token, err := dev.Mint("bench-owner", "openid patient/*.cruds", nil, time.Hour)
	if err != nil {
		return nil, fmt.Errorf("minting a token: %w", err)
	}
	transport := pfrproc.LocalTransport()
	transport.TLSClientConfig = &tls.Config{RootCAs: roots}
	return &gateway{base: base, port: port, token: token, roots: roots, api: pfrproc.LocalClient(time.Minute, transport)}, nil
}
