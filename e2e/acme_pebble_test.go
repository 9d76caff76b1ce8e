package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/internal/pebble"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// pebbleSlug is this test's record; no other test uses it, so no certificate
// another test left in Caddy's in-memory cache can answer for its name.
const pebbleSlug = "pebble-home"

// acmeGlobalOptions are the global options of the gateways that get their
// certificates from Pebble: %[1]s is the data directory, %[3]d the HTTPS
// port, %[4]s Caddy's storage root.
func acmeGlobalOptions() string {
	return "{\n" + processOptions() + `	storage file_system {
		root %[4]s
	}
	on_demand_tls {
		permission pfr {
			base_domain pfr.localhost
			data_dir %[1]s
		}
	}
}
`
}

// pebbleGatewayConfig is gatewayConfig with certificates from an ACME server
// instead of Caddy's local CA: %[1]s is the data directory, %[2]d/%[3]d the
// HTTP/HTTPS ports, %[4]s Caddy's storage root, %[5]s the ACME directory URL,
// %[6]s the PEM file of the root that signs the ACME server's own HTTPS
// certificate.
func pebbleGatewayConfig() string {
	return acmeGlobalOptions() + `
https://pfr.localhost:%[3]d, https://*.pfr.localhost:%[3]d {
	tls {
		on_demand
		issuer acme {
			dir %[5]s
			trusted_roots %[6]s
		}
	}
	pfr {
		base_domain pfr.localhost
		data_dir %[1]s
		dev_issuer
		upstream pfr_store {
			path %[1]s/store.db
		}
	}
}
`
}

// emptyCaddyConfig keeps only the admin endpoint: loading it stops Caddy's TLS
// app without a successor, and Caddy then drops its process-wide certificate
// cache (caddytls.TLS.Cleanup).
func emptyCaddyConfig() string {
	return fmt.Sprintf(`{"admin":{"listen":"127.0.0.1:%d","config":{"persist":false}}}`, adminPort)
}

// TestPebbleOnDemandTLS runs the gateway with on-demand certificates from a
// real ACME server, Pebble: the apex and a registered record get certificates
// for exactly their names from Pebble's CA, an unregistered name gets no
// certificate and Pebble never sees an order for it, and a client that trusts
// only Pebble's CA creates a record and reads its Patient.
func TestPebbleOnDemandTLS(t *testing.T) {
	pb := startPebble(t)
	e := startPebbleGateway(t, pb)
	token := e.token("pebble-owner")

	// The management API lives on the apex: its certificate comes from Pebble
	// too, or this client (which trusts only Pebble's root) cannot connect.
	record := e.createRecord(token, pebbleSlug, "Moss", "Pebble")
	patientID, _ := record["patientId"].(string)
	if patientID == "" {
		t.Fatalf("created record has no patientId: %v", record)
	}

	host := pebbleSlug + "." + baseDomain
	for _, name := range []string{baseDomain, host} {
		pb.checkIssued(t, name, pb.handshake(t, name))
	}
	for _, name := range []string{"nobody." + baseDomain, "evil.example.com"} {
		if cert, err := tlsHandshake(name); err == nil {
			t.Errorf("handshake for unregistered %s got a certificate for %v", name, cert.DNSNames)
		}
	}

	res := e.do("GET", recordURL(pebbleSlug, "/Patient/"+patientID), token, nil).
		Expect(t, http.StatusOK, "read the record's Patient over Pebble's TLS")
	if res.Body["resourceType"] != "Patient" || res.Body["id"] != patientID {
		t.Errorf("read Patient/%s: got %.300s", patientID, res.Raw)
	}
	if !strings.Contains(string(res.Raw), `"Moss"`) {
		t.Errorf("Patient/%s is not the record's Patient: %.300s", patientID, res.Raw)
	}
	e.do("GET", recordURL(pebbleSlug, "/Patient/"+patientID), "", nil).
		ExpectOutcome(t, http.StatusUnauthorized, "read the Patient without a token")

	pb.Stop()
	checkPebbleOrders(t, pb.Output(), []string{baseDomain, host})
}

// startPebbleGateway loads pebbleGatewayConfig into the in-process Caddy,
// with a data directory and a Caddy storage of its own. Caddy's certificate
// cache outlives config loads: on a reload Caddy evicts a certificate only for
// a site name whose issuer changes kind (pfr.localhost between the local CA and
// ACME), never the on-demand certificates of names under *.pfr.localhost. So
// the cache is dropped before (whatever other tests left) and after (this
// test's Pebble certificates), and the record's slug is this test's own.
func startPebbleGateway(t *testing.T, pb *pebbleServer) *env {
	t.Helper()
	e, _ := startACMEGateway(t, pb, func(dir, storage string) string {
		return fmt.Sprintf(pebbleGatewayConfig(), dir, httpPort, httpsPort, storage, pb.DirectoryURL, pb.TLSRootFile)
	})
	return e
}

// startACMEGateway loads the Caddyfile that render makes for a fresh data
// directory and Caddy storage into the in-process Caddy, with the
// certificate cache dropped before and after, and returns the gateway
// (its client trusting Pebble's root only) and the Caddyfile.
func startACMEGateway(t *testing.T, pb *pebbleServer, render func(dir, storage string) string) (*env, string) {
	t.Helper()
	dropCertificateCache(t)
	t.Cleanup(func() { dropCertificateCache(t) })

	dir := t.TempDir()
	config := render(dir, t.TempDir())
	mustLoadCaddy(t, config, "caddyfile")
	dev, err := auth.LoadOrCreateDevIssuer(dir)
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, dataDir: dir, dev: dev, client: pb.client()}, config
}

// dropCertificateCache loads a config without a TLS app, which makes Caddy
// discard every certificate it holds in memory.
func dropCertificateCache(t *testing.T) {
	t.Helper()
	mustLoadCaddy(t, emptyCaddyConfig(), "json")
}

// pebbleServer is a running Pebble (internal/pebble) as the tests use it.
type pebbleServer struct {
	*pebble.Server
}

// startPebble starts Pebble on free 127.0.0.1 ports with challenges that
// always validate (no resolver knows *.pfr.localhost). Pebble stops when
// the test ends; its log is printed if the test failed.
func startPebble(t *testing.T) *pebbleServer {
	t.Helper()
	return startPebbleWith(t, pebble.Options{HTTPPort: httpPort, TLSPort: httpsPort, AlwaysValid: true})
}

// startPebbleWith starts Pebble with opts (its directory is the test's).
func startPebbleWith(t *testing.T, opts pebble.Options) *pebbleServer {
	t.Helper()
	testkit.Needs(t, "Pebble (an ACME server)")
	ctx, cancel := context.WithCancel(testkit.WaitContext(t))
	opts.Dir = t.TempDir()
	srv, err := pebble.Start(ctx, opts)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Stop()
		cancel()
		if t.Failed() {
			t.Logf("pebble output:\n%s", srv.Output())
		}
	})
	return &pebbleServer{srv}
}

// client is the harness's client (every name dialled to 127.0.0.1) with
// verification on, trusting Pebble's issuing root and nothing else.
func (p *pebbleServer) client() *http.Client {
	c := newClient()
	c.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: p.RootPool()}
	return c
}

// handshake connects to the gateway with SNI name, verifying the served chain
// against Pebble's root only, and returns the leaf.
func (p *pebbleServer) handshake(t *testing.T, name string) *x509.Certificate {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", fmt.Sprintf("127.0.0.1:%d", httpsPort),
		&tls.Config{ServerName: name, RootCAs: p.RootPool()})
	if err != nil {
		t.Fatalf("handshake for %s with only Pebble's root trusted: %v", name, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0]
}

// checkIssued verifies that leaf names exactly name, is signed by Pebble's
// issuing intermediate (as published on the management interface) and is a
// certificate this Pebble issued and still considers valid.
func (p *pebbleServer) checkIssued(t *testing.T, name string, leaf *x509.Certificate) {
	t.Helper()
	if !slices.Equal(leaf.DNSNames, []string{name}) || len(leaf.IPAddresses) > 0 || len(leaf.URIs) > 0 || len(leaf.EmailAddresses) > 0 {
		t.Errorf("certificate for %s names DNS %v, IP %v, URI %v, email %v; want exactly %s",
			name, leaf.DNSNames, leaf.IPAddresses, leaf.URIs, leaf.EmailAddresses, name)
	}
	if err := leaf.CheckSignatureFrom(p.Intermediate); err != nil {
		t.Errorf("certificate for %s is not signed by pebble's intermediate %q: %v", name, p.Intermediate.Subject, err)
	}
	intermediates := x509.NewCertPool()
	intermediates.AddCert(p.Intermediate)
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: p.RootPool(), Intermediates: intermediates}); err != nil {
		t.Errorf("certificate for %s does not chain to pebble's root through its published intermediate: %v", name, err)
	}

	status, der, err := p.CertificateStatus(leaf.SerialNumber)
	if err != nil {
		t.Fatalf("certificate for %s: %v", name, err)
	}
	if status != "Valid" || !bytes.Equal(der, leaf.Raw) {
		t.Errorf("pebble does not know the certificate served for %s as one it issued: status %q", name, status)
	}
}

// pebbleValidations matches the identifier of each challenge Pebble's VA
// takes up: `Pulled a task from the Tasks queue: &va.vaTask{Identifier:
// acme.Identifier{Type:"dns", Value:"…"}, …}`.
var pebbleValidations = regexp.MustCompile(`Pulled a task from the Tasks queue: .*?Value:"([^"]+)"`)

// checkPebbleOrders reads Pebble's log: it must hold exactly one order and
// one validated identifier per expected name, and no other name.
func checkPebbleOrders(t *testing.T, log string, names []string) {
	t.Helper()
	if n := strings.Count(log, "Added order "); n != len(names) {
		t.Errorf("pebble received %d orders, want %d (one each for %v)", n, len(names), names)
	}
	var validated []string
	for _, m := range pebbleValidations.FindAllStringSubmatch(log, -1) {
		validated = append(validated, m[1])
	}
	slices.Sort(validated)
	want := slices.Sorted(slices.Values(names))
	if !slices.Equal(validated, want) {
		t.Errorf("pebble validated %v, want exactly %v", validated, want)
	}
	if strings.Contains(log, "nobody") || strings.Contains(log, "evil.example.com") {
		t.Errorf("an unregistered name reached pebble:\n%s", log)
	}
}
