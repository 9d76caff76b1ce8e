// Package boltutil holds what the packages sharing the gateway's bbolt file
// (tenancy, dopu, audit) each need the same way.
package boltutil

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/bbolt"
)

// CreateBuckets creates the named buckets of db that do not exist yet, in
// one transaction.
func CreateBuckets(db *bbolt.DB, names [][]byte) error {
	if db == nil {
		return errors.New("nil database")
	}
	return db.Update(func(tx *bbolt.Tx) error {
		for _, name := range names {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("creating bucket %s: %w", name, err)
			}
		}
		return nil
	})
}

// Update runs fn in one read-write transaction of db and commits it, unless
// ctx is done before or after fn, or fn fails or panics: then nothing fn
// did is kept. fn's error is returned unchanged; the transaction's own
// errors are wrapped and start with owner (the calling package's name).
func Update(ctx context.Context, db *bbolt.DB, owner string, fn func(*bbolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	tx, err := db.Begin(true)
	if err != nil {
		return fmt.Errorf("%s: beginning transaction: %w", owner, err)
	}
	// Rolls back unless committed, also when fn panics.
	defer func() { _ = tx.Rollback() }()
	if err := fn(tx); err != nil {
		return err
	}
	// A caller that gave up must not find its work half-kept.
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("%s: committing: %w", owner, err)
	}
	return nil
}

// View runs fn in a read-only transaction of db; errors as in Update.
func View(ctx context.Context, db *bbolt.DB, owner string, fn func(*bbolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	tx, err := db.Begin(false)
	if err != nil {
		return fmt.Errorf("%s: beginning transaction: %w", owner, err)
	}
	defer func() { _ = tx.Rollback() }()
	return fn(tx)
}
