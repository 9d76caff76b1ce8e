package caddymodule

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/caddyserver/caddy/v2"
	bolt "go.etcd.io/bbolt"

	"github.com/pfrgateway/caddy-pfr/store"
)

// Caddy provisions a new config before it cleans up the old one, and bbolt
// locks its file: every module that opens a database goes through these pools,
// keyed by absolute path, so a reload shares the open handle and the last
// Cleanup closes it.
var (
	boltPool  = caddy.NewUsagePool()
	storePool = caddy.NewUsagePool()
)

// lockTimeout bounds how long a second process waits for a database file
// that another process holds, so it fails with a clear error instead of hanging.
const lockTimeout = 2 * time.Second

type pooledBolt struct{ db *bolt.DB }

func (p pooledBolt) Destruct() error { return p.db.Close() }

type pooledStore struct{ db *store.DB }

func (p pooledStore) Destruct() error { return p.db.Close() }

// openBolt opens (or shares) the bbolt file at path. The caller must delete
// the returned key from boltPool in Cleanup (see openedState.release).
func openBolt(path string) (db *bolt.DB, key string, err error) {
	key, err = filepath.Abs(path)
	if err != nil {
		return nil, "", fmt.Errorf("resolving database path %q: %w", path, err)
	}
	val, _, err := boltPool.LoadOrNew(key, func() (caddy.Destructor, error) {
		if err := os.MkdirAll(filepath.Dir(key), 0o700); err != nil {
			return nil, fmt.Errorf("creating directory for %s: %w", key, err)
		}
		db, err := bolt.Open(key, 0o600, &bolt.Options{Timeout: lockTimeout})
		if err != nil {
			return nil, fmt.Errorf("opening %s (is another process using it?): %w", key, err)
		}
		return pooledBolt{db: db}, nil
	})
	if err != nil {
		return nil, "", err
	}
	return val.(pooledBolt).db, key, nil
}

// openStore opens (or shares) the embedded FHIR store at path; logf gets
// the progress of long work at open (the one-time indexing).
func openStore(path string, logf func(string, ...any)) (db *store.DB, key string, err error) {
	key, err = filepath.Abs(path)
	if err != nil {
		return nil, "", fmt.Errorf("resolving store path %q: %w", path, err)
	}
	val, _, err := storePool.LoadOrNew(key, func() (caddy.Destructor, error) {
		if err := os.MkdirAll(filepath.Dir(key), 0o700); err != nil {
			return nil, fmt.Errorf("creating directory for %s: %w", key, err)
		}
		db, err := store.Open(key, &store.Options{LockTimeout: lockTimeout, Logf: logf})
		if err != nil {
			return nil, fmt.Errorf("opening FHIR store %s: %w", key, err)
		}
		return pooledStore{db: db}, nil
	})
	if err != nil {
		return nil, "", err
	}
	return val.(pooledStore).db, key, nil
}

func releaseStore(key string) error {
	if key == "" {
		return nil
	}
	_, err := storePool.Delete(key)
	return err
}
