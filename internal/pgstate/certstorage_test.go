package pgstate_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/pgstate"
	"github.com/pfrgateway/caddy-pfr/internal/pgtest"
)

func TestCertStorageFiles(t *testing.T) {
	ctx := context.Background()
	s := pgstate.NewCertStorage(pgtest.OpenState(t, pgtest.DSN(t)))
	if _, err := s.Load(ctx, "certificates/x/x.crt"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load of a missing key = %v, want fs.ErrNotExist", err)
	}
	for k, v := range map[string]string{
		"certificates/acme/a.example/a.example.crt": "crt-a",
		"certificates/acme/a.example/a.example.key": "key-a",
		"certificates/acme/ab/ab.crt":               "crt-ab",
		"acme/account.json":                         "acct",
		"weird%_key":                                "",
	} {
		if err := s.Store(ctx, k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Store(ctx, "acme/account.json", []byte("acct2")); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Load(ctx, "acme/account.json"); err != nil || string(v) != "acct2" {
		t.Fatalf("Load after overwrite = %q, %v", v, err)
	}
	if v, err := s.Load(ctx, "weird%_key"); err != nil || v == nil || len(v) != 0 {
		t.Fatalf("empty value = %#v, %v", v, err)
	}
	for key, want := range map[string]bool{
		"certificates": true, "certificates/acme/a.example": true, "certificates/acme/a": false,
		"acme/account.json": true, "weird": false, "weird%_key": true, "nothing": false,
	} {
		if got := s.Exists(ctx, key); got != want {
			t.Errorf("Exists(%q) = %v, want %v", key, got, want)
		}
	}
	info, err := s.Stat(ctx, "certificates/acme/a.example/a.example.crt")
	if err != nil || !info.IsTerminal || info.Size != 5 || time.Since(info.Modified) > time.Hour {
		t.Errorf("Stat of a file = %+v, %v", info, err)
	}
	if info, err := s.Stat(ctx, "certificates/acme"); err != nil || info.IsTerminal {
		t.Errorf("Stat of a directory = %+v, %v", info, err)
	}
	if _, err := s.Stat(ctx, "certificates/acme/a"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat of a missing key = %v", err)
	}
	list, err := s.List(ctx, "certificates/acme", false)
	if err != nil || fmt.Sprint(list) != "[certificates/acme/a.example certificates/acme/ab]" {
		t.Errorf("List non-recursive = %v, %v", list, err)
	}
	list, err = s.List(ctx, "certificates", true)
	if err != nil || len(list) != 3 {
		t.Errorf("List recursive = %v, %v", list, err)
	}
	if _, err := s.List(ctx, "nothing", true); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("List of a missing path = %v", err)
	}
	// Deleting a directory deletes what is under it, and only that.
	if err := s.Delete(ctx, "certificates/acme/a.example"); err != nil {
		t.Fatal(err)
	}
	if s.Exists(ctx, "certificates/acme/a.example") || !s.Exists(ctx, "certificates/acme/ab/ab.crt") {
		t.Error("Delete of a directory removed the wrong keys")
	}
	if err := s.Delete(ctx, "never/was"); err != nil {
		t.Errorf("Delete of a missing key = %v", err)
	}
}

// Two nodes (two pools): a lock excludes the other node until unlocked; a
// lock whose holder died runs out and is taken over, and the dead
// holder's late Unlock leaves the new holder's lock alone.
func TestCertStorageLocks(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	dbA := pgtest.OpenState(t, dsn)
	a, b := pgstate.NewCertStorage(dbA), pgstate.NewCertStorage(pgtest.OpenState(t, dsn))
	if err := a.Lock(ctx, "issue_cert_x"); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	err := b.Lock(short, "issue_cert_x")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("B locked a lock A holds: %v", err)
	}
	if err := b.Lock(ctx, "other_name"); err != nil {
		t.Fatalf("another name: %v", err)
	}
	if err := a.Unlock(ctx, "issue_cert_x"); err != nil {
		t.Fatal(err)
	}
	if err := b.Lock(ctx, "issue_cert_x"); err != nil {
		t.Fatalf("B after A unlocked: %v", err)
	}
	if err := b.Unlock(ctx, "issue_cert_x"); err != nil {
		t.Fatal(err)
	}
	if err := b.Unlock(ctx, "issue_cert_x"); err == nil {
		t.Error("a second Unlock succeeded")
	}

	// A holds the lock and "dies": its lease runs out (moved into the past
	// here rather than waited for).
	if err := a.Lock(ctx, "issue_cert_y"); err != nil {
		t.Fatal(err)
	}
	if _, err := dbA.Pool().Exec(ctx, "UPDATE pfr_cert_locks SET expires = now() - interval '1 second' WHERE name = 'issue_cert_y'"); err != nil {
		t.Fatal(err)
	}
	if err := b.Lock(ctx, "issue_cert_y"); err != nil {
		t.Fatalf("B could not take over an expired lock: %v", err)
	}
	if err := a.Unlock(ctx, "issue_cert_y"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := dbA.Pool().QueryRow(ctx, "SELECT count(*) FROM pfr_cert_locks WHERE name = 'issue_cert_y' AND expires > now()").Scan(&n); err != nil || n != 1 {
		t.Fatalf("A's late Unlock released B's lock: %d rows, %v", n, err)
	}
	short, cancel = context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := a.Lock(short, "issue_cert_y"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("A relocked while B holds the lock: %v", err)
	}
}
