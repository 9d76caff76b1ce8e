package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/named"
	"github.com/pfrgateway/caddy-pfr/internal/pebble"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// dnsGatewayConfig serves every record under one wildcard certificate that
// Caddy obtains from Pebble through the DNS-01 challenge, publishing the
// challenge's TXT record with RFC 2136 updates to BIND (dns.providers.
// rfc2136). Names the wildcard does not cover (the apex here; an
// operator's vanity names) stay on demand behind the permission module and
// validate over HTTP-01 or TLS-ALPN-01. %[1]s is the data directory,
// %[2]d/%[3]d the HTTP/HTTPS ports, %[4]s Caddy's storage root, %[5]s the
// ACME directory URL, %[6]s the PEM root of Pebble's own HTTPS
// certificate, %[7]s BIND's address, %[8]s the TSIG key's name.
func dnsGatewayConfig() string {
	return acmeGlobalOptions() + `
(gateway) {
	pfr {
		base_domain pfr.localhost
		data_dir %[1]s
		dev_issuer
		upstream pfr_store {
			path %[1]s/store.db
		}
	}
}

https://*.pfr.localhost:%[3]d {
	tls {
		issuer acme {
			dir %[5]s
			trusted_roots %[6]s
			dns rfc2136 {
				server %[7]s
				key_name %[8]s
				key_alg hmac-sha256
				key {env.PFR_E2E_TSIG_KEY}
				timeout 5s
			}
			resolvers %[7]s
		}
	}
	import gateway
}

https://:%[3]d {
	tls {
		on_demand
		issuer acme {
			dir %[5]s
			trusted_roots %[6]s
		}
	}
	import gateway
}
`
}

// TestWildcardCertificateDNS01 obtains one wildcard certificate for every
// record from a real ACME server (Pebble) through DNS-01, with the
// challenge's TXT record published by RFC 2136 updates, signed with TSIG,
// to a real BIND that Pebble resolves with. Then ten records created at
// once are reachable over TLS at once with that very certificate, and
// Pebble receives no further order. Names outside the wildcard stay on
// demand: the apex gets its own certificate through the permission module
// (HTTP-01 or TLS-ALPN-01, validated for real through BIND's A record),
// unregistered names get none. With BIND stopped, a restarted gateway keeps
// serving the stored wildcard certificate.
func TestWildcardCertificateDNS01(t *testing.T) {
	testkit.Needs(t, "BIND (named) and Pebble")
	ctx := context.Background()
	dns, err := named.Start(ctx, named.Options{
		Zone:    baseDomain,
		Dir:     t.TempDir(),
		Grant:   "zonesub TXT", // the ACME key may change TXT records only
		Records: []string{"@ 60 IN A 127.0.0.1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		dns.Stop()
		if t.Failed() {
			t.Logf("named's output:\n%s", dns.Output())
		}
	})
	serialBefore, err := dns.Serial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pb := startPebbleWith(t, pebble.Options{HTTPPort: httpPort, TLSPort: httpsPort, DNSServer: dns.Addr})

	t.Setenv("PFR_E2E_TSIG_KEY", dns.KeySecret)
	e, config := startACMEGateway(t, pb, func(dir, storage string) string {
		return fmt.Sprintf(dnsGatewayConfig(), dir, httpPort, httpsPort, storage, pb.DirectoryURL, pb.TLSRootFile, dns.Addr, dns.KeyName)
	})

	// Caddy orders the wildcard when the config loads. Until it has it, a
	// name under the base is on demand, and the permission refuses this one
	// (no such record), so only the wildcard can answer it.
	wildcard := waitForWildcard(t, pb, "no-such-record."+baseDomain)
	if !slices.Equal(wildcard.DNSNames, []string{"*." + baseDomain}) {
		t.Fatalf("the wildcard certificate names %v", wildcard.DNSNames)
	}
	pb.checkIssued(t, "*."+baseDomain, wildcard)
	if txt, err := dns.TXT(ctx, "_acme-challenge."+baseDomain); err != nil || len(txt) != 0 {
		t.Errorf("the challenge's TXT record was not cleaned up: %q, %v", txt, err)
	}
	serialAfter, err := dns.Serial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if serialAfter < serialBefore+2 {
		t.Errorf("BIND's serial went from %d to %d: want at least the update that added the challenge and the one that removed it", serialBefore, serialAfter)
	}
	for _, want := range []string{"/key pfr-acme-update: updating zone 'pfr.localhost/IN': adding an RR at '_acme-challenge.pfr.localhost' TXT", "/key pfr-acme-update: updating zone 'pfr.localhost/IN': deleting an RR at _acme-challenge.pfr.localhost TXT"} {
		if !strings.Contains(dns.Output(), want) {
			t.Errorf("BIND's log lacks %q", want)
		}
	}

	// The apex is outside the wildcard: on demand, permission-checked, and
	// validated by Pebble over HTTP through BIND's A record.
	token := e.token("dns-owner")
	slugs := make([]string, 10)
	for i := range slugs {
		slugs[i] = fmt.Sprintf("wild-%02d", i)
	}
	patients := make([]string, len(slugs))
	var wg sync.WaitGroup
	for i, slug := range slugs {
		wg.Go(func() {
			record := e.createRecord(token, slug, "Wildcard", fmt.Sprint(i))
			patients[i], _ = record["patientId"].(string)
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	pb.checkIssued(t, baseDomain, pb.handshake(t, baseDomain))
	ordersBefore := pb.Orders()
	if ordersBefore != 2 {
		t.Errorf("pebble received %d orders, want 2 (the wildcard and the apex)", ordersBefore)
	}

	// Ten new records at once, each over its own TLS connection, each
	// served the wildcard certificate.
	serials := make([]string, len(slugs))
	for i, slug := range slugs {
		wg.Go(func() {
			client := pb.client()
			client.Transport.(*http.Transport).DisableKeepAlives = true
			req, err := http.NewRequest("GET", recordURL(slug, "/Patient/"+patients[i]), nil)
			if err != nil {
				t.Error(err)
				return
			}
			req.Header.Set("Authorization", "Bearer "+token)
			res, err := client.Do(req)
			if err != nil {
				t.Errorf("GET %s over TLS: %v", slug, err)
				return
			}
			defer res.Body.Close()
			if res.StatusCode != http.StatusOK {
				t.Errorf("GET %s's Patient: status %d", slug, res.StatusCode)
			}
			serials[i] = res.TLS.PeerCertificates[0].SerialNumber.Text(16)
		})
	}
	wg.Wait()
	for i, serial := range serials {
		if serial != wildcard.SerialNumber.Text(16) {
			t.Errorf("%s was served certificate %s, want the wildcard %s", slugs[i], serial, wildcard.SerialNumber.Text(16))
		}
	}
	if n := pb.Orders(); n != ordersBefore {
		t.Errorf("pebble received %d more orders for ten new records, want none", n-ordersBefore)
	}

	// Names outside the wildcard that are no record stay without a
	// certificate, and no order for them reaches Pebble.
	for _, name := range []string{"evil.example.com", "a.b." + baseDomain} {
		if cert, err := tlsHandshake(name); err == nil {
			t.Errorf("handshake for %s got a certificate for %v", name, cert.DNSNames)
		}
	}
	// A name under the base that is no record completes the handshake (the
	// wildcard covers it) and gets the gateway's 404.
	e.do("GET", recordURL("nobody-here", "/metadata"), "", nil).ExpectOutcome(t, http.StatusNotFound, "a name under the wildcard that is no record")

	// BIND goes down; a restarted gateway (empty certificate cache, same
	// storage) serves the stored wildcard certificate without an order.
	// Caddy loads a managed certificate from storage in the background
	// after a config load (certmagic's ManageAsync), so the first
	// handshakes may find none yet: wait for it, as for the first order.
	dns.Stop()
	dropCertificateCache(t)
	mustLoadCaddy(t, config, "caddyfile")
	if again := waitForWildcard(t, pb, slugs[0]+"."+baseDomain); again.SerialNumber.Cmp(wildcard.SerialNumber) != 0 {
		t.Errorf("after a restart with the DNS server down, %s got certificate %s, want the stored wildcard %s",
			slugs[0], again.SerialNumber.Text(16), wildcard.SerialNumber.Text(16))
	}
	if n := pb.Orders(); n != ordersBefore {
		t.Errorf("the restart placed %d orders, want none", n-ordersBefore)
	}

	pb.Stop()
	// Two orders, each with one validated authorization; a wildcard's
	// authorization names the base domain.
	checkPebbleOrders(t, pb.Output(), []string{baseDomain, baseDomain})
	// A wildcard's authorization validates only by DNS-01 (RFC 8555
	// section 7.1.3): Pebble took up exactly one such task.
	if n := strings.Count(pb.Output(), "Wildcard:true}"); n != 1 {
		t.Errorf("pebble validated %d wildcard authorizations, want 1", n)
	}
}

// waitForWildcard polls (bounded) a handshake for name, verifying the
// chain against Pebble's root only, until a certificate is served.
func waitForWildcard(t *testing.T, pb *pebbleServer, name string) *x509.Certificate {
	t.Helper()
	var leaf *x509.Certificate
	testkit.WaitFor(t, "a certificate for "+name, 500*time.Millisecond, func() error {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", fmt.Sprintf("127.0.0.1:%d", httpsPort),
			&tls.Config{ServerName: name, RootCAs: pb.RootPool()})
		if err != nil {
			return err
		}
		leaf = conn.ConnectionState().PeerCertificates[0]
		conn.Close()
		return nil
	})
	return leaf
}
