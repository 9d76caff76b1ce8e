package store

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/pfrgateway/caddy-pfr/fhir/search"
)

// Search indexes. Every write of a resource replaces its index entries in
// the same bbolt transaction (ptx.write), so an index never disagrees with
// the data it describes, even after kill -9.
//
// Inside a partition bucket:
//
//	index/{type}:  tag key 0x00 id → (empty)
//
// tag is the parameter's search.IndexTag (0 for the unreadable marker),
// key what search.IndexKeys gives.
//
// A write computes the entries of the version it replaces from that
// version's JSON (keys depend on nothing else) and removes them. A search
// takes candidates from the most selective of its indexed filters, drops
// those another filter with exact values excludes (one lookup each), and
// checks the rest with the full evaluator: the answer is the one a scan
// gives.
var (
	bucketIndex = []byte("index")
	// metaIndexVersion in the meta bucket holds search.IndexVersion() once
	// every partition is indexed (Open rebuilds otherwise).
	metaIndexVersion = []byte("index-version")
)

// indexEntry is one key of one parameter (by tag) of a resource.
type indexEntry struct {
	tag byte
	key []byte
}

// indexEntries computes the entries of res (nil: none).
func indexEntries(typ string, res map[string]any) []indexEntry {
	if res == nil {
		return nil
	}
	var out []indexEntry
	for i, p := range search.IndexedParams(typ) {
		for _, k := range search.IndexKeys(p, res) {
			out = append(out, indexEntry{byte(i + 1), k})
		}
	}
	return out
}

// indexKey is the key of one entry in the type's index bucket.
func indexKey(tag byte, key []byte, id string) []byte {
	out := make([]byte, 0, len(key)+len(id)+2)
	out = append(out, tag)
	out = append(out, key...)
	out = append(out, 0)
	return append(out, id...)
}

// idOfIndexKey returns the id of an index key: what follows the last 0x00.
func idOfIndexKey(k []byte) string {
	return string(k[bytes.LastIndexByte(k, 0)+1:])
}

// reindex replaces the index entries of typ/id: those of old (the JSON
// of the version replaced, nil when none) by those of body (nil for a
// deletion). The changes are kept in p.pending and reach bbolt in key
// order (flushIndex) before the transaction commits or reads an index.
//
// Why not Put each key now: bbolt splits a node only when it commits, so
// inside one transaction every key lands in the leaf that held its place
// when the transaction began, and an insert moves every key after it in
// that leaf. A resource's ~17 keys are mostly shared prefixes (the same
// code, subject, category, _lastUpdated…) followed by a random id, so the
// keys of a large transaction pile up in a few leaves at random places:
// n resources cost O(n²) moves (83 % of a 20 000-resource import). In key
// order each insert lands after the previous one, and a transaction's
// cost is linear in its entries.
func (p *ptx) reindex(typ, id string, old, body []byte) error {
	if p.noIndex {
		return nil
	}
	if p.pending == nil {
		p.pending = map[string]map[string]bool{}
	}
	m := p.pending[typ]
	if m == nil {
		m = map[string]bool{}
		p.pending[typ] = m
	}
	// The last change of a key wins, as if each was applied in turn.
	for _, e := range entriesOf(typ, old) {
		m[string(indexKey(e.tag, e.key, id))] = false
	}
	for _, e := range entriesOf(typ, body) {
		m[string(indexKey(e.tag, e.key, id))] = true
	}
	return nil
}

// flushIndex writes the pending index changes (reindex) to bbolt, each
// type's in key order. The first error sticks: the transaction fails
// with it (update).
func (p *ptx) flushIndex() error {
	if p.indexErr != nil || len(p.pending) == 0 {
		return p.indexErr
	}
	for _, typ := range slices.Sorted(maps.Keys(p.pending)) {
		m := p.pending[typ]
		ib, err := nestedBucket(p.part, bucketIndex, typ)
		if err != nil {
			p.indexErr = err
			return err
		}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			key := []byte(k)
			if m[k] {
				err = ib.Put(key, nil)
			} else {
				err = ib.Delete(key)
			}
			if err != nil {
				p.indexErr = fmt.Errorf("index %s/%s: %w", typ, idOfIndexKey(key), err)
				return p.indexErr
			}
		}
	}
	p.pending = nil
	return nil
}

// entriesOf returns the index entries of a stored JSON body (none for
// nil, the unreadable marker when it cannot be decoded).
func entriesOf(typ string, body []byte) []indexEntry {
	if body == nil {
		return nil
	}
	res, err := decodeForSearch(body)
	if err != nil {
		return unreadableEntries
	}
	return indexEntries(typ, res)
}

// unreadableEntries mark a resource that cannot be decoded (written before
// the door refused what cannot round-trip): every indexed search takes it
// as a candidate, so the answer names it as unreadable as a scan does.
var unreadableEntries = []indexEntry{{0, []byte("!")}}

// unreadableIDs returns the ids of typ marked unreadable.
func unreadableIDs(ib *bolt.Bucket) []string {
	prefix := indexKey(0, unreadableEntries[0].key, "")
	var ids []string
	c := ib.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		ids = append(ids, idOfIndexKey(k))
	}
	return ids
}

// nestedBucket returns parent/name/typ, creating what is missing.
func nestedBucket(parent *bolt.Bucket, name []byte, typ string) (*bolt.Bucket, error) {
	b, err := parent.CreateBucketIfNotExists(name)
	if err != nil {
		return nil, fmt.Errorf("%s bucket: %w", name, err)
	}
	tb, err := b.CreateBucketIfNotExists([]byte(typ))
	if err != nil {
		return nil, fmt.Errorf("%s bucket %s: %w", name, typ, err)
	}
	return tb, nil
}

// indexBucket returns the index bucket of typ with the transaction's
// pending changes in it, nil when the partition has none yet.
func (p *ptx) indexBucket(typ string) (*bolt.Bucket, error) {
	if err := p.flushIndex(); err != nil {
		return nil, err
	}
	b := p.part.Bucket(bucketIndex)
	if b == nil {
		return nil, nil
	}
	return b.Bucket([]byte(typ)), nil
}

// indexBatch is how many resources one transaction indexes while Open
// builds the indexes of an existing database (a variable for tests).
var indexBatch = 2000

// buildIndexes indexes every current resource of every partition, once:
// when the meta bucket does not hold search.IndexVersion() (a database
// written before indexes, or by another key layout). The indexes are
// dropped and rebuilt in transactions of indexBatch resources; the version
// is written last, so an interrupted build starts over at the next Open.
func (db *DB) buildIndexes(logf func(string, ...any)) error {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if db.noIndex { // what is written now is not indexed: rebuild next time
		return db.bolt.Update(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketMeta).Delete(metaIndexVersion)
		})
	}
	var version []byte
	var parts []string
	err := db.bolt.View(func(tx *bolt.Tx) error {
		version = slices.Clone(tx.Bucket(bucketMeta).Get(metaIndexVersion))
		return tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			if key, ok := bytes.CutPrefix(name, []byte("p:")); ok {
				parts = append(parts, string(key))
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	if string(version) == search.IndexVersion() {
		return nil
	}
	type work struct {
		part, typ string
		ids       []string
	}
	var todo []work
	total := 0
	err = db.bolt.Update(func(tx *bolt.Tx) error {
		for _, key := range parts {
			b := tx.Bucket(partitionBucketName(key))
			if b.Bucket(bucketIndex) != nil {
				if err := b.DeleteBucket(bucketIndex); err != nil {
					return fmt.Errorf("drop the indexes of partition %s: %w", key, err)
				}
			}
			p := &ptx{tx: tx, part: b, key: key}
			for _, typ := range p.types() {
				w := work{part: key, typ: typ}
				if err := p.scanCurrent(typ, func(id string, _ []byte) error {
					w.ids = append(w.ids, id)
					return nil
				}); err != nil {
					return err
				}
				if len(w.ids) > 0 {
					todo = append(todo, w)
					total += len(w.ids)
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if total > 0 {
		logf("pfr_store: building search indexes of %d resources in %d partitions (once, for index version %s)", total, len(parts), search.IndexVersion())
	}
	done, lastLog := 0, time.Now()
	for _, w := range todo {
		for start := 0; start < len(w.ids); start += indexBatch {
			batch := w.ids[start:min(start+indexBatch, len(w.ids))]
			err := db.bolt.Update(func(tx *bolt.Tx) error {
				p := &ptx{tx: tx, part: tx.Bucket(partitionBucketName(w.part)), key: w.part}
				for _, id := range batch {
					body := p.currentBody(w.typ, id)
					if body == nil {
						continue
					}
					if _, err := decodeForSearch(body); err != nil {
						logf("pfr_store: %s/%s in partition %s cannot be read back: searches will name it as unreadable: %v", w.typ, id, w.part, err)
					}
					if err := p.reindex(w.typ, id, nil, body); err != nil {
						return err
					}
				}
				return p.flushIndex()
			})
			if err != nil {
				return err
			}
			before := done
			done += len(batch)
			// A line per tenth of the work, at least every 5 s.
			if done*10/total > before*10/total || time.Since(lastLog) >= 5*time.Second {
				lastLog = time.Now()
				logf("pfr_store: indexed %d of %d resources (partition %s, %s)", done, total, w.part, w.typ)
			}
		}
	}
	err = db.bolt.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(metaIndexVersion, []byte(search.IndexVersion()))
	})
	if err != nil {
		return err
	}
	if total > 0 {
		logf("pfr_store: search indexes built (%d resources)", total)
	}
	return nil
}
