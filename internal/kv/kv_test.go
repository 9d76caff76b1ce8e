package kv_test

import (
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/pfrgateway/caddy-pfr/internal/kv"
	"github.com/pfrgateway/caddy-pfr/internal/kv/kvtest"
)

func TestBoltConformance(t *testing.T) {
	kvtest.Run(t, func(t *testing.T) kv.DB {
		// A large initial map: a writer that grows the map waits for open
		// readers, which the snapshot test holds open.
		db, err := bbolt.Open(filepath.Join(t.TempDir(), "kv.db"), 0o600,
			&bbolt.Options{Timeout: time.Second, InitialMmapSize: 16 << 20})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		return kv.Bolt(db)
	})
}
