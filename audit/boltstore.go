package audit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/bbolt"

	"github.com/pfrgateway/caddy-pfr/internal/kv"
)

// Store keeps the log's events. It is shaped by what the log does (append
// a batch and prune, look for expired events, list a record's newest,
// delete a record), not by buckets; KVStore implements it on bbolt and on
// PostgreSQL alike.
type Store interface {
	// Write appends events in one transaction, then keeps at most
	// maxPerRecord events of every record it touched and deletes events
	// older than cutoff (possibly in several rounds).
	Write(ctx context.Context, events []Event, maxPerRecord uint64, cutoff time.Time) error
	// HasExpired reports whether some event is older than cutoff.
	HasExpired(ctx context.Context, cutoff time.Time) (bool, error)
	// Newest returns up to limit events of recordID at or after from,
	// newest first.
	Newest(ctx context.Context, recordID string, from time.Time, limit int) ([]Stored, error)
	// DeleteRecord deletes every event of recordID.
	DeleteRecord(ctx context.Context, recordID string) error
}

// KVStore is the Store on an internal/kv database: a bbolt file shared
// with the gateway's other packages (buckets "audit/…", see BoltBuckets) or
// PostgreSQL (an internal/pgstate.DB) for several nodes.
type KVStore struct{ db kv.DB }

var _ Store = (*KVStore)(nil)

// NewBoltStore returns a Store on db, creating its buckets if needed.
func NewBoltStore(db *bbolt.DB) (*KVStore, error) {
	if db == nil {
		return nil, errors.New("audit: nil database")
	}
	return NewStore(kv.Bolt(db))
}

// NewStore returns a Store on db, creating its buckets if needed.
func NewStore(db kv.DB) (*KVStore, error) {
	if db == nil {
		return nil, errors.New("audit: nil database")
	}
	if err := db.CreateBuckets(BoltBuckets); err != nil {
		return nil, fmt.Errorf("audit: opening log: %w", err)
	}
	return &KVStore{db: db}, nil
}

// Write implements Store. It does not stop halfway for a cancelled
// context: the caller took the events from its queue.
func (s *KVStore) Write(ctx context.Context, events []Event, maxPerRecord uint64, cutoff time.Time) error {
	return s.db.Update(context.WithoutCancel(ctx), "audit", func(tx kv.Tx) error {
		t := boltTx{tx}
		added, err := t.add(events)
		if err != nil {
			return err
		}
		for id := range added {
			if err := t.keepNewest(id, maxPerRecord); err != nil {
				return err
			}
		}
		// Whatever a busy round leaves over, the next one deletes.
		return t.deleteExpired(cutoff)
	})
}

// HasExpired implements Store.
func (s *KVStore) HasExpired(ctx context.Context, cutoff time.Time) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	var found bool
	err := s.db.View(ctx, "audit", func(tx kv.Tx) error {
		found = boltTx{tx}.hasExpired(cutoff)
		return nil
	})
	return found, err
}

// Newest implements Store.
func (s *KVStore) Newest(ctx context.Context, recordID string, from time.Time, limit int) ([]Stored, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var events []Stored
	err := s.db.View(ctx, "audit", func(tx kv.Tx) error {
		var err error
		events, err = boltTx{tx}.newest(recordID, from, limit)
		return err
	})
	return events, err
}

// DeleteRecord implements Store.
func (s *KVStore) DeleteRecord(ctx context.Context, recordID string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.Update(ctx, "audit", func(tx kv.Tx) error { return boltTx{tx}.deleteRecord(recordID) })
}
