package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestOnDemandTLS checks that a registered record's subdomain gets a
// certificate for exactly that name from Caddy's local CA, and that an
// unregistered name gets none.
func TestOnDemandTLS(t *testing.T) {
	e := startGateway(t, "")
	e.createRecord(e.token("alice"), "alice-home", "Smith", "Alice")

	roots := x509.NewCertPool()
	rootPEM, err := os.ReadFile(filepath.Join(caddyStorage, "pki", "authorities", "local", "root.crt"))
	if err != nil {
		t.Fatalf("Caddy's local CA root: %v", err)
	}
	if !roots.AppendCertsFromPEM(rootPEM) {
		t.Fatal("cannot parse the local CA root")
	}
	handshake := func(name string) (*x509.Certificate, error) {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", fmt.Sprintf("127.0.0.1:%d", httpsPort),
			&tls.Config{ServerName: name, RootCAs: roots})
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0], nil
	}

	for _, name := range []string{"alice-home." + baseDomain, baseDomain} {
		cert, err := handshake(name)
		if err != nil {
			t.Fatalf("handshake for %s: %v", name, err)
		}
		if !slices.Contains(cert.DNSNames, name) {
			t.Errorf("certificate for %s names %v", name, cert.DNSNames)
		}
	}
	for _, name := range []string{"nobody-here." + baseDomain, "evil.example.com", "a.b." + baseDomain} {
		if _, err := handshake(name); err == nil {
			t.Errorf("handshake for unregistered %s succeeded", name)
		}
	}
}

// tlsHandshake tries a handshake for name without verifying the chain.
func tlsHandshake(name string) (*x509.Certificate, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", fmt.Sprintf("127.0.0.1:%d", httpsPort),
		&tls.Config{ServerName: name, InsecureSkipVerify: true}) //nolint:gosec // only whether a certificate is served
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0], nil
}
