package store

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestOpenLockedFileFailsClearly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "locked.db")
	db, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// flock is per open file, so a second Open in this process contends
	// exactly like a second process would.
	_, err = Open(path, &Options{LockTimeout: 100 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "locked by another process") {
		t.Fatalf("second Open: %v", err)
	}
	if _, err := Open(filepath.Join(t.TempDir(), "missing-dir", "x.db"), nil); err == nil {
		t.Fatal("Open in a missing directory succeeded")
	}
}

func TestDataSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "reopen.db")
	db, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.bolt.Update(func(tx *bolt.Tx) error {
		return createPartition(tx, partitionInfo{ID: 3, Name: "three"})
	}); err != nil {
		t.Fatal(err)
	}
	err = db.update("3", func(p *ptx) error {
		_, err := createWithID(p, "Patient", "kept", resource{"resourceType": "Patient"})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.view("3", func(p *ptx) error {
		_, err := p.live("Patient", "kept")
		return err
	})
	if err != nil {
		t.Fatalf("after reopen: %v", err)
	}
}

func TestAbsoluteURLsFollowTheRequest(t *testing.T) {
	s := newTestServer(t)
	r := s.must(http.StatusCreated, "POST", "/fhir/Patient", "DEFAULT", patient("U"), "X-Forwarded-Proto", "https")
	if !strings.HasPrefix(r.Header.Get("Location"), "https://"+strings.TrimPrefix(s.srv.URL, "http://")+"/fhir/Patient/") {
		t.Fatalf("Location %q", r.Header.Get("Location"))
	}
	r = s.must(http.StatusCreated, "POST", "/fhir/Patient", "DEFAULT", patient("U"), "X-Forwarded-Proto", "javascript")
	if !strings.HasPrefix(r.Header.Get("Location"), s.srv.URL+"/fhir/Patient/") {
		t.Fatalf("Location %q", r.Header.Get("Location"))
	}
	b := s.must(http.StatusOK, "GET", "/fhir/Patient", "DEFAULT", nil, "Host", "john.pfr.example").JSON(t)
	if !strings.HasPrefix(str(b, "entry", 0, "fullUrl"), "http://") {
		t.Fatalf("fullUrl %q", str(b, "entry", 0, "fullUrl"))
	}
}

func TestCustomBaseAndHeader(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "c.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := NewHandler(db, Config{BasePath: "fhir"}); err == nil {
		t.Fatal("relative base path accepted")
	}
	if _, err := NewHandler(nil, Config{}); err == nil {
		t.Fatal("nil DB accepted")
	}
	h, err := NewHandler(db, Config{BasePath: "/r4/", PartitionHeader: "X-Tenant"})
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{t: t, db: db, srv: newLocalServer(t, h)}
	r := s.do("POST", "/r4/Patient", "", patient("C"), "X-Tenant", "DEFAULT")
	if r.Status != http.StatusCreated || !strings.Contains(r.Header.Get("Location"), "/r4/Patient/") {
		t.Fatalf("%d %v", r.Status, r.Header)
	}
	expectOutcome(t, s.do("POST", "/r4/Patient", "DEFAULT", patient("C")), http.StatusBadRequest, "X-Tenant")
}
