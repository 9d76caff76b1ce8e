package store

import (
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Options tunes Open. The zero value is ready to use.
type Options struct {
	// LockTimeout bounds how long Open waits for the file lock held by
	// another process before it fails. Default 2s.
	LockTimeout time.Duration
	// Now returns the current time; tests may pin it. Default time.Now.
	Now func() time.Time
	// Logf, if set, receives progress messages of long work at Open (the
	// one-time indexing of a database written by an older version).
	Logf func(format string, args ...any)
	// NoIndexes turns the search indexes off: searches read every
	// resource of the type, writes keep no index. For measuring what the
	// indexes bring; the next Open without it rebuilds them.
	NoIndexes bool
}

// DB is an open store file. It is safe for concurrent use; many handlers may
// share one DB.
type DB struct {
	bolt    *bolt.DB
	now     func() time.Time
	noIndex bool

	// snapshots are the paging snapshots of searches (in memory).
	snapshots snapshots
	// overlays are the index log's changes as searches read them.
	overlays overlayCache
}

// Root bucket names. Every partition's data lives under its own bucket so
// that deleting a partition is deleting one bucket.
var (
	bucketMeta       = []byte("meta")       // sequence counters
	bucketPartitions = []byte("partitions") // partition key → partitionInfo JSON
	// bucketSearches held the paging snapshots before they moved to
	// memory; Open drops it from older files.
	bucketSearches = []byte("searches")
)

// Nested bucket names inside a partition bucket.
var (
	bucketCurrent  = []byte("current")  // type bucket: id → current record
	bucketVersions = []byte("versions") // type\x00id\x00version → record
	bucketSequence = []byte("sequence") // global seq → type\x00id\x00version
)

const defaultLockTimeout = 2 * time.Second

// Open opens (creating if needed) the bbolt file at path. A second process
// gets a clear error after opts.LockTimeout (default 2s) instead of hanging.
func Open(path string, opts *Options) (*DB, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = defaultLockTimeout
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	// The free-page list is not written at each commit (it is rebuilt by
	// reading the file's page tree at Open: 0.4-0.8 s for a 570 MB file
	// in the page cache): with the thousands of free pages a large file
	// has after its indexes are built, it was 16 of a single write's ~36
	// pages. The map form keeps a large list cheap to search.
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:        o.LockTimeout,
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open store %s: file is locked by another process (waited %s): %w", path, o.LockTimeout, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	err = bdb.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketPartitions} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		if tx.Bucket(bucketSearches) != nil {
			if err := tx.DeleteBucket(bucketSearches); err != nil {
				return fmt.Errorf("drop the old search snapshots: %w", err)
			}
		}
		// The default partition always exists, as in HAPI.
		if _, err := tx.CreateBucketIfNotExists(partitionBucketName(defaultPartitionKey)); err != nil {
			return fmt.Errorf("create default partition: %w", err)
		}
		return nil
	})
	if err != nil {
		_ = bdb.Close()
		return nil, fmt.Errorf("initialize store %s: %w", path, err)
	}
	db := &DB{bolt: bdb, now: o.Now, noIndex: o.NoIndexes}
	if err := db.buildIndexes(o.Logf); err != nil {
		_ = bdb.Close()
		return nil, fmt.Errorf("index store %s: %w", path, err)
	}
	return db, nil
}

// Close closes the file. Handlers using the DB must not be called afterwards.
func (db *DB) Close() error {
	if err := db.bolt.Close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}

// Path returns the file the DB was opened from.
func (db *DB) Path() string { return db.bolt.Path() }

// clock returns the current time truncated to milliseconds in UTC, the
// precision FHIR instants carry in this store.
func (db *DB) clock() time.Time { return db.now().UTC().Truncate(time.Millisecond) }
