// Package pebble runs Pebble, Let's Encrypt's ACME test server, as a child
// process for the end-to-end tests and the benchmarks: on free loopback
// ports, with its own HTTPS certificate from a throwaway CA generated per
// run (nothing in the repository expires), and either with challenges that
// always validate or with a real DNS server as its resolver, so a DNS-01
// challenge is checked for real. Pebble gets SIGKILL when the process that
// started it dies (Linux parent-death signal).
//
// pebble-config.json beside this file is the static part of Pebble's
// configuration (v2.10.1): retryAfter zero so ACME clients poll without
// waiting, one-day certificates. Start adds the addresses, ports and
// certificate of each run.
package pebble

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	_ "embed"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/childproc"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// Install is how scripts/test.sh installs Pebble.
const Install = "go install github.com/letsencrypt/pebble/v2/cmd/pebble@v2.10.1"

//go:embed pebble-config.json
var configTemplate []byte

// Options says how Pebble validates.
type Options struct {
	// The ports Pebble's VA connects to for HTTP-01 and TLS-ALPN-01
	// challenges (the gateway's HTTP and HTTPS ports).
	HTTPPort, TLSPort int

	// The DNS server Pebble resolves with (its -dnsserver flag), host:port:
	// DNS-01 challenges are looked up there. Empty: the system's resolver.
	DNSServer string

	// Every challenge validates without being checked (for names such as
	// *.pfr.localhost that no resolver knows). Leave it false to have
	// DNS-01 checked against DNSServer.
	AlwaysValid bool

	// Where the configuration and certificates go. Required; the caller
	// removes it.
	Dir string
}

// Server is a running Pebble and what was learned from it.
type Server struct {
	DirectoryURL  string         // the ACME directory
	ManagementURL string         // the management interface (roots, intermediates, cert status)
	TLSRootFile   string         // PEM root of Pebble's own HTTPS certificate
	TLSRoots      *x509.CertPool // the same, for clients of Pebble
	Root          *x509.Certificate
	Intermediate  *x509.Certificate

	*childproc.Process // Output, Stop
}

// Binary finds the pebble command on PATH or in GOPATH/bin.
func Binary() (string, error) {
	if bin, err := exec.LookPath("pebble"); err == nil {
		return bin, nil
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		out, err := exec.Command("go", "env", "GOPATH").Output()
		if err != nil {
			return "", fmt.Errorf("pebble is not on PATH and `go env GOPATH` failed (%v): install it with %s", err, Install)
		}
		gopath = strings.TrimSpace(string(out))
	}
	for _, root := range filepath.SplitList(gopath) {
		bin := filepath.Join(root, "bin", "pebble")
		if info, err := os.Stat(bin); err == nil && !info.IsDir() {
			return bin, nil
		}
	}
	return "", fmt.Errorf("pebble (the ACME test server) is missing from PATH and %s/bin: install it with %s (scripts/test.sh does)", gopath, Install)
}

// Start starts Pebble on free 127.0.0.1 ports, waits (bounded) for its
// management interface and fetches its issuing root and intermediate.
// Cancelling ctx kills it.
func Start(ctx context.Context, opts Options) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	if opts.Dir == "" {
		return nil, errors.New("pebble: Dir is required")
	}
	s := &Server{TLSRootFile: filepath.Join(opts.Dir, "tls-root.pem")}
	certFile, keyFile := filepath.Join(opts.Dir, "tls-cert.pem"), filepath.Join(opts.Dir, "tls-key.pem")
	if s.TLSRoots, err = writeTLS(s.TLSRootFile, certFile, keyFile); err != nil {
		return nil, err
	}
	listen, err := testkit.FreeAddr()
	if err != nil {
		return nil, err
	}
	management, err := testkit.FreeAddr()
	if err != nil {
		return nil, err
	}
	s.DirectoryURL = "https://" + listen + "/dir"
	s.ManagementURL = "https://" + management
	configFile, err := writeConfig(opts.Dir, map[string]any{
		"listenAddress":           listen,
		"managementListenAddress": management,
		"certificate":             certFile,
		"privateKey":              keyFile,
		"httpPort":                opts.HTTPPort,
		"tlsPort":                 opts.TLSPort,
	})
	if err != nil {
		return nil, err
	}

	args := []string{"-config", configFile}
	if opts.DNSServer != "" {
		args = append(args, "-dnsserver", opts.DNSServer)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(),
		"PEBBLE_VA_NOSLEEP=1",      // no random pause before validating
		"PEBBLE_WFE_NONCEREJECT=0", // no random bad-nonce errors
		"PEBBLE_AUTHZREUSE=0",      // (almost) every order validates its own challenges
	)
	if opts.AlwaysValid {
		cmd.Env = append(cmd.Env, "PEBBLE_VA_ALWAYS_VALID=1")
	}
	if s.Process, err = childproc.Start(cmd); err != nil {
		return nil, fmt.Errorf("pebble: %w", err)
	}

	if err := s.waitReady(ctx); err != nil {
		s.Stop()
		return nil, err
	}
	if s.Root, err = s.fetchCertificate("/roots/0"); err == nil {
		s.Intermediate, err = s.fetchCertificate("/intermediates/0")
	}
	if err == nil {
		if sigErr := s.Intermediate.CheckSignatureFrom(s.Root); sigErr != nil {
			err = fmt.Errorf("pebble's intermediate is not signed by its root: %w", sigErr)
		}
	}
	if err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// ManagementClient talks to Pebble's management interface, trusting only
// the throwaway TLS root.
func (s *Server) ManagementClient() *http.Client {
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.TLSRoots}},
	}
}

// RootPool is Pebble's issuing root, for clients of what Pebble issued.
func (s *Server) RootPool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(s.Root)
	return pool
}

// waitReady polls the management interface until it answers, Pebble exits,
// or the attempts run out.
func (s *Server) waitReady(ctx context.Context) error {
	client := s.ManagementClient()
	var lastErr error
	for range 100 {
		select {
		case <-s.Exited():
			return fmt.Errorf("pebble exited before it was ready (%v):\n%s", s.Err(), s.Output())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		res, err := client.Get(s.ManagementURL + "/roots/0")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %d", res.StatusCode)
		}
		lastErr = err
	}
	return fmt.Errorf("pebble's management interface %s did not answer: %v", s.ManagementURL, lastErr)
}

// fetchCertificate reads one PEM certificate from the management interface.
func (s *Server) fetchCertificate(path string) (*x509.Certificate, error) {
	res, err := s.ManagementClient().Get(s.ManagementURL + path)
	if err != nil {
		return nil, fmt.Errorf("pebble %s: %w", path, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("pebble %s: status %d, %v", path, res.StatusCode, err)
	}
	block, _ := pem.Decode(raw)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("pebble %s: not a PEM certificate: %.200s", path, raw)
	}
	return x509.ParseCertificate(block.Bytes)
}

// CertificateStatus asks the management interface about the certificate
// with serial: its status ("Valid", "Revoked") and the certificate as
// Pebble issued it (DER).
func (s *Server) CertificateStatus(serial *big.Int) (status string, der []byte, err error) {
	path := "/cert-status-by-serial/" + serial.Text(16)
	res, err := s.ManagementClient().Get(s.ManagementURL + path)
	if err != nil {
		return "", nil, fmt.Errorf("pebble %s: %w", path, err)
	}
	defer res.Body.Close()
	var body struct{ Status, Certificate string }
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil || res.StatusCode != http.StatusOK {
		return "", nil, fmt.Errorf("pebble %s: status %d, %v", path, res.StatusCode, err)
	}
	block, _ := pem.Decode([]byte(body.Certificate))
	if block == nil {
		return body.Status, nil, fmt.Errorf("pebble %s: no certificate in the answer", path)
	}
	return body.Status, block.Bytes, nil
}

// Orders counts the ACME orders Pebble has accepted so far, from its log
// (the management interface has no such count).
func (s *Server) Orders() int {
	return strings.Count(s.Output(), "Added order ")
}

// writeConfig completes pebble-config.json with this run's settings and
// writes it into dir.
func writeConfig(dir string, settings map[string]any) (string, error) {
	var config map[string]map[string]any
	if err := json.Unmarshal(configTemplate, &config); err != nil || config["pebble"] == nil {
		return "", fmt.Errorf("pebble config template: not {\"pebble\": {...}}: %v", err)
	}
	for key, value := range settings {
		config["pebble"][key] = value
	}
	out, err := json.MarshalIndent(config, "", "  ")
	if err != nil {
		return "", fmt.Errorf("pebble config: %w", err)
	}
	file := filepath.Join(dir, "pebble-config.json")
	if err := os.WriteFile(file, out, 0o600); err != nil {
		return "", fmt.Errorf("pebble config: %w", err)
	}
	return file, nil
}

// writeTLS creates a throwaway CA and a certificate for 127.0.0.1 that
// Pebble serves its ACME and management interfaces with, and returns the
// CA as a pool.
func writeTLS(rootFile, certFile, keyFile string) (*x509.CertPool, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTemplate := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "caddy-pfr test Pebble TLS root"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	for file, block := range map[string]*pem.Block{
		rootFile: {Type: "CERTIFICATE", Bytes: caDER},
		certFile: {Type: "CERTIFICATE", Bytes: leafDER},
		keyFile:  {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
			return nil, err
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return pool, nil
}
