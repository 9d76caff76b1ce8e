package bulk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/kv"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// noSource answers no read: the tests here run imports.
type noSource struct{}

func (noSource) Get(context.Context, *Job, string) ([]byte, error) {
	return nil, errors.New("no source in this test")
}

// countingImporter reads the input and counts its runs.
type countingImporter struct{ runs atomic.Int32 }

func (c *countingImporter) Import(_ context.Context, _ *Job, run *ImportRun) (json.RawMessage, error) {
	c.runs.Add(1)
	data, err := os.ReadFile(run.Input)
	if err != nil {
		return nil, err
	}
	return json.Marshal(map[string]string{"read": string(data)})
}

// hookStore is a jobStore that runs a hook before a claim or after a list,
// standing in for another Manager that acts in between.
type hookStore struct {
	jobStore
	beforeClaim func(id string)
	afterList   func()
}

func (h hookStore) claim(id string, progress func() Progress) (func(), <-chan struct{}, bool, bool) {
	if h.beforeClaim != nil {
		h.beforeClaim(id)
	}
	return h.jobStore.claim(id, progress)
}

func (h hookStore) list() ([]*Job, []error) {
	jobs, errs := h.jobStore.list()
	if h.afterList != nil {
		h.afterList()
	}
	return jobs, errs
}

// twoManagers returns two Managers on one directory (a Caddy reload runs
// the old and the new config side by side) sharing one importer.
func twoManagers(t *testing.T) (a, b *Manager, imp *countingImporter) {
	t.Helper()
	dir := t.TempDir()
	imp = &countingImporter{}
	newManager := func() *Manager {
		m, err := NewManager(Options{Dir: dir, Source: noSource{}, Importer: imp})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	return newManager(), newManager(), imp
}

func submitImport(t *testing.T, m *Manager, input io.Reader) *Job {
	t.Helper()
	j, err := m.SubmitImport(&Job{RecordID: "r", Format: "ndjson"}, input, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	// The queue is not worked (Run is not called): the tests run jobs
	// one by one with runJob.
	<-m.queue
	m.mu.Lock()
	delete(m.queued, j.ID)
	m.mu.Unlock()
	return j
}

func wantComplete(t *testing.T, m *Manager, id string, imp *countingImporter) {
	t.Helper()
	j, err := m.store.load(id)
	if err != nil {
		t.Fatal(err)
	}
	if j.Status != StatusComplete || j.Failure != nil {
		t.Errorf("the job is %s (%+v), want complete", j.Status, j.Failure)
	}
	if n := imp.runs.Load(); n != 1 {
		t.Errorf("the import ran %d times, want once", n)
	}
}

// TestJobFinishedBeforeTheClaimIsNotRunAgain: another Manager on the same
// directory runs the job to its end between this one's taking it from the
// queue and its claim. This one must see, once it holds the claim, that the
// job is finished, and leave it: not run the import again (its input is
// gone) and save it failed over the completed one.
func TestJobFinishedBeforeTheClaimIsNotRunAgain(t *testing.T) {
	a, b, imp := twoManagers(t)
	j := submitImport(t, a, strings.NewReader("data"))
	ctx := t.Context()
	a.store = hookStore{jobStore: a.store, beforeClaim: func(id string) { b.runJob(ctx, id) }}
	a.runJob(ctx, j.ID)
	wantComplete(t, a, j.ID, imp)
}

// TestStartSweepDoesNotSaveOverAFinishedJob: a Manager starting (a reload's
// new config) lists a job as in progress while the old config's Manager
// still runs it; the old one finishes it before the new one resumes it. The
// new one must not save its stale copy (in progress) over the finished job,
// nor run it again.
func TestStartSweepDoesNotSaveOverAFinishedJob(t *testing.T) {
	a, b, imp := twoManagers(t)
	j := submitImport(t, a, strings.NewReader("data"))
	ctx := t.Context()
	b.store = hookStore{jobStore: b.store, afterList: func() { a.runJob(ctx, j.ID) }}
	b.sweep(true)
	if got, err := a.store.load(j.ID); err != nil || got.Status != StatusComplete {
		t.Fatalf("after the sweep the job is %+v (%v), want complete", got, err)
	}
	b.store = b.store.(hookStore).jobStore
	for len(b.queue) > 0 {
		b.runJob(ctx, <-b.queue)
	}
	wantComplete(t, a, j.ID, imp)
}

// TestStartSweepResumesAnUnfinishedJob: a job an earlier process left in
// progress is run by the next one and counted as resumed, once.
func TestStartSweepResumesAnUnfinishedJob(t *testing.T) {
	a, b, imp := twoManagers(t)
	j := submitImport(t, a, strings.NewReader("data"))
	b.sweep(true)
	if len(b.queue) != 1 {
		t.Fatalf("the sweep queued %d jobs, want 1", len(b.queue))
	}
	b.runJob(t.Context(), <-b.queue)
	wantComplete(t, b, j.ID, imp)
	if got, _ := b.store.load(j.ID); got.Resumed != 1 {
		t.Errorf("resumed %d times, want 1", got.Resumed)
	}
}

// listingReader lists the jobs (as a sweep or another Manager's Submit
// does) while an import's input is being received.
type listingReader struct {
	m    *Manager
	data io.Reader
	done bool
}

func (r *listingReader) Read(p []byte) (int, error) {
	if !r.done {
		r.done = true
		if _, errs := r.m.store.list(); len(errs) > 0 {
			return 0, fmt.Errorf("listing: %v", errs)
		}
	}
	return r.data.Read(p)
}

// TestListWhileAnImportIsReceived: listing the jobs while an import's input
// is written leaves the input alone (a directory without a job is what a
// crash left, and goes): the job runs complete with what was sent.
func TestListWhileAnImportIsReceived(t *testing.T) {
	a, b, imp := twoManagers(t)
	j := submitImport(t, a, &listingReader{m: b, data: strings.NewReader("data")})
	a.runJob(t.Context(), j.ID)
	wantComplete(t, a, j.ID, imp)
	got, _ := a.store.load(j.ID)
	var res struct{ Read string }
	if err := json.Unmarshal(got.Result, &res); err != nil || res.Read != "data" {
		t.Errorf("the import read %s (%v), want the input sent", got.Result, err)
	}
	if _, err := os.Stat(filepath.Join(a.store.workDir(j.ID), InputFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the finished import's input is still there: %v", err)
	}
}

// TestListRemovesStaleStaging: a staging directory nothing changed in for
// fileStore.stale is what a crash left while a job was submitted, and goes;
// a recent one (a submission under way) stays.
func TestListRemovesStaleStaging(t *testing.T) {
	s := fileStore{dir: t.TempDir(), stale: stagingStale}
	old, recent := filepath.Join(s.dir, stagingPrefix+"old"), filepath.Join(s.dir, stagingPrefix+"recent")
	for _, dir := range []string{old, recent} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, InputFile), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	then := time.Now().Add(-stagingStale - time.Hour)
	for _, p := range []string{filepath.Join(old, InputFile), old} {
		if err := os.Chtimes(p, then, then); err != nil {
			t.Fatal(err)
		}
	}
	if _, errs := s.list(); len(errs) > 0 {
		t.Fatal(errs)
	}
	if _, err := os.Stat(old); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the stale staging directory is still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(recent, InputFile)); err != nil {
		t.Errorf("the recent staging directory went: %v", err)
	}
}

// stealingImporter gives the job's lease to another node while it runs,
// as a node does that takes over a job whose lease lapsed (this node
// stalled), then saves.
type stealingImporter struct {
	db  kv.DB
	t   *testing.T
	err error
}

func (s *stealingImporter) Import(_ context.Context, j *Job, run *ImportRun) (json.RawMessage, error) {
	steal(s.t, s.db, j.ID, "other")
	s.err = run.Save()
	return nil, s.err
}

// TestLeaseLostInACluster: a node whose lease another node took saves
// nothing more (the job stays as the other node has it) and leaves no
// working files behind.
func TestLeaseLostInACluster(t *testing.T) {
	b := testkit.OpenBolt(t, filepath.Join(t.TempDir(), "pfr.db"))
	t.Cleanup(func() { _ = b.Close() })
	db := kv.Bolt(b)
	imp := &stealingImporter{db: db, t: t}
	m, err := NewManager(Options{Dir: t.TempDir(), Source: noSource{}, Importer: imp, Shared: db, Node: "a"})
	if err != nil {
		t.Fatal(err)
	}
	j := submitImport(t, m, strings.NewReader("data"))
	m.runJob(t.Context(), j.ID)
	if !errors.Is(imp.err, errLeaseLost) {
		t.Errorf("saving after the lease was taken: %v, want errLeaseLost", imp.err)
	}
	if got, err := m.store.load(j.ID); err != nil || got.Status != StatusInProgress || got.Failure != nil {
		t.Errorf("the job taken over is %+v (%v), want it in progress as the other node has it", got, err)
	}
	if left, _ := os.ReadDir(m.opts.Dir); len(left) > 0 {
		t.Errorf("the node's directory still holds %v", left)
	}
}
