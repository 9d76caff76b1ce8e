package tenancy

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"

	"github.com/pfrgateway/caddy-pfr/internal/kv"
)

// maxAccessEntries bounds the access cache; past it, it starts afresh.
// An entry is a record, a role and three short strings: about 10 000 of
// them take a few megabytes.
const maxAccessEntries = 10000

// keyGeneration, in bucketMeta, counts the committed Updates of the store
// (8 bytes, big-endian; absent means 0). Every Update bumps it in its own
// transaction, so a snapshot's generation names exactly the state it sees,
// on every node sharing the database.
var keyGeneration = []byte("generation")

// Access returns the active record at slug and the role in it of the
// account of (iss, sub), as one consistent read; role is "" for an
// anonymous caller (iss and sub empty), an identity without an account,
// and a non-member. A missing record, or one that is not active, is
// ErrNotFound.
//
// It is what the request pipeline asks on every request. A KVStore
// remembers its answers with the generation of the state they were read
// from, and reuses one only while that generation is still the current
// one: a single read of one key instead of three reads and their decoding,
// and never a stale answer, whichever node made the change. On any other
// Store it is one View. The record returned is the caller's own copy.
func Access(ctx context.Context, s Store, slug, iss, sub string) (*Record, Role, error) {
	if k, ok := s.(*KVStore); ok {
		return k.access(ctx, slug, iss, sub)
	}
	return readAccess(ctx, s, slug, iss, sub)
}

// readAccess reads Access's answer in one View.
func readAccess(ctx context.Context, s Store, slug, iss, sub string) (*Record, Role, error) {
	var rec *Record
	var role Role
	err := s.View(ctx, func(tx Tx) error {
		var err error
		rec, role, err = lookupAccess(tx, slug, iss, sub)
		return err
	})
	if err != nil {
		return nil, "", err
	}
	return rec, role, nil
}

// lookupAccess is Access inside a transaction.
func lookupAccess(tx Tx, slug, iss, sub string) (*Record, Role, error) {
	rec, err := tx.RecordBySlug(slug)
	if err != nil {
		return nil, "", err
	}
	if rec.Status != StatusActive {
		return nil, "", ErrNotFound
	}
	if iss == "" && sub == "" {
		return rec, "", nil
	}
	_, m, err := Member(tx, rec.ID, iss, sub)
	if errors.Is(err, ErrNotFound) {
		return rec, "", nil
	}
	if err != nil {
		return nil, "", err
	}
	return rec, m.Role, nil
}

// accessCache holds Access answers of one KVStore.
type accessCache struct {
	mu sync.RWMutex
	m  map[string]accessEntry
}

type accessEntry struct {
	rec  Record
	role Role
	gen  uint64 // the generation of the state it was read from
}

// access is Access on a KVStore: in one View, the current generation, and
// the remembered answer if it was read at that generation, else the
// lookups (remembered only for found, active records: a wrong slug is not
// kept).
func (s *KVStore) access(ctx context.Context, slug, iss, sub string) (*Record, Role, error) {
	c := &s.cache
	var buf [192]byte
	key := append(append(append(append(append(buf[:0], slug...), 0), iss...), 0), sub...)
	var out accessEntry
	err := s.db.View(ctx, "tenancy", func(ktx kv.Tx) error {
		gen := generation(ktx)
		c.mu.RLock()
		e, ok := c.m[string(key)] // no allocation for the lookup
		c.mu.RUnlock()
		if ok && e.gen == gen {
			out = e
			return nil
		}
		return s.run(ktx, false, func(tx Tx) error {
			rec, role, err := lookupAccess(tx, slug, iss, sub)
			if err != nil {
				return err
			}
			out = accessEntry{rec: *rec, role: role, gen: gen}
			c.mu.Lock()
			if c.m == nil || len(c.m) >= maxAccessEntries {
				c.m = make(map[string]accessEntry)
			}
			c.m[string(key)] = out
			c.mu.Unlock()
			return nil
		})
	})
	if err != nil {
		return nil, "", err
	}
	rec := out.rec
	return &rec, out.role, nil
}

// generation reads the store's generation in ktx.
func generation(ktx kv.Tx) uint64 {
	v := ktx.Bucket(bucketMeta).Get(keyGeneration)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// bumpGeneration counts one more committed Update, in its transaction.
func bumpGeneration(ktx kv.Tx) error {
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], generation(ktx)+1)
	return ktx.Bucket(bucketMeta).Put(keyGeneration, v[:])
}
