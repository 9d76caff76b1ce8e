package tenancy

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"

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
// and never a stale answer, whichever node made the change. On bbolt (one
// process holds the file, so every change is made here) the current
// generation is kept in memory and a remembered answer costs no read
// transaction at all. On any other Store it is one View. The record
// returned is the caller's own copy.
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

// localGeneration is the generation of one bbolt database, in memory. A
// writable bbolt file is held by one process, so every Update to it runs
// here and advances this after its commit: it is never ahead of what a
// reader may be told, and it is at least the generation of every Update
// that has returned. An answer labelled with the generation of the
// snapshot it was read from is therefore reused only while no returned
// Update has committed after it, without a read transaction.
type localGeneration struct{ n atomic.Uint64 }

// localGenerations maps each open *bbolt.DB to its localGeneration,
// shared by every KVStore on it (a store per module instance, across
// config reloads). An entry lives as long as the process (one per
// database opened; a database reopened is a new *bbolt.DB and starts
// from its stored generation).
var localGenerations sync.Map

// advance raises the generation to at least gen (Updates may return in
// another order than they committed).
func (g *localGeneration) advance(gen uint64) {
	for {
		cur := g.n.Load()
		if cur >= gen || g.n.CompareAndSwap(cur, gen) {
			return
		}
	}
}

// refreshLocal advances s.local to the stored generation.
func (s *KVStore) refreshLocal(ctx context.Context) error {
	return s.db.View(ctx, "tenancy", func(ktx kv.Tx) error {
		s.local.advance(generation(ktx))
		return nil
	})
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
	if rec, role, ok := s.remembered(slug, iss, sub); ok {
		return rec, role, nil
	}
	c := &s.cache
	key := accessKey(make([]byte, 0, len(slug)+len(iss)+len(sub)+2), slug, iss, sub)
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

// remembered is access's answer from memory, without a transaction, when
// this process holds the only handle on the state (s.local) and the
// answer remembered was read at its current generation. Its key is built
// on the stack (no closure shares it), so that the usual request
// allocates only the copy of the record it is given.
func (s *KVStore) remembered(slug, iss, sub string) (*Record, Role, bool) {
	if s.local == nil {
		return nil, "", false
	}
	c := &s.cache
	var buf [192]byte
	key := accessKey(buf[:0], slug, iss, sub)
	// Loaded before looking: an Update returning after this load is
	// concurrent with this Access. The generation is not read inside a
	// snapshot here: a snapshot's answer is labelled with the generation
	// that snapshot holds (access).
	gen := s.local.n.Load()
	c.mu.RLock()
	e, ok := c.m[string(key)]
	c.mu.RUnlock()
	if !ok || e.gen != gen {
		return nil, "", false
	}
	rec := e.rec
	return &rec, e.role, true
}

// accessKey appends the remembered answer's key of (slug, iss, sub) to b.
func accessKey(b []byte, slug, iss, sub string) []byte {
	return append(append(append(append(append(b, slug...), 0), iss...), 0), sub...)
}

// generation reads the store's generation in ktx.
func generation(ktx kv.Tx) uint64 {
	v := ktx.Bucket(bucketMeta).Get(keyGeneration)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// bumpGeneration counts one more committed Update, in its transaction,
// and returns the new generation.
func bumpGeneration(ktx kv.Tx) (uint64, error) {
	var v [8]byte
	gen := generation(ktx) + 1
	binary.BigEndian.PutUint64(v[:], gen)
	return gen, ktx.Bucket(bucketMeta).Put(keyGeneration, v[:])
}
