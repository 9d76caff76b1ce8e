package dopu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pfrgateway/caddy-pfr/fhir"
)

// largeBundle returns a distinct collection of at least FileBodyMin bytes.
func largeBundle(t testing.TB, n int) []byte {
	body := bundleJSON(t, "collection", patient("Large", fmt.Sprint(n), "2000-01-01", "other"),
		map[string]any{"resourceType": "Basic", "text": map[string]any{"status": "generated", "div": strings.Repeat(fmt.Sprintf("%d ", n), FileBodyMin/2)}})
	if len(body) < FileBodyMin {
		t.Fatalf("the large Bundle has %d bytes", len(body))
	}
	return body
}

// bodyFileNames lists the files of the fixture's body directory.
func bodyFileNames(t *testing.T, f *fixture) []string {
	t.Helper()
	entries, err := os.ReadDir(f.path + ".dropoffs")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// TestLargeBodiesInFiles: on bbolt a body of FileBodyMin bytes or more is
// a file of its own, byte for byte, that goes when the drop-off leaves
// pending; a small one stays in the database; a duplicate or a refused
// drop-off leaves no file.
func TestLargeBodiesInFiles(t *testing.T) {
	f := newFixture(t, Limits{PendingPerRecord: 2}, Options{})
	f.boltOnly()
	large, small := largeBundle(t, 1), smallBundle(t)
	r := f.mustDrop("rec1", large, "192.0.2.1")
	f.mustDrop("rec1", small, "192.0.2.1")
	if got := bodyFileNames(t, f); !slices.Equal(got, []string{r.ID}) {
		t.Fatalf("body files %v, want [%s]", got, r.ID)
	}
	onDisk, err := os.ReadFile(filepath.Join(f.path+".dropoffs", r.ID))
	if err != nil || !bytes.Equal(onDisk, large) {
		t.Fatalf("the body file differs from the body (%v)", err)
	}
	_, body, err := f.svc.Get(context.Background(), "rec1", r.ID)
	if err != nil || !bytes.Equal(body, large) {
		t.Fatalf("Get: %v, body equal %v", err, bytes.Equal(body, large))
	}
	// The same body again: the first receipt, no second file.
	if again := f.mustDrop("rec1", large, "192.0.2.1"); !again.Duplicate || again.ID != r.ID {
		t.Fatalf("again: %+v", again)
	}
	// Over the quota (two pending): refused, no file left.
	_, err = f.drop("rec1", largeBundle(t, 2), "192.0.2.1")
	var fe *fhir.Error
	if !errors.As(err, &fe) || fe.Status != http.StatusTooManyRequests {
		t.Fatalf("over the quota: %v", err)
	}
	if got := bodyFileNames(t, f); len(got) != 1 {
		t.Fatalf("body files after a duplicate and a refusal: %v", got)
	}
	if err := f.svc.Reject(context.Background(), "rec1", r.ID, "no"); err != nil {
		t.Fatal(err)
	}
	if got := bodyFileNames(t, f); len(got) != 0 {
		t.Fatalf("body files after the rejection: %v", got)
	}
	// The store is whole after a restart.
	f.reopen(Limits{}, Options{})
	if got := bodyFileNames(t, f); len(got) != 0 {
		t.Fatalf("body files after reopening: %v", got)
	}
}

func smallBundle(t *testing.T) []byte {
	body := bundleJSON(t, "collection", patient("Small", "One", "2000-01-01", "other"))
	if len(body) >= FileBodyMin {
		t.Fatal("the small Bundle is large")
	}
	return body
}

// TestBodyFilesSweptAtOpen: opening the store removes body files that no
// drop-off refers to (a crash between writing the file and committing),
// and keeps those referred to and those an intake of this process is
// staging.
func TestBodyFilesSweptAtOpen(t *testing.T) {
	f := newFixture(t, Limits{}, Options{})
	f.boltOnly()
	r := f.mustDrop("rec1", largeBundle(t, 1), "192.0.2.1")
	dir := f.path + ".dropoffs"
	orphan := filepath.Join(dir, newID())
	if err := os.WriteFile(orphan, []byte(`{"half`), 0o600); err != nil {
		t.Fatal(err)
	}
	inFlight := newID()
	done, err := f.svc.store.(bodyStager).stageBody(inFlight, largeBundle(t, 2))
	if err != nil || done == nil {
		t.Fatalf("staging: %v", err)
	}
	f.reopen(Limits{}, Options{})
	got := bodyFileNames(t, f)
	want := []string{r.ID, inFlight}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("after reopening: %v, want %v", got, want)
	}
	done(false)
	if got := bodyFileNames(t, f); !slices.Equal(got, []string{r.ID}) {
		t.Fatalf("after the staged body was discarded: %v", got)
	}
	// A reference to a file that is gone reads as no body, not as a
	// half-stored one.
	if err := os.Remove(filepath.Join(dir, r.ID)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.svc.Get(context.Background(), "rec1", r.ID); err == nil {
		t.Fatal("Get of a drop-off whose body file is gone succeeded")
	}
}

// staleStore answers its first View as a snapshot taken before the
// drop-off left pending (its status pending, its body file already
// removed), and passes every later call through.
type staleStore struct {
	Store
	stale *DropOff
	views int
}

type staleTx struct {
	Tx
	stale *DropOff
}

func (s *staleStore) View(ctx context.Context, fn func(Tx) error) error {
	s.views++
	if s.views > 1 {
		return s.Store.View(ctx, fn)
	}
	return s.Store.View(ctx, func(tx Tx) error { return fn(staleTx{tx, s.stale}) })
}

func (t staleTx) Get(id string) (*DropOff, error) {
	d := *t.stale
	return &d, nil
}

func (t staleTx) Body(string) ([]byte, error) { return nil, ErrNoBody }

// TestGetAfterBodyFileRemoved: a preview whose snapshot still shows the
// drop-off pending while a newer transaction took it out of pending and
// removed its body file answers with the drop-off as it is now, not with
// an error.
func TestGetAfterBodyFileRemoved(t *testing.T) {
	f := newFixture(t, Limits{}, Options{})
	r := f.mustDrop("rec1", largeBundle(t, 1), "192.0.2.1")
	var pending *DropOff
	err := f.svc.store.View(context.Background(), func(tx Tx) error {
		var err error
		pending, err = tx.Get(r.ID)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.svc.Reject(context.Background(), "rec1", r.ID, "no"); err != nil {
		t.Fatal(err)
	}
	f.svc.store = &staleStore{Store: f.svc.store, stale: pending}
	sum, body, err := f.svc.Get(context.Background(), "rec1", r.ID)
	if err != nil || sum.Status != StatusRejected || body != nil {
		t.Fatalf("Get: %+v, %d bytes, %v; want rejected, no body, no error", sum, len(body), err)
	}
}
