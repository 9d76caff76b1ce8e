package tenancy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/bbolt"

	"github.com/pfrgateway/caddy-pfr/internal/kv"
)

// Bucket names. All start with "tenancy/" so the package can share a bbolt
// file with others. Entries in bucketPartitions and bucketRetiredIDs are
// never deleted: they are what makes partition ids and record ids
// never-reused.
var (
	bucketMeta               = []byte("tenancy/meta")                // its sequence numbers partitions
	bucketRecords            = []byte("tenancy/records")             // record id → recordDoc
	bucketSlugs              = []byte("tenancy/slugs")               // slug → record id
	bucketPartitions         = []byte("tenancy/partitions")          // partition id (8 bytes, big-endian) → record id
	bucketRetiredIDs         = []byte("tenancy/retired-ids")         // deleted record id → deletion time
	bucketAccounts           = []byte("tenancy/accounts")            // account id → accountDoc
	bucketIdentities         = []byte("tenancy/identities")          // identityKey(iss, sub) → account id
	bucketMemberships        = []byte("tenancy/memberships")         // record id "/" account id → membershipDoc
	bucketAccountMemberships = []byte("tenancy/account-memberships") // account id "/" record id → empty
	bucketInvitations        = []byte("tenancy/invitations")         // code hash → invitationDoc
	bucketRecordInvitations  = []byte("tenancy/record-invitations")  // record id "/" code hash → empty
)

var allBuckets = [][]byte{
	bucketMeta, bucketRecords, bucketSlugs, bucketPartitions, bucketRetiredIDs,
	bucketAccounts, bucketIdentities, bucketMemberships, bucketAccountMemberships,
	bucketInvitations, bucketRecordInvitations,
}

// KVStore is the Store on a kv.DB: a bbolt file for one node
// (NewBoltStore) or PostgreSQL for several (NewStore with an
// internal/pgstate.DB). Both run this same code. The database stays the
// caller's: KVStore never closes it.
type KVStore struct {
	db kv.DB

	// Now returns the current time; nil means time.Now. Tests set it to
	// move time without sleeping. Set it before the store is shared.
	Now func() time.Time

	cache accessCache // Access's answers, with the generation they were read at

	// local is the generation of a bbolt database kept in memory, shared
	// by every KVStore on it (nil on PostgreSQL): Access compares with it
	// without a read transaction. See localGeneration.
	local *localGeneration
}

var _ Store = (*KVStore)(nil)

// NewBoltStore returns a Store on db, creating its buckets if needed. db
// must be open for writing.
func NewBoltStore(db *bbolt.DB) (*KVStore, error) {
	if db == nil {
		return nil, fmt.Errorf("tenancy: %w: nil database", ErrInvalid)
	}
	return NewStore(kv.Bolt(db))
}

// NewStore returns a Store on db, creating its buckets if needed.
func NewStore(db kv.DB) (*KVStore, error) {
	if db == nil {
		return nil, fmt.Errorf("tenancy: %w: nil database", ErrInvalid)
	}
	if err := db.CreateBuckets(allBuckets); err != nil {
		return nil, fmt.Errorf("tenancy: opening store: %w", err)
	}
	s := &KVStore{db: db}
	if b := kv.BoltOf(db); b != nil {
		g, _ := localGenerations.LoadOrStore(b, new(localGeneration))
		s.local = g.(*localGeneration)
		if err := s.refreshLocal(context.Background()); err != nil {
			return nil, fmt.Errorf("tenancy: opening store: %w", err)
		}
	}
	return s, nil
}

// Update implements Store.
// It bumps the store's generation in the same transaction, so no answer
// Access remembers from before it is used after it commits, on any node.
// On bbolt it then advances the generation kept in memory to the one it
// committed, before it returns.
func (s *KVStore) Update(ctx context.Context, fn func(Tx) error) error {
	var gen uint64 // the generation this Update commits, once fn succeeded
	err := s.db.Update(ctx, "tenancy", func(ktx kv.Tx) error {
		gen = 0
		if err := s.run(ktx, true, fn); err != nil {
			return err
		}
		var err error
		gen, err = bumpGeneration(ktx)
		return err
	})
	if s.local != nil && gen != 0 {
		if err == nil {
			s.local.advance(gen)
		} else if rerr := s.refreshLocal(ctx); rerr != nil {
			// The commit failed, or maybe only its report did: count it
			// as committed. No answer is wrongly reused; answers read
			// before are not used again.
			s.local.advance(gen)
		}
	}
	return err
}

// View implements Store.
func (s *KVStore) View(ctx context.Context, fn func(Tx) error) error {
	return s.db.View(ctx, "tenancy", func(ktx kv.Tx) error { return s.run(ktx, false, fn) })
}

// run calls fn with a Tx that is closed when fn returns, however it returns.
func (s *KVStore) run(ktx kv.Tx, writable bool, fn func(Tx) error) error {
	// One timestamp per transaction: everything it writes happened at once.
	t := &boltTx{tx: ktx, writable: writable, now: s.now().UTC()}
	defer func() { t.closed = true }()
	return fn(t)
}

// now is the store's clock.
func (s *KVStore) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// boltTx implements Tx on a kv transaction (bbolt or PostgreSQL).
type boltTx struct {
	tx       kv.Tx
	writable bool
	closed   bool
	now      time.Time
}

// checkRead fails once the transaction's function has returned.
func (t *boltTx) checkRead() error {
	if t.closed {
		return fmt.Errorf("tenancy: %w", ErrTxClosed)
	}
	return nil
}

// checkWrite also fails inside View.
func (t *boltTx) checkWrite() error {
	if err := t.checkRead(); err != nil {
		return err
	}
	if !t.writable {
		return fmt.Errorf("tenancy: %w", ErrReadOnly)
	}
	return nil
}

func (t *boltTx) bucket(name []byte) kv.Bucket { return t.tx.Bucket(name) }

// getJSON decodes the value at key into v and reports whether it existed.
func (t *boltTx) getJSON(bucket, key []byte, v any) (bool, error) {
	data := t.bucket(bucket).Get(key)
	if data == nil {
		return false, nil
	}
	return true, decodeJSON(bucket, key, data, v)
}

// decodeJSON decodes a stored value, naming it on failure.
func decodeJSON(bucket, key, data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decoding %s/%s: %w", bucket, key, err)
	}
	return nil
}

// putJSON stores v encoded at key.
func (t *boltTx) putJSON(bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding %s/%s: %w", bucket, key, err)
	}
	if err := t.bucket(bucket).Put(key, data); err != nil {
		return fmt.Errorf("writing %s/%s: %w", bucket, key, err)
	}
	return nil
}

// put stores a raw value at key.
func (t *boltTx) put(bucket, key, value []byte) error {
	if err := t.bucket(bucket).Put(key, value); err != nil {
		return fmt.Errorf("writing %s/%s: %w", bucket, key, err)
	}
	return nil
}

// del removes key.
func (t *boltTx) del(bucket, key []byte) error {
	if err := t.bucket(bucket).Delete(key); err != nil {
		return fmt.Errorf("deleting %s/%s: %w", bucket, key, err)
	}
	return nil
}

// pairKey joins two ids into an index key; ids never contain '/'.
func pairKey(a, b string) []byte { return []byte(a + "/" + b) }

// suffixesWithPrefix returns, for every key "prefix/x" in bucket, x.
// Keys are collected before anyone deletes, since deleting under a bbolt
// cursor can skip entries.
func (t *boltTx) suffixesWithPrefix(bucket []byte, prefix string) []string {
	p := []byte(prefix + "/")
	var out []string
	c := t.bucket(bucket).Cursor()
	for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
		out = append(out, string(k[len(p):]))
	}
	return out
}

// isNotFound reports whether err wraps ErrNotFound.
func isNotFound(err error) bool { return errors.Is(err, ErrNotFound) }
