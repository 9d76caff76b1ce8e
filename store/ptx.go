package store

import (
	"bytes"
	"fmt"
	"net/http"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/pfrgateway/caddy-pfr/fhir"
)

// ptx is one bbolt transaction scoped to one partition: every read and write
// of resources goes through it, so nothing can cross partitions.
type ptx struct {
	tx   *bolt.Tx
	part *bolt.Bucket
	key  string
	now  time.Time
	// noIndex is Options.NoIndexes: indexes are neither kept nor read.
	noIndex bool
	// pending holds the index changes not yet in bbolt: type → index key
	// → present (reindex, flushIndex); indexErr the first error writing
	// them.
	pending  map[string]map[string]bool
	indexErr error
	// added holds, by type, index keys only added, each once, of types
	// not in pending (foldKeys): they are written as pending ones are.
	added map[string][]string
	// keys computes the index keys of the writes not yet in pending
	// (keyWork).
	keys *keyWork
	// overlays caches the index log's changes by type (overlay).
	overlays map[string][]overlayEntry
	// noLog writes every index change into the indexes, none to the
	// index log (building the indexes at Open).
	noLog bool
	// cache is the DB's overlayCache; logWritten is set once the
	// transaction wrote to the index log (its log is then its own).
	cache      *overlayCache
	logWritten bool
}

// view runs fn in a read-only transaction on partition key.
func (db *DB) view(key string, fn func(*ptx) error) error {
	return db.bolt.View(func(tx *bolt.Tx) error {
		b, err := openPartition(tx, key)
		if err != nil {
			return err
		}
		return fn(&ptx{tx: tx, part: b, key: key, now: db.clock(), noIndex: db.noIndex, cache: &db.overlays})
	})
}

// update runs fn in a read-write transaction on partition key. bbolt commits
// with fsync before update returns, so a nil error means durable. The
// partition's lazy search snapshots are placed first (beginWrite).
func (db *DB) update(key string, fn func(*ptx) error) error {
	defer db.beginWrite(key)()
	return db.bolt.Update(func(tx *bolt.Tx) error {
		b, err := openPartition(tx, key)
		if err != nil {
			return err
		}
		p := &ptx{tx: tx, part: b, key: key, now: db.clock(), noIndex: db.noIndex, cache: &db.overlays}
		defer p.stopKeys() // a failed transaction leaves no worker behind
		if err := fn(p); err != nil {
			return err
		}
		return p.flushIndex()
	})
}

// stopKeys ends the workers computing index keys, if any.
func (p *ptx) stopKeys() {
	if p.keys != nil {
		p.keys.stop()
	}
}

// current returns the current version of typ/id (possibly a tombstone), or
// nil when the resource never existed.
func (p *ptx) current(typ, id string) (*record, error) {
	tb := p.currentType(typ)
	if tb == nil {
		return nil, nil
	}
	raw := tb.Get([]byte(id))
	if raw == nil {
		return nil, nil
	}
	return decodeRecord(typ, id, raw)
}

// live returns the current, non-deleted version of typ/id, or the 404/410
// OperationOutcome a read answers.
func (p *ptx) live(typ, id string) (*record, error) {
	rec, err := p.current(typ, id)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, fhir.Errorf(http.StatusNotFound, fhir.CodeNotFound, "Resource %s/%s is not known", typ, id)
	}
	if rec.Deleted {
		return nil, fhir.Errorf(http.StatusGone, fhir.CodeDeleted, "Resource %s/%s was deleted at version %d", typ, id, rec.Version).
			WithHeader("ETag", rec.etag()).WithHeader("Last-Modified", rec.LastUpdated.Format(http.TimeFormat))
	}
	return rec, nil
}

// version returns one version of typ/id, or a 404 OperationOutcome.
func (p *ptx) version(typ, id string, version uint64) (*record, error) {
	vb := p.part.Bucket(bucketVersions)
	var raw []byte
	if vb != nil {
		raw = vb.Get(versionKey(typ, id, version))
	}
	if raw == nil {
		return nil, fhir.Errorf(http.StatusNotFound, fhir.CodeNotFound, "Version %d of %s/%s is not known", version, typ, id)
	}
	return decodeRecord(typ, id, raw)
}

// write stores a new version of typ/id: body is the resource to store
// (already validated, without server meta) or nil for a deletion. It returns
// the stored record.
func (p *ptx) write(typ, id string, body resource, prev *record) (*record, error) {
	rec := &record{Type: typ, ID: id, Version: 1, LastUpdated: p.now, Deleted: body == nil}
	if prev != nil {
		rec.Version = prev.Version + 1
	}
	if body != nil {
		body.stamp(id, rec.Version, rec.LastUpdated)
		raw, err := encodeResource(body)
		if err != nil {
			return nil, fmt.Errorf("encode %s/%s: %w", typ, id, err)
		}
		rec.Body = raw
	}
	enc := rec.encode()

	cur, err := p.part.CreateBucketIfNotExists(bucketCurrent)
	if err != nil {
		return nil, fmt.Errorf("current bucket: %w", err)
	}
	tb, err := cur.CreateBucketIfNotExists([]byte(typ))
	if err != nil {
		return nil, fmt.Errorf("current bucket %s: %w", typ, err)
	}
	tb.FillPercent = appendFill
	var old []byte // the JSON of the version replaced: its index entries go
	if v := tb.Get([]byte(id)); len(v) >= recordHeaderLen && v[0] == recordKindResource && !p.noIndex {
		old = append([]byte(nil), v[recordHeaderLen:]...)
	}
	if err := tb.Put([]byte(id), enc); err != nil {
		return nil, fmt.Errorf("store current %s/%s: %w", typ, id, err)
	}
	// The new version's keys come from body itself: what decoding
	// rec.Body gives, without decoding it (searchForm).
	if err := p.reindexEntries(typ, id, old, func() []indexEntry {
		if body == nil {
			return nil
		}
		return entriesOfResource(typ, body, rec.Body)
	}); err != nil {
		return nil, err
	}
	vb, err := p.part.CreateBucketIfNotExists(bucketVersions)
	if err != nil {
		return nil, fmt.Errorf("versions bucket: %w", err)
	}
	vb.FillPercent = appendFill
	vk := versionKey(typ, id, rec.Version)
	if err := vb.Put(vk, enc); err != nil {
		return nil, fmt.Errorf("store version %s/%s/%d: %w", typ, id, rec.Version, err)
	}
	// The sequence is global (one counter for the whole file) so system
	// history orders writes across types exactly as they were committed.
	seq, err := p.tx.Bucket(bucketMeta).NextSequence()
	if err != nil {
		return nil, fmt.Errorf("next sequence: %w", err)
	}
	sb, err := p.part.CreateBucketIfNotExists(bucketSequence)
	if err != nil {
		return nil, fmt.Errorf("sequence bucket: %w", err)
	}
	sb.FillPercent = appendFill
	if err := sb.Put(seqKey(seq), vk); err != nil {
		return nil, fmt.Errorf("store sequence %d: %w", seq, err)
	}
	return rec, nil
}

// appendFill is how full bbolt fills the pages it splits in the buckets
// a write adds to (its default is half): ids of created resources rise
// (newResourceID) and the global sequence does, so most keys are added
// after the last of their bucket or of their value's run in an index,
// and pages split half full would stay half empty (a record of 100 000
// Observations: 456 MB without indexes, 300 MB with random ids).
const appendFill = 0.9

// currentType is typ's bucket of current records, nil when typ has none.
func (p *ptx) currentType(typ string) *bolt.Bucket {
	cur := p.part.Bucket(bucketCurrent)
	if cur == nil {
		return nil
	}
	return cur.Bucket([]byte(typ))
}

// isLive reports whether a stored record is a live resource (not a deletion).
func isLive(v []byte) bool { return len(v) >= recordHeaderLen && v[0] == recordKindResource }

// scanCurrent calls fn for every current, non-deleted resource of typ in id
// order. fn must not keep raw beyond the call.
func (p *ptx) scanCurrent(typ string, fn func(id string, raw []byte) error) error {
	return p.scanCurrentRecords(typ, func(id string, rec []byte) error { return fn(id, rec[recordHeaderLen:]) })
}

// currentRecord returns the stored record (header and JSON) of the live
// typ/id, nil when it is deleted or unknown. It must not be kept beyond
// the transaction.
func (p *ptx) currentRecord(typ, id string) []byte {
	tb := p.currentType(typ)
	if tb == nil {
		return nil
	}
	if v := tb.Get([]byte(id)); isLive(v) {
		return v
	}
	return nil
}

// scanCurrentRecords calls fn with every live record (header and JSON) of
// typ, in id order.
func (p *ptx) scanCurrentRecords(typ string, fn func(id string, rec []byte) error) error {
	tb := p.currentType(typ)
	if tb == nil {
		return nil
	}
	return tb.ForEach(func(k, v []byte) error {
		if !isLive(v) {
			return nil
		}
		return fn(string(k), v)
	})
}

// currentBody returns the stored JSON of the live typ/id, nil when it is
// deleted or unknown. It must not be kept beyond the transaction.
func (p *ptx) currentBody(typ, id string) []byte {
	if v := p.currentRecord(typ, id); v != nil {
		return v[recordHeaderLen:]
	}
	return nil
}

// types returns every resource type that has ever been stored in the
// partition.
func (p *ptx) types() []string {
	cur := p.part.Bucket(bucketCurrent)
	if cur == nil {
		return nil
	}
	var out []string
	_ = cur.ForEachBucket(func(k []byte) error {
		out = append(out, string(k))
		return nil
	})
	return out
}

// versions calls fn for every version of typ/id, newest first.
func (p *ptx) versions(typ, id string, fn func(*record) (bool, error)) error {
	vb := p.part.Bucket(bucketVersions)
	if vb == nil {
		return nil
	}
	prefix := versionPrefix(typ, id)
	c := vb.Cursor()
	// Seek past the last version of this resource, then walk back.
	end := append(append([]byte(nil), prefix...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	for k, v := cursorBefore(c, end); k != nil && bytes.HasPrefix(k, prefix) && len(k) == len(prefix)+8; k, v = cursorPrev(c, k) {
		_, _, ver, err := splitVersionKey(k)
		if err != nil {
			return err
		}
		rec, err := decodeRecord(typ, id, v)
		if err != nil {
			return err
		}
		rec.Version = ver
		more, err := fn(rec)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// sequence calls fn for every version written in the partition, newest
// first, optionally only of one type.
func (p *ptx) sequence(typ string, fn func(*record) (bool, error)) error {
	sb := p.part.Bucket(bucketSequence)
	vb := p.part.Bucket(bucketVersions)
	if sb == nil || vb == nil {
		return nil
	}
	c := sb.Cursor()
	for k, vk := c.Last(); k != nil; k, vk = cursorPrev(c, k) {
		t, id, _, err := splitVersionKey(vk)
		if err != nil {
			return err
		}
		if typ != "" && t != typ {
			continue
		}
		raw := vb.Get(vk)
		if raw == nil {
			return fmt.Errorf("sequence %x points at missing version %q", k, vk)
		}
		rec, err := decodeRecord(t, id, raw)
		if err != nil {
			return err
		}
		more, err := fn(rec)
		if err != nil || !more {
			return err
		}
	}
	return nil
}
