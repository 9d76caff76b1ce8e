package bulk

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/kv"
	"github.com/pfrgateway/caddy-pfr/internal/pgtest"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// TestSharedStore runs on bbolt and on PostgreSQL (the cluster's state):
// two nodes see one job; a lease lets one node run it, another takes it
// over once the lease expired without renewal (its node died), a node's
// renewals carry its progress to the others, a node whose lease was taken
// stops (lost) and cannot save any more; files are
// kept in chunks and read, sought and fetched on another node; removing
// the job removes its files and lease.
func TestSharedStore(t *testing.T) {
	for _, name := range []string{"bbolt", "postgres"} {
		t.Run(name, func(t *testing.T) {
			var db kv.DB
			if name == "postgres" {
				db = pgtest.OpenState(t, pgtest.DSN(t))
			} else {
				b := testkit.OpenBolt(t, filepath.Join(t.TempDir(), "pfr.db"))
				t.Cleanup(func() { _ = b.Close() })
				db = kv.Bolt(b)
			}
			testSharedStore(t, db)
		})
	}
}

func testSharedStore(t *testing.T, db kv.DB) {
	const ttl = 300 * time.Millisecond
	store := func(node string, ttl time.Duration) *sharedStore {
		s, err := newSharedStore(db, t.TempDir(), node, ttl)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// dead's lease lasts an hour: that it is live when b tries it does
	// not depend on how fast this test runs; the test makes it stale.
	a, b, dead := store("a", ttl), store("b", ttl), store("dead", time.Hour)
	id, _ := newJobID()
	j := &Job{ID: id, RecordID: "r", Status: StatusInProgress, Types: []string{"Observation"}}
	if err := a.create(j, nil); err != nil {
		t.Fatal(err)
	}
	if got, err := b.load(id); err != nil || got.RecordID != "r" {
		t.Fatalf("node b loads %+v, %v", got, err)
	}

	// A lease held by a node that died: nobody else runs the job until
	// it expires; then b takes it over, and the dead node can no longer
	// save.
	releaseDead, _, _, ok := dead.claim(id, nil)
	if !ok {
		t.Fatal("the first claim failed")
	}
	t.Cleanup(releaseDead) // (its first renewal would come in 20 minutes)
	if _, _, _, ok := b.claim(id, nil); ok {
		t.Fatal("b took a live lease")
	}
	// Its lease goes stale, as a killed node's does.
	expire(t, db, id, "dead")
	releaseB, _, takeover, ok := b.claim(id, nil)
	if !ok {
		t.Fatal("b cannot take the expired lease")
	}
	if !takeover {
		t.Error("taking another node's expired lease is not reported as a takeover")
	}
	if err := dead.update(j); !errors.Is(err, errLeaseLost) {
		t.Errorf("the dead node saved over b's lease: %v", err)
	}
	if err := b.update(j); err != nil {
		t.Errorf("b cannot save: %v", err)
	}

	// Once b finished and released the lease, neither the node whose
	// lease b took nor b saves any more: the job is not theirs.
	releaseB()
	if err := dead.update(j); !errors.Is(err, errLeaseLost) {
		t.Errorf("the dead node saved after b released the job: %v", err)
	}
	if err := b.update(j); !errors.Is(err, errLeaseLost) {
		t.Errorf("b saved after releasing the job: %v", err)
	}

	// A node whose lease another node took is told so.
	releaseA, lost, _, ok := a.claim(id, func() Progress { return Progress{Type: "Observation", Written: 7} })
	if !ok {
		t.Fatal("a cannot claim a released lease")
	}
	// Its renewals carry its progress to the other nodes.
	testkit.Wait(t, "b to see a's progress", func() bool {
		p, ok := b.progress(id)
		return ok && p.Type == "Observation" && p.Written == 7
	})
	steal(t, db, id, "b")
	select {
	case <-lost:
	case <-testkit.WaitContext(t).Done():
		t.Error("a was not told that its lease was taken")
	}
	releaseA()

	// Files: kept from a's working directory, read on b.
	content := make([]byte, 2*chunkSize+chunkSize/2)
	_, _ = rand.Read(content)
	if err := os.MkdirAll(a.workDir(id), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(a.workDir(id), "Observation.ndjson"), content, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := a.keep(id, "Observation.ndjson"); err != nil {
		t.Fatal(err)
	}
	r, err := b.open(id, "Observation.ndjson")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("b read %d bytes (%v), want the %d kept", len(got), err, len(content))
	}
	if end, err := r.Seek(-10, io.SeekEnd); err != nil || end != int64(len(content))-10 {
		t.Fatalf("seek: %d %v", end, err)
	}
	if tail, _ := io.ReadAll(r); !bytes.Equal(tail, content[len(content)-10:]) {
		t.Error("reading after a seek gives other bytes")
	}
	if _, err := r.Seek(chunkSize-3, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	across := make([]byte, 6)
	if _, err := io.ReadFull(r, across); err != nil || !bytes.Equal(across, content[chunkSize-3:chunkSize+3]) {
		t.Errorf("reading across a chunk boundary: %v", err)
	}
	if err := b.fetch(id, "Observation.ndjson"); err != nil {
		t.Fatal(err)
	}
	if fetched, _ := os.ReadFile(filepath.Join(b.workDir(id), "Observation.ndjson")); !bytes.Equal(fetched, content) {
		t.Error("the fetched file differs")
	}

	if err := b.remove(id); err != nil {
		t.Fatal(err)
	}
	if _, err := a.load(id); !errors.Is(err, ErrNotFound) {
		t.Errorf("the removed job loads: %v", err)
	}
	if _, err := a.open(id, "Observation.ndjson"); !errors.Is(err, ErrNotFound) {
		t.Errorf("the removed job's file opens: %v", err)
	}
	release, _, _, ok := a.claim(id, nil)
	if !ok {
		t.Fatal("the removed job's lease is still held")
	}
	if err := a.update(j); !errors.Is(err, ErrNotFound) {
		t.Errorf("saving the removed job: %v, want ErrNotFound", err)
	}
	release()
}

// expire makes node's lease of id stale, as when the node was killed.
func expire(t *testing.T, db kv.DB, id, node string) {
	t.Helper()
	setLease(t, db, id, lease{Node: node, Until: time.Now().Add(-time.Second)}, node)
}

// steal gives id's lease to node, as a takeover by node does.
func steal(t *testing.T, db kv.DB, id, node string) {
	t.Helper()
	setLease(t, db, id, lease{Node: node, Until: time.Now().Add(time.Hour)}, "")
}

// setLease writes l, only over a lease of onlyOver when that is set.
func setLease(t *testing.T, db kv.DB, id string, l lease, onlyOver string) {
	t.Helper()
	err := db.Update(context.Background(), "test", func(tx kv.Tx) error {
		if cur, ok := readLease(tx, id); onlyOver != "" && (!ok || cur.Node != onlyOver) {
			return nil
		}
		raw, _ := json.Marshal(l)
		return tx.Bucket(bucketLeases).Put([]byte(id), raw)
	})
	if err != nil {
		t.Fatal(err)
	}
}
