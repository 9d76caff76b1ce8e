package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/pfrgateway/caddy-pfr/auth"
)

// pebbleInstall is how scripts/test.sh installs Pebble, the ACME test server.
const pebbleInstall = "go install github.com/letsencrypt/pebble/v2/cmd/pebble@v2.10.1"

// pebbleSlug is this test's record; no other test uses it, so no certificate
// another test left in Caddy's in-memory cache can answer for its name.
const pebbleSlug = "pebble-home"

// pebbleGatewayConfig is gatewayConfig with certificates from an ACME server
// instead of Caddy's local CA: %[1]s is the data directory, %[2]d/%[3]d the
// HTTP/HTTPS ports, %[4]s Caddy's storage root, %[5]s the ACME directory URL,
// %[6]s the PEM file of the root that signs the ACME server's own HTTPS
// certificate.
const pebbleGatewayConfig = `{
	admin localhost:2999
	default_bind 127.0.0.1
	http_port %[2]d
	https_port %[3]d
	skip_install_trust
	storage file_system {
		root %[4]s
	}
	on_demand_tls {
		permission pfr {
			base_domain pfr.localhost
			data_dir %[1]s
		}
	}
}

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

// emptyCaddyConfig keeps only the admin endpoint: loading it stops Caddy's TLS
// app without a successor, and Caddy then drops its process-wide certificate
// cache (caddytls.TLS.Cleanup).
const emptyCaddyConfig = `{"admin":{"listen":"localhost:2999"}}`

// TestPebbleOnDemandTLS runs the gateway with on-demand certificates from a
// real ACME server, Pebble: the apex and a registered record get certificates
// for exactly their names from Pebble's CA, an unregistered name gets no
// certificate and Pebble never sees an order for it, and a client that trusts
// only Pebble's CA creates a record and reads its Patient.
func TestPebbleOnDemandTLS(t *testing.T) {
	pebble := startPebble(t)
	e := startPebbleGateway(t, pebble)
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
		pebble.checkIssued(t, name, pebble.handshake(t, name))
	}
	for _, name := range []string{"nobody." + baseDomain, "evil.example.com"} {
		if cert, err := tlsHandshake(name); err == nil {
			t.Errorf("handshake for unregistered %s got a certificate for %v", name, cert.DNSNames)
		}
	}

	res := e.do("GET", recordURL(pebbleSlug, "/Patient/"+patientID), token, nil).
		expect(t, http.StatusOK, "read the record's Patient over Pebble's TLS")
	if res.body["resourceType"] != "Patient" || res.body["id"] != patientID {
		t.Errorf("read Patient/%s: got %.300s", patientID, res.raw)
	}
	if !strings.Contains(string(res.raw), `"Moss"`) {
		t.Errorf("Patient/%s is not the record's Patient: %.300s", patientID, res.raw)
	}
	e.do("GET", recordURL(pebbleSlug, "/Patient/"+patientID), "", nil).
		expectOutcome(t, http.StatusUnauthorized, "read the Patient without a token")

	checkPebbleOrders(t, pebble.stop(t), []string{baseDomain, host})
}

// startPebbleGateway loads pebbleGatewayConfig into the in-process Caddy,
// with a data directory and a Caddy storage of its own. Caddy's certificate
// cache outlives config loads: on a reload Caddy evicts a certificate only for
// a site name whose issuer changes kind (pfr.localhost between the local CA and
// ACME), never the on-demand certificates of names under *.pfr.localhost. So
// the cache is dropped before (whatever other tests left) and after (this
// test's Pebble certificates), and the record's slug is this test's own.
func startPebbleGateway(t *testing.T, pebble *pebbleServer) *env {
	t.Helper()
	t.Cleanup(func() {
		if t.Skipped() {
			t.Errorf("Caddy did not start: end-to-end tests must not be skipped")
		}
	})
	dropCertificateCache(t)
	t.Cleanup(func() { dropCertificateCache(t) })

	dir := t.TempDir()
	storage := t.TempDir()
	config := fmt.Sprintf(pebbleGatewayConfig, dir, httpPort, httpsPort, storage, pebble.directoryURL, pebble.tlsRootFile)
	caddytest.NewTester(t).InitServer(config, "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	dev, err := auth.LoadOrCreateDevIssuer(dir)
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, dataDir: dir, dev: dev, client: pebble.client()}
}

// dropCertificateCache loads a config without a TLS app, which makes Caddy
// discard every certificate it holds in memory.
func dropCertificateCache(t *testing.T) {
	t.Helper()
	caddytest.NewTester(t).InitServer(emptyCaddyConfig, "json")
}

// pebbleServer is a running Pebble and what the test learned from it.
type pebbleServer struct {
	directoryURL  string         // the ACME directory
	managementURL string         // the management interface (roots, intermediates, cert status)
	tlsRootFile   string         // PEM root of Pebble's own HTTPS certificate
	tlsRoots      *x509.CertPool // the same, for the test's clients of Pebble
	root          *x509.Certificate
	intermediate  *x509.Certificate

	cmd    *exec.Cmd
	output *bytes.Buffer // stdout and stderr; read only after done is closed
	done   chan struct{}
}

// startPebble starts Pebble on free 127.0.0.1 ports with challenges that
// always validate, waits (bounded) for its management interface and fetches
// its issuing root and intermediate. Pebble stops when the test ends.
func startPebble(t *testing.T) *pebbleServer {
	t.Helper()
	bin := pebbleBinary(t)
	dir := t.TempDir()
	p := &pebbleServer{tlsRootFile: filepath.Join(dir, "tls-root.pem")}
	certFile, keyFile := filepath.Join(dir, "tls-cert.pem"), filepath.Join(dir, "tls-key.pem")
	p.tlsRoots = writePebbleTLS(t, p.tlsRootFile, certFile, keyFile)

	listen, management := freeLoopbackAddr(t), freeLoopbackAddr(t)
	p.directoryURL = "https://" + listen + "/dir"
	p.managementURL = "https://" + management
	configFile := writePebbleConfig(t, dir, map[string]any{
		"listenAddress":           listen,
		"managementListenAddress": management,
		"certificate":             certFile,
		"privateKey":              keyFile,
		"httpPort":                httpPort,
		"tlsPort":                 httpsPort,
	})

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	p.cmd = exec.CommandContext(ctx, bin, "-config", configFile)
	p.cmd.Env = append(os.Environ(),
		"PEBBLE_VA_ALWAYS_VALID=1", // *.pfr.localhost cannot be validated for real
		"PEBBLE_VA_NOSLEEP=1",
		"PEBBLE_WFE_NONCEREJECT=0",
	)
	p.output = new(bytes.Buffer)
	p.cmd.Stdout, p.cmd.Stderr = p.output, p.output
	if err := p.cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting pebble: %v", err)
	}
	p.done = make(chan struct{})
	go func() { _ = p.cmd.Wait(); cancel(); close(p.done) }()
	t.Cleanup(func() {
		out := p.stop(t)
		if t.Failed() {
			t.Logf("pebble output:\n%s", out)
		}
	})

	p.waitReady(t)
	p.root = p.fetchCertificate(t, "/roots/0")
	p.intermediate = p.fetchCertificate(t, "/intermediates/0")
	if err := p.intermediate.CheckSignatureFrom(p.root); err != nil {
		t.Fatalf("pebble's intermediate is not signed by its root: %v", err)
	}
	return p
}

// pebbleBinary finds the pebble command on PATH or in GOPATH/bin; without
// it the test fails: it is part of the test setup, never optional.
func pebbleBinary(t *testing.T) string {
	t.Helper()
	if bin, err := exec.LookPath("pebble"); err == nil {
		return bin
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		out, err := exec.Command("go", "env", "GOPATH").Output()
		if err != nil {
			t.Fatalf("pebble is not on PATH and `go env GOPATH` failed (%v): install it with %s", err, pebbleInstall)
		}
		gopath = strings.TrimSpace(string(out))
	}
	for _, root := range filepath.SplitList(gopath) {
		bin := filepath.Join(root, "bin", "pebble")
		if info, err := os.Stat(bin); err == nil && !info.IsDir() {
			return bin
		}
	}
	t.Fatalf("pebble (the ACME test server) is missing from PATH and %s/bin: install it with %s (scripts/test.sh does)", gopath, pebbleInstall)
	return ""
}

// freeLoopbackAddr returns a 127.0.0.1 address whose port was free a moment ago.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// writePebbleConfig completes testdata/pebble/pebble-config.json with this
// run's settings and writes it into dir.
func writePebbleConfig(t *testing.T, dir string, settings map[string]any) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "pebble", "pebble-config.json"))
	if err != nil {
		t.Fatalf("pebble config template: %v", err)
	}
	var config map[string]map[string]any
	if err := json.Unmarshal(raw, &config); err != nil || config["pebble"] == nil {
		t.Fatalf("pebble config template: not {\"pebble\": {...}}: %v", err)
	}
	for key, value := range settings {
		config["pebble"][key] = value
	}
	out, err := json.MarshalIndent(config, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "pebble-config.json")
	if err := os.WriteFile(file, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// writePebbleTLS creates a throwaway CA and a certificate for 127.0.0.1 that
// Pebble serves its ACME and management interfaces with, and returns the CA
// as a pool. Generated per run, so nothing expires in the repository.
func writePebbleTLS(t *testing.T, rootFile, certFile, keyFile string) *x509.CertPool {
	t.Helper()
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTemplate := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "caddy-pfr e2e Pebble TLS root"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
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
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for file, block := range map[string]*pem.Block{
		rootFile: {Type: "CERTIFICATE", Bytes: caDER},
		certFile: {Type: "CERTIFICATE", Bytes: leafDER},
		keyFile:  {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return pool
}

// managementClient talks to Pebble's management interface, trusting only the
// test's throwaway TLS root.
func (p *pebbleServer) managementClient() *http.Client {
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.tlsRoots}},
	}
}

// waitReady polls the management interface until it answers, Pebble exits,
// or the attempts run out.
func (p *pebbleServer) waitReady(t *testing.T) {
	t.Helper()
	client := p.managementClient()
	var lastErr error
	for range 100 {
		select {
		case <-p.done:
			t.Fatalf("pebble exited before it was ready:\n%s", p.output)
		default:
		}
		res, err := client.Get(p.managementURL + "/roots/0")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
			err = fmt.Errorf("status %d", res.StatusCode)
		}
		lastErr = err
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("pebble's management interface %s did not answer: %v", p.managementURL, lastErr)
}

// fetchCertificate reads one PEM certificate from the management interface.
func (p *pebbleServer) fetchCertificate(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	res, err := p.managementClient().Get(p.managementURL + path)
	if err != nil {
		t.Fatalf("pebble %s: %v", path, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("pebble %s: status %d, %v", path, res.StatusCode, err)
	}
	block, _ := pem.Decode(raw)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("pebble %s: not a PEM certificate: %.200s", path, raw)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("pebble %s: %v", path, err)
	}
	return cert
}

// rootPool is Pebble's issuing root, the only root the gateway's clients trust.
func (p *pebbleServer) rootPool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.root)
	return pool
}

// client is the harness's client (every name dialled to 127.0.0.1) with
// verification on, trusting Pebble's issuing root and nothing else.
func (p *pebbleServer) client() *http.Client {
	c := newClient()
	c.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: p.rootPool()}
	return c
}

// handshake connects to the gateway with SNI name, verifying the served chain
// against Pebble's root only, and returns the leaf.
func (p *pebbleServer) handshake(t *testing.T, name string) *x509.Certificate {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", fmt.Sprintf("127.0.0.1:%d", httpsPort),
		&tls.Config{ServerName: name, RootCAs: p.rootPool()})
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
	if err := leaf.CheckSignatureFrom(p.intermediate); err != nil {
		t.Errorf("certificate for %s is not signed by pebble's intermediate %q: %v", name, p.intermediate.Subject, err)
	}
	intermediates := x509.NewCertPool()
	intermediates.AddCert(p.intermediate)
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: p.rootPool(), Intermediates: intermediates}); err != nil {
		t.Errorf("certificate for %s does not chain to pebble's root through its published intermediate: %v", name, err)
	}

	path := "/cert-status-by-serial/" + leaf.SerialNumber.Text(16)
	res, err := p.managementClient().Get(p.managementURL + path)
	if err != nil {
		t.Fatalf("pebble %s: %v", path, err)
	}
	defer res.Body.Close()
	var status struct{ Status, Certificate string }
	if err := json.NewDecoder(res.Body).Decode(&status); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("pebble %s for %s: status %d, %v", path, name, res.StatusCode, err)
	}
	block, _ := pem.Decode([]byte(status.Certificate))
	if status.Status != "Valid" || block == nil || !bytes.Equal(block.Bytes, leaf.Raw) {
		t.Errorf("pebble does not know the certificate served for %s as one it issued: status %q", name, status.Status)
	}
}

// stop ends Pebble (once; later calls just wait) and returns everything it
// printed.
func (p *pebbleServer) stop(t *testing.T) string {
	t.Helper()
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Kill()
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Fatalf("pebble did not exit after kill")
		}
	}
	return p.output.String()
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
