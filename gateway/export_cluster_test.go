package gateway_test

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/api"
	"github.com/pfrgateway/caddy-pfr/gateway"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// node starts another node of e's cluster: a gateway on the same records,
// upstream and shared state, with a working directory of its own. Its jobs
// run only once run is true.
func (e *exportEnv) node(t testing.TB, name string, run bool) *exportEnv {
	t.Helper()
	cfg := e.cfg
	cfg.Bulk.Dir = filepath.Join(t.TempDir(), "bulk-"+name)
	cfg.Bulk.Node = name
	gw, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	api.New(gw)
	nn := &exportEnv{cfg: cfg, gw: gw, up: e.up, store: e.store, tenants: e.tenants, dev: e.dev, pid: e.pid}
	if run {
		nn.start()
		t.Cleanup(nn.stop)
	}
	return nn
}

// TestExportCluster: in a cluster (the jobs in the shared state) a status
// URL polled on another node than the one that took the kick-off answers,
// with the running node's progress, and that node serves the files, which
// its own directory never held; a job whose node stopped before running it
// (an export, an import whose upload only that node received) is run by
// another node.
func TestExportCluster(t *testing.T) {
	a := newExportEnv(t, false, gateway.BulkConfig{Node: "a", SweepEvery: 50 * time.Millisecond, LeaseTTL: 300 * time.Millisecond})
	alice := a.token(t, "alice", "")
	for i := range 5 {
		a.write(t, alice, "POST", "/Observation", observation(a.pid, fmt.Sprintf("6.%d0", i)))
	}
	b := a.node(t, "b", true)

	m := b.poll(t, alice, a.kickOff(t, alice, "/$export"))
	got := b.download(t, alice, m)
	if len(got["Observation"]) != 5 || len(got["Patient"]) != 1 {
		t.Fatalf("node b served %d Observations and %d Patients", len(got["Observation"]), len(got["Patient"]))
	}
	if same := a.download(t, alice, m); fmt.Sprint(same) != fmt.Sprint(got) {
		t.Errorf("the nodes serve different files")
	}
	if files, _ := filepath.Glob(filepath.Join(b.cfg.Bulk.Dir, "*", "*.ndjson")); len(files) > 0 {
		t.Errorf("node b's own directory holds %v", files)
	}
	// A Range request on node b (files are served chunk by chunk).
	res := b.do(t, alice, "GET", johnHost, strings.TrimPrefix(m.Output[0].URL, "http://"+johnHost), nil, "Range", "bytes=10-19")
	if res.Code != http.StatusPartialContent || res.Body.Len() != 10 {
		t.Errorf("a Range request on node b: %d, %d bytes", res.Code, res.Body.Len())
	}
	// While a job runs on one node (held in its Observation reads), the
	// status on a node that does not run it says how far it is: the
	// running node's lease carries its progress.
	held := make(chan struct{})
	hold := func(r *http.Request) {
		if strings.Contains(r.URL.Path, "/Observation") {
			<-held
		}
	}
	a.hook.Store(&hold)
	running := a.kickOff(t, alice, "/$export?_type=Patient,Observation")
	watcher := a.node(t, "watcher", false)
	progress := ""
	testkit.WaitFor(t, "the watching node to see the export reading Observation", 0, func() error {
		res := watcher.do(t, alice, "GET", johnHost, running, nil)
		if res.Code != http.StatusAccepted {
			t.Fatalf("the held export on the watching node: %d %s", res.Code, res.Body)
		}
		if progress = res.Header().Get("X-Progress"); !strings.Contains(progress, "reading Observation") {
			return fmt.Errorf("it says %q", progress)
		}
		return nil
	})
	if !strings.Contains(progress, "reading Observation (type 2 of 2)") {
		t.Errorf("a node not running the export says %q", progress)
	}
	close(held)
	a.hook.Store(nil)
	if m := watcher.poll(t, alice, running); len(m.Output) != 2 {
		t.Errorf("the held export: %+v", m.Output)
	}

	// Node c takes kick-offs and uploads but runs no jobs (it stopped
	// right after answering): node b runs them, and a DELETE on node b
	// removes a job everywhere.
	c := a.node(t, "c", false)
	if m := b.poll(t, alice, c.kickOff(t, alice, "/Patient/$export")); len(m.Output) != 2 {
		t.Errorf("Patient/$export taken by node c, run by node b: %+v", m.Output)
	}
	gone := c.kickOff(t, alice, "/$export")
	if res := b.do(t, alice, "DELETE", johnHost, gone, nil); res.Code != http.StatusAccepted {
		t.Errorf("DELETE on node b: %d %s", res.Code, res.Body)
	}
	if res := c.do(t, alice, "GET", johnHost, gone, nil); res.Code != http.StatusNotFound {
		t.Errorf("the deleted job on node c: %d %s", res.Code, res.Body)
	}
	a.createRecord(t, alice, "johnny", "")
	var ndjson bytes.Buffer
	for _, line := range got["Observation"] {
		ndjson.Write(line)
		ndjson.WriteByte('\n')
	}
	for _, line := range got["Patient"] {
		ndjson.Write(line)
		ndjson.WriteByte('\n')
	}
	imp := c.startImport(t, alice, "johnny", "application/fhir+ndjson", ndjson.Bytes(), "")
	code, body := b.waitImport(t, alice, imp)
	if code != http.StatusOK || !bytes.Contains(body, []byte(`"imported":5`)) {
		t.Fatalf("the import uploaded to node c, run by node b: %d %s", code, body)
	}
	if n := len(b.readAll(t, alice, "johnny.pfr.localhost", "Observation")); n != 5 {
		t.Errorf("johnny holds %d Observations", n)
	}
	// Node b's working files go once its jobs ended (just after their
	// status says so).
	testkit.WaitFor(t, "node b's directory to empty", 0, func() error {
		if left, _ := os.ReadDir(b.cfg.Bulk.Dir); len(left) > 0 {
			return fmt.Errorf("it holds %v", left)
		}
		return nil
	})
}
