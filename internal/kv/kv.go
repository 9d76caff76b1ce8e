// Package kv is the ordered key-value transaction model that the gateway's
// state packages (tenancy, dopu, audit) are written on, with two
// implementations: bbolt for one node (Bolt) and PostgreSQL for several
// (package internal/pgstate). Keeping the business logic above this seam
// means both databases run the very same code, so they cannot drift apart.
//
// The model is bbolt's: named buckets of byte keys in byte order, atomic
// read-write transactions that serialize, read-only transactions on a
// consistent snapshot, cursors and a per-bucket sequence.
package kv

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/bbolt"

	"github.com/pfrgateway/caddy-pfr/internal/boltutil"
)

// DB is a transactional key-value database.
type DB interface {
	// Update runs fn in one atomic, durable read-write transaction.
	// Updates on the same DB serialize (across processes too): one
	// behaves as if it ran alone. If fn fails, panics, or ctx is done when
	// it returns, nothing fn did is kept; fn's error is returned
	// unchanged unless the database itself failed during fn, whose error
	// is returned instead. owner names the calling package in errors.
	Update(ctx context.Context, owner string, fn func(Tx) error) error
	// View runs fn in a read-only transaction on a consistent snapshot.
	View(ctx context.Context, owner string, fn func(Tx) error) error
	// CreateBuckets makes the named buckets exist.
	CreateBuckets(names [][]byte) error
}

// Tx is one transaction; valid only while the function given to Update or
// View runs.
type Tx interface {
	// Bucket returns the named bucket; it must have been created.
	Bucket(name []byte) Bucket
}

// Bucket is an ordered map of byte keys to byte values. Values returned
// are valid only during the transaction.
type Bucket interface {
	// Get returns the key's value, or nil when it is absent. A present
	// key with an empty value gives a non-nil empty slice.
	Get(key []byte) []byte
	// Put sets the key's value.
	Put(key, value []byte) error
	// Delete removes the key; removing an absent key is no error.
	Delete(key []byte) error
	// Cursor returns a cursor over the bucket in key order.
	Cursor() Cursor
	// NextSequence returns the bucket's next sequence number, starting at
	// 1. It rolls back with the transaction.
	NextSequence() (uint64, error)
	// ForEach calls fn for every key in order; fn must not change the
	// bucket.
	ForEach(fn func(k, v []byte) error) error
}

// Cursor walks a bucket in key order. Each method returns the key and
// value it moved to, or a nil key past either end.
type Cursor interface {
	First() (key, value []byte)
	Last() (key, value []byte)
	// Seek moves to the first key not before seek.
	Seek(seek []byte) (key, value []byte)
	Next() (key, value []byte)
	Prev() (key, value []byte)
}

// Bolt returns the DB on a bbolt database (the single-node default). The
// database stays the caller's.
func Bolt(db *bbolt.DB) DB { return boltDB{db} }

type boltDB struct{ db *bbolt.DB }

// BoltDB returns the bbolt database under a DB from Bolt.
func (b boltDB) BoltDB() *bbolt.DB { return b.db }

// BoltOf returns the bbolt database under db, or nil when db is not on
// bbolt (PostgreSQL). A DB wrapping another may forward by having a method
// BoltDB() *bbolt.DB. A writable bbolt file is held by one process (its
// file lock), so every change to it is made through this process: a
// caller may keep in memory what it would otherwise read from the
// database to learn of changes, keyed by the *bbolt.DB returned (the same
// for every DB on one open database).
func BoltOf(db DB) *bbolt.DB {
	if b, ok := db.(interface{ BoltDB() *bbolt.DB }); ok {
		return b.BoltDB()
	}
	return nil
}

func (b boltDB) Update(ctx context.Context, owner string, fn func(Tx) error) error {
	return boltutil.Update(ctx, b.db, owner, func(tx *bbolt.Tx) error { return fn(boltTx{tx}) })
}

func (b boltDB) View(ctx context.Context, owner string, fn func(Tx) error) error {
	return boltutil.View(ctx, b.db, owner, func(tx *bbolt.Tx) error { return fn(boltTx{tx}) })
}

func (b boltDB) CreateBuckets(names [][]byte) error {
	if b.db == nil {
		return errors.New("nil database")
	}
	return boltutil.CreateBuckets(b.db, names)
}

type boltTx struct{ tx *bbolt.Tx }

func (t boltTx) Bucket(name []byte) Bucket {
	b := t.tx.Bucket(name)
	if b == nil {
		panic(fmt.Sprintf("kv: bucket %s was not created", name))
	}
	return boltBucket{b}
}

type boltBucket struct{ *bbolt.Bucket }

func (b boltBucket) Cursor() Cursor { return b.Bucket.Cursor() }
