package pfrproc

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLocalClientDialsEveryNameOnLoopbackAndKeepsRedirects(t *testing.T) {
	var host string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host = r.Host
		http.Redirect(w, r, "http://evil.example/", http.StatusFound)
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	client := LocalClient(0, LocalTransport())
	defer client.CloseIdleConnections()
	res, err := client.Get("http://john.pfr.localhost:" + port + "/fhir/metadata")
	if err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close()
	if res.StatusCode != http.StatusFound {
		t.Errorf("status %d: the client followed the redirect", res.StatusCode)
	}
	if host != "john.pfr.localhost:"+port {
		t.Errorf("Host %q, want the record's name", host)
	}
	if conn, err := LocalTransport().DialContext(context.Background(), "tcp", "no-port-here"); err == nil {
		_ = conn.Close()
		t.Error("dialled an address without a port")
	}
}

func TestCPUProfileWritesOnlyAGoodAnswer(t *testing.T) {
	var query string
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/debug/pprof/profile" {
			http.NotFound(w, r)
			return
		}
		query = r.URL.RawQuery
		w.WriteHeader(status)
		_, _ = w.Write([]byte("profile bytes"))
	}))
	defer srv.Close()
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	path := filepath.Join(t.TempDir(), "cpu.pprof")

	if err := CPUProfile(context.Background(), port, 3, path); err != nil {
		t.Fatal(err)
	}
	if raw, err := os.ReadFile(path); err != nil || string(raw) != "profile bytes" {
		t.Errorf("profile file %q (%v)", raw, err)
	}
	if query != "seconds=3" {
		t.Errorf("query %q, want seconds=3", query)
	}

	status = http.StatusForbidden
	other := filepath.Join(t.TempDir(), "refused.pprof")
	err := CPUProfile(context.Background(), port, 1, other)
	if err == nil || !strings.Contains(err.Error(), "status 403") {
		t.Fatalf("a refused profile: %v", err)
	}
	if _, err := os.Stat(other); !os.IsNotExist(err) {
		t.Errorf("a refused profile left a file (%v)", err)
	}
}

func TestRevisionWithoutStamp(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "pfr")
	if got := Revision(context.Background(), missing, false); got != "unknown revision" {
		t.Errorf("Revision of a missing binary not built here: %q", got)
	}
	// The package sits inside the module's git checkout.
	if got := Revision(context.Background(), missing, true); !strings.HasPrefix(got, "git HEAD ") {
		t.Errorf("Revision of a binary built here without a stamp: %q", got)
	}
}
