package egress

import (
	"context"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRootCAFile: an https server whose certificate a private CA signed is
// reached only by a client that trusts that CA's file; a file that cannot
// be read fails every request; the destination rules stay (loopback only
// when allowed).
func TestRootCAFile(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	defer srv.Close()
	caFile := filepath.Join(t.TempDir(), "root.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	get := func(p *Policy) error {
		res, err := p.Client(5 * time.Second).Get(srv.URL)
		if err == nil {
			res.Body.Close()
		}
		return err
	}
	if err := get(&Policy{Allow: loopback, RootCAFile: caFile}); err != nil {
		t.Errorf("with the CA file: %v", err)
	}
	if err := get(&Policy{Allow: loopback}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("without the CA file: %v, want a certificate error", err)
	}
	if err := get(&Policy{Allow: loopback, RootCAFile: caFile + ".missing"}); err == nil || !strings.Contains(err.Error(), "trusted roots") {
		t.Errorf("with a missing CA file: %v", err)
	}
	if err := get(&Policy{RootCAFile: caFile}); !errors.Is(err, ErrRefused) {
		t.Errorf("loopback not allowed, with the CA file: %v, want refused", err)
	}
}

// TestLocalhostNames: *.localhost is the loopback address without asking
// DNS, and so refused unless loopback is allowed.
func TestLocalhostNames(t *testing.T) {
	p := &Policy{}
	addrs, err := p.resolve(context.Background(), "john.pfr.localhost")
	if err != nil || len(addrs) == 0 {
		t.Fatalf("resolve: %v %v", addrs, err)
	}
	for _, a := range addrs {
		if !a.IsLoopback() {
			t.Errorf("john.pfr.localhost resolved to %s", a)
		}
	}
	if err := p.Check(context.Background(), "https://john.pfr.localhost/fhir"); !errors.Is(err, ErrRefused) {
		t.Errorf("Check of a localhost name: %v, want refused", err)
	}
	for host, want := range map[string]bool{"localhost": true, "A.Localhost.": true, "localhost.example": false, "notlocalhost": false} {
		if IsLocalhost(host) != want {
			t.Errorf("IsLocalhost(%q) = %v", host, !want)
		}
	}
}
