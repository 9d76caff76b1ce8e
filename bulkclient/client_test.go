package bulkclient

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestCredentialsStayAtHome: the token and the --header headers go to the
// origin the export was started at (kick-off, status, a file there, a
// relative file URL) and never to a file the manifest puts at another
// origin, although the manifest says requiresAccessToken.
func TestCredentialsStayAtHome(t *testing.T) {
	var mu sync.Mutex
	seen := map[string][2]string{} // server+path → Authorization, X-Api-Key
	record := func(name string, w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[name+r.URL.Path] = [2]string{r.Header.Get("Authorization"), r.Header.Get("X-Api-Key")}
		mu.Unlock()
	}
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		record("elsewhere", w, r)
		_, _ = w.Write([]byte(`{"resourceType":"Observation","id":"b"}` + "\n"))
	}))
	defer elsewhere.Close()
	var home *httptest.Server
	home = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		record("home", w, r)
		switch r.URL.Path {
		case "/fhir/$export":
			w.Header().Set("Content-Location", home.URL+"/fhir/status/1")
			w.WriteHeader(http.StatusAccepted)
		case "/fhir/status/1":
			_, _ = w.Write([]byte(`{"transactionTime":"2026-01-01T00:00:00Z","request":"x","requiresAccessToken":true,"output":[` +
				`{"type":"Patient","url":"../files/p.ndjson"},{"type":"Observation","url":"` + elsewhere.URL + `/o.ndjson"}],"error":[]}`))
		case "/fhir/files/p.ndjson":
			_, _ = w.Write([]byte(`{"resourceType":"Patient","id":"a"}` + "\n"))
		default:
			http.NotFound(w, r)
		}
	}))
	defer home.Close()
	c := &Client{HTTP: home.Client(), Token: "tok", Header: http.Header{"X-Api-Key": {"key"}}, PollMin: time.Millisecond, PollMax: time.Millisecond}
	dir := t.TempDir()
	res, err := c.Export(context.Background(), home.URL+"/fhir", ExportOptions{OutDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if res.Resources != 2 {
		t.Errorf("exported %d resources, want 2", res.Resources)
	}
	if _, err := os.Stat(filepath.Join(dir, "Observation.ndjson")); err != nil {
		t.Error(err)
	}
	want := map[string][2]string{
		"home/fhir/$export":        {"Bearer tok", "key"},
		"home/fhir/status/1":       {"Bearer tok", "key"},
		"home/fhir/files/p.ndjson": {"Bearer tok", "key"},
		"elsewhere/o.ndjson":       {"", ""},
	}
	mu.Lock()
	defer mu.Unlock()
	for k, v := range want {
		if got, ok := seen[k]; !ok || got != v {
			t.Errorf("%s got Authorization and X-Api-Key %q (asked: %v), want %q", k, got, ok, v)
		}
	}
}
