package testkit

import (
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// OpenBolt opens (or creates) the bbolt file at path, failing t when it
// cannot, waiting at most five seconds for another handle's lock. The
// caller closes it: tests close and reopen files to check what survives.
func OpenBolt(t testing.TB, path string) *bbolt.DB {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("opening %s: %v", path, err)
	}
	return db
}
