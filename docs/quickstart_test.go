package docs_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// TestQuickstartAnswersEveryName runs Caddyfile.example and checks what a
// new user meets: the readiness line names the addresses; a host that is no
// record (a mistyped slug, localhost, 127.0.0.1 without SNI, any other
// name) gets an HTTP 404 OperationOutcome over TLS, under the apex's
// certificate, and no certificate of its own is ever obtained for it; the
// redirect from http:// keeps the port.
func TestQuickstartAnswersEveryName(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real pfr binary; run without -short")
	}
	ctx, cancel := context.WithCancel(testkit.WaitContext(t))
	defer cancel()
	ex := startExample(ctx, t)

	wantReady := "caddy-pfr ready: management API at https://pfr.localhost:" + ex.httpsPort +
		"/pfr/v1/, records at https://{slug}.pfr.localhost:" + ex.httpsPort + "/fhir"
	if !strings.Contains(ex.ready, wantReady) {
		t.Errorf("readiness line\n got: %s\nwant: …%s…", ex.ready, wantReady)
	}

	dialTLS := func(serverName string) (*http.Client, *[]string) {
		var names []string
		tr := &http.Transport{
			DialTLSContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				conn, err := (&tls.Dialer{Config: &tls.Config{
					ServerName:         serverName,
					InsecureSkipVerify: true, // the local CA is not trusted here; the name is checked below
					NextProtos:         []string{"http/1.1"},
				}}).DialContext(ctx, network, "127.0.0.1:"+ex.httpsPort)
				if err == nil {
					names = conn.(*tls.Conn).ConnectionState().PeerCertificates[0].DNSNames
				}
				return conn, err
			},
		}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 10 * time.Second}, &names
	}

	for _, c := range []struct{ sni, host string }{
		{"jonh.pfr.localhost", "jonh.pfr.localhost"}, // a mistyped slug
		{"localhost", "localhost"},
		{"", "127.0.0.1"}, // https://127.0.0.1:8443: no SNI
		{"www.example.com", "www.example.com"},
	} {
		client, names := dialTLS(c.sni)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+c.host+":"+ex.httpsPort+"/fhir/metadata", nil)
		res, err := client.Do(req)
		if err != nil {
			t.Errorf("%s (SNI %q): no HTTP answer: %v", c.host, c.sni, err)
			continue
		}
		body, _ := io.ReadAll(res.Body)
		_ = res.Body.Close()
		var oo struct {
			ResourceType string `json:"resourceType"`
			Issue        []struct {
				Code string `json:"code"`
			} `json:"issue"`
		}
		if res.StatusCode != http.StatusNotFound || json.Unmarshal(body, &oo) != nil ||
			oo.ResourceType != "OperationOutcome" || len(oo.Issue) == 0 || oo.Issue[0].Code != "not-found" {
			t.Errorf("%s (SNI %q): %d %s, want a 404 OperationOutcome", c.host, c.sni, res.StatusCode, body)
		}
		if !slices.Equal(*names, []string{"pfr.localhost"}) {
			t.Errorf("%s (SNI %q): served a certificate for %v, want the apex's (pfr.localhost)", c.host, c.sni, *names)
		}
	}

	// Caddy keeps every certificate it obtained under its storage's
	// certificates/<issuer>/<name>/: only the apex's is there.
	var stored []string
	dirs, _ := filepath.Glob(filepath.Join(ex.dir, "pfr-data", "caddy", "certificates", "*", "*"))
	for _, d := range dirs {
		stored = append(stored, filepath.Base(d))
	}
	if !slices.Equal(stored, []string{"pfr.localhost"}) {
		t.Errorf("certificates in storage: %v, want only pfr.localhost", stored)
	}
	if !onlyObtained(ex.q.out.String(), "pfr.localhost") {
		t.Errorf("a certificate was requested for a name that is no record:\n%s", ex.q.log())
	}

	// http:// redirects to https:// on the quickstart's HTTPS port.
	plain := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport: &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, "127.0.0.1:"+ex.httpPort)
		}}}
	res, err := plain.Get("http://john.pfr.localhost:" + ex.httpPort + "/fhir/Patient?name=x")
	if err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close()
	if want := "https://john.pfr.localhost:" + ex.httpsPort + "/fhir/Patient?name=x"; res.StatusCode != http.StatusPermanentRedirect || res.Header.Get("Location") != want {
		t.Errorf("redirect: %d to %q, want 308 to %q", res.StatusCode, res.Header.Get("Location"), want)
	}
	if _, err := os.Stat(filepath.Join(ex.dir, "pfr-data", "caddy", "pki", "authorities", "local", "root.crt")); err != nil {
		t.Errorf("Caddy's local CA is not under pfr-data/caddy: %v", err)
	}
}

// onlyObtained reports whether every "obtaining new certificate" log line
// names the given server name.
func onlyObtained(log, name string) bool {
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, `"obtaining new certificate"`) && !strings.Contains(line, `"server_name":"`+name+`"`) {
			return false
		}
	}
	return true
}
