package audit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/bbolt"

	"github.com/pfrgateway/caddy-pfr/internal/boltutil"
)

// Store keeps the log's events. It is shaped by what the log does (append
// a batch and prune, look for expired events, list a record's newest,
// delete a record), not by buckets, so that a PostgreSQL implementation can
// follow BoltStore for deployments with several gateway nodes.
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

// BoltStore is the Store on a bbolt file shared with the gateway's other
// packages (buckets "audit/…", see BoltBuckets).
type BoltStore struct{ db *bbolt.DB }

var _ Store = (*BoltStore)(nil)

// NewBoltStore returns a Store on db, creating its buckets if needed.
func NewBoltStore(db *bbolt.DB) (*BoltStore, error) {
	if db == nil {
		return nil, errors.New("audit: nil database")
	}
	if err := boltutil.CreateBuckets(db, BoltBuckets); err != nil {
		return nil, fmt.Errorf("audit: opening log: %w", err)
	}
	return &BoltStore{db: db}, nil
}

// Write implements Store. It does not stop halfway for a cancelled
// context: the caller took the events from its queue.
func (s *BoltStore) Write(_ context.Context, events []Event, maxPerRecord uint64, cutoff time.Time) error {
	return s.db.Update(func(tx *bbolt.Tx) error {
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
func (s *BoltStore) HasExpired(ctx context.Context, cutoff time.Time) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	var found bool
	err := s.db.View(func(tx *bbolt.Tx) error {
		found = boltTx{tx}.hasExpired(cutoff)
		return nil
	})
	return found, err
}

// Newest implements Store.
func (s *BoltStore) Newest(ctx context.Context, recordID string, from time.Time, limit int) ([]Stored, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var events []Stored
	err := s.db.View(func(tx *bbolt.Tx) error {
		var err error
		events, err = boltTx{tx}.newest(recordID, from, limit)
		return err
	})
	return events, err
}

// DeleteRecord implements Store.
func (s *BoltStore) DeleteRecord(ctx context.Context, recordID string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.Update(func(tx *bbolt.Tx) error { return boltTx{tx}.deleteRecord(recordID) })
}
