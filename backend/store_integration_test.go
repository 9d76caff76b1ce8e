package backend_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pfrgateway/caddy-pfr/backend"
	"github.com/pfrgateway/caddy-pfr/store"
)

// handlerUpstream adapts an http.Handler to backend.Upstream.
type handlerUpstream struct{ h http.Handler }

func (u handlerUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) error {
	u.h.ServeHTTP(w, r)
	return nil
}

// Against the embedded store, the default upstream: provisioning is
// idempotent, writes land in the PFR's own partition, and the store's
// absolute URLs come back as the PFR's public address.
func TestWithEmbeddedStore(t *testing.T) {
	db, err := store.Open(filepath.Join(t.TempDir(), "store.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	h, err := store.NewHandler(db, store.Config{})
	if err != nil {
		t.Fatal(err)
	}
	up := handlerUpstream{h}
	b, err := backend.New(backend.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	john := backend.Target{RecordID: "john1", PartitionID: 11, PartitionName: "pfr-john1"}
	jane := backend.Target{RecordID: "jane1", PartitionID: 12, PartitionName: "pfr-jane1"}
	for _, target := range []backend.Target{john, jane, john} {
		if err := b.Provision(ctx, up, target); err != nil {
			t.Fatalf("provision %s: %v", target.RecordID, err)
		}
	}
	// Another record may not take over john's partition id.
	if err := b.Provision(ctx, up, backend.Target{RecordID: "eve1", PartitionID: 11, PartitionName: "pfr-eve1"}); err == nil {
		t.Fatal("provisioning with another record's partition id must fail")
	}

	const public = "https://john.pfr.localhost:8443/fhir"
	do := func(target backend.Target, method, path, body string, smuggle string) *httptest.ResponseRecorder {
		t.Helper()
		r := httptest.NewRequest(method, path, strings.NewReader(body))
		r.Host = "john.pfr.localhost:8443"
		r.Header.Set("Content-Type", "application/fhir+json")
		if smuggle != "" {
			r.Header.Set("X-Request-Partition-IDs", smuggle)
		}
		route, err := b.Outbound(r, target)
		if err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		rw := backend.NewResponseRewriter(rec, route.UpstreamBases, public)
		_ = up.ServeHTTP(rw, r)
		if err := rw.Close(); err != nil {
			t.Fatal(err)
		}
		return rec
	}
	// Jane tries to write into john's partition with a smuggled header.
	res := do(jane, "POST", "/fhir/Observation",
		`{"resourceType":"Observation","status":"final","code":{"text":"jane's"}}`, "11")
	if res.Code != http.StatusCreated {
		t.Fatalf("create: %d %s", res.Code, res.Body)
	}
	loc := res.Header().Get("Location")
	if !strings.HasPrefix(loc, public+"/Observation/") {
		t.Fatalf("Location %q not rewritten to %s", loc, public)
	}
	id := strings.Split(strings.TrimPrefix(loc, public+"/Observation/"), "/")[0]

	if res := do(john, "GET", "/fhir/Observation/"+id, "", ""); res.Code != http.StatusNotFound {
		t.Errorf("john reads jane's observation: %d", res.Code)
	}
	res = do(jane, "GET", "/fhir/Observation?_count=1", "", "")
	body, _ := io.ReadAll(res.Body)
	if res.Code != http.StatusOK || !strings.Contains(string(body), `"fullUrl":"`+public+`/Observation/`+id+`"`) {
		t.Errorf("jane's search: %d %s", res.Code, body)
	}
	if strings.Contains(string(body), "http://john.pfr.localhost") {
		t.Errorf("store base left in body: %s", body)
	}
	if cl := res.Header().Get("Content-Length"); cl != strconv.Itoa(len(body)) {
		t.Errorf("Content-Length %s for %d bytes", cl, len(body))
	}

	for _, target := range []backend.Target{john, john} {
		if err := b.Deprovision(ctx, up, target); err != nil {
			t.Fatalf("deprovision: %v", err)
		}
	}
}
