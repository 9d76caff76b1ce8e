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

// rangeScan walks the keys of one parameter inside some ranges, a chunk
// at a time.
type rangeScan struct {
	param  string
	tag    byte
	ranges []search.KeyRange
	c      *bolt.Cursor
	i      int    // current range
	k      []byte // current key, nil before the range is sought
	hi     []byte // bound of the current range
	// ids found so far, each true when found through an Exact range.
	ids  map[string]bool
	done bool
}

// next returns the id of the next key in the ranges and whether the
// range it is in is Exact; ok is false once every range is read.
func (s *rangeScan) next() (id []byte, exact, ok bool) {
	for !s.done {
		if s.k == nil {
			if s.i >= len(s.ranges) {
				s.done = true
				break
			}
			r := s.ranges[s.i]
			s.hi = append([]byte{s.tag}, r.Hi...)
			s.k, _ = s.c.Seek(append([]byte{s.tag}, r.Lo...))
		} else {
			s.k, _ = s.c.Next()
		}
		if s.k == nil || bytes.Compare(s.k, s.hi) >= 0 {
			s.k = nil
			s.i++
			continue
		}
		return s.k[bytes.LastIndexByte(s.k, 0)+1:], s.ranges[s.i].Exact, true
	}
	return nil, false, false
}

// step reads up to n keys; it reports whether the scan is complete.
func (s *rangeScan) step(n int) bool {
	if s.param == "_id" && !s.done { // ids are looked up, not indexed
		for _, r := range s.ranges {
			s.ids[search.IDOfRange(r)] = true
		}
		s.done = true
	}
	for ; n > 0; n-- {
		id, exact, ok := s.next()
		if !ok {
			break
		}
		s.ids[string(id)] = s.ids[string(id)] || exact
	}
	return s.done
}

// probe reads on up to n keys, keeping only the ids in cands; once done,
// ids holds every candidate the filter has.
func (s *rangeScan) probe(n int, cands map[string]bool) {
	for id := range s.ids {
		if _, ok := cands[id]; !ok {
			delete(s.ids, id)
		}
	}
	for ; n > 0; n-- {
		id, exact, ok := s.next()
		if !ok {
			break
		}
		if _, in := cands[string(id)]; in {
			s.ids[string(id)] = s.ids[string(id)] || exact
		}
	}
}

// maxLookupValues bounds how many distinct values of a range a lookup
// tries (a bare code has one per system it is written with).
const maxLookupValues = 16

// lookupRanges returns ranges of one value each that hold exactly the
// keys of ranges (a range of several values is split into its values, read
// from the index), or nil when there are more than maxLookupValues.
func lookupRanges(ib *bolt.Bucket, tag byte, param string, ranges []search.KeyRange) []search.KeyRange {
	if param == "_id" { // ids, not index keys
		return ranges
	}
	var out []search.KeyRange
	c := ib.Cursor()
	for _, r := range ranges {
		if _, ok := exactValue(r); ok {
			// Kept only when the value is in the index at all (a code
			// searched with a system it is never written with).
			if k, _ := c.Seek(append([]byte{tag}, r.Lo...)); k != nil && bytes.Compare(k, append([]byte{tag}, r.Hi...)) < 0 {
				out = append(out, r)
			}
			continue
		}
		hi := append([]byte{tag}, r.Hi...)
		for k, _ := c.Seek(append([]byte{tag}, r.Lo...)); k != nil && bytes.Compare(k, hi) < 0; {
			if len(out) == maxLookupValues {
				return nil
			}
			value := k[1:bytes.LastIndexByte(k, 0)]
			out = append(out, search.KeyRange{
				Lo:    append(bytes.Clone(value), 0),
				Hi:    append(bytes.Clone(value), 1),
				Exact: r.Exact,
			})
			k, _ = c.Seek(append(append([]byte{tag}, value...), 1))
		}
	}
	return out
}

// mayMatch reports whether resource id may match a filter whose ranges
// lookupRanges split into single values (one lookup each, with c), and
// whether it surely does (found through an Exact range).
func mayMatch(c *bolt.Cursor, tag byte, param string, lookups []search.KeyRange, id string) (may, exact bool) {
	if param == "_id" {
		return slices.ContainsFunc(lookups, func(r search.KeyRange) bool { return search.IDOfRange(r) == id }), true
	}
	for _, r := range lookups {
		v, _ := exactValue(r)
		want := indexKey(tag, v, id)
		if k, _ := c.Seek(want); bytes.Equal(k, want) {
			return true, r.Exact
		}
	}
	return false, false
}

// exactValue returns the key value of a range holding exactly one value
// (value 0x00 … value 0x01).
func exactValue(r search.KeyRange) ([]byte, bool) {
	n := len(r.Lo)
	if n == 0 || len(r.Hi) != n || r.Lo[n-1] != 0 || r.Hi[n-1] != 1 || !bytes.Equal(r.Lo[:n-1], r.Hi[:n-1]) {
		return nil, false
	}
	return r.Lo[:n-1], true
}

// indexScanChunk is how many keys each filter reads per turn while the
// candidates are chosen.
const indexScanChunk = 256

// indexCandidates returns, in id order, the ids of typ that may match
// every filter: those of the filter whose ranges hold the fewest keys
// (the filters are read in turns, so the choice costs about the number
// of filters times that filter's keys), less those whose entries
// another filter excludes. exact[i] is true when ids[i] was found
// through Exact ranges of every filter (search.KeyRange). ok is false
// when there are no filters.
func (p *ptx) indexCandidates(typ string, filters []search.IndexFilter) (ids []string, exact []bool, ok bool, err error) {
	if len(filters) == 0 || p.noIndex {
		return nil, nil, false, nil
	}
	ib, err := p.indexBucket(typ)
	if err != nil {
		return nil, nil, false, err
	}
	if ib == nil {
		return nil, nil, true, nil // nothing of typ was ever written
	}
	var scans []*rangeScan
	for _, f := range filters {
		tag, ok := search.IndexTag(typ, f.Param)
		if !ok && f.Param != "_id" {
			continue // left to the evaluator
		}
		scans = append(scans, &rangeScan{param: f.Param, tag: tag, ranges: f.Ranges, c: ib.Cursor(), ids: map[string]bool{}})
	}
	if len(scans) == 0 {
		return nil, nil, false, nil
	}
	driver := -1
	for driver < 0 {
		for i, s := range scans {
			if s.step(indexScanChunk) {
				driver = i
				break
			}
		}
	}
	// Each other filter is checked on the driver's candidates: by one
	// lookup per value where it has few values, else by reading it on
	// while it stays within a few times the driver's size (keeping only
	// the driver's candidates); a filter neither answers is left to the
	// evaluator.
	cands := scans[driver].ids
	budget := intersectFactor*len(cands) + indexScanChunk
	lookups := make([][]search.KeyRange, len(scans))
	for i, s := range scans {
		if i == driver || s.done {
			continue
		}
		// _lastUpdated is checked on the record headers below.
		if lookups[i] = lookupRanges(ib, s.tag, s.param, s.ranges); lookups[i] == nil && s.param != "_lastUpdated" {
			s.probe(budget, cands)
		}
	}
	ids = make([]string, 0, len(cands))
	for id := range cands {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	kept := ids[:0]
	c := ib.Cursor()
	updatedKeys := map[int64][][]byte{} // _lastUpdated keys by header time
	for _, id := range ids {
		keep, sure := true, cands[id]
		for i, sc := range scans {
			var in, ex bool
			switch {
			case i == driver:
				continue
			case sc.done:
				ex, in = sc.ids[id]
			case lookups[i] == nil && sc.param == "_lastUpdated":
				// The record's header holds it: its keys, as the
				// write computed them.
				in, ex = true, false
				if rec := p.currentRecord(typ, id); rec != nil {
					ms := recordLastUpdated(rec)
					if _, ok := updatedKeys[ms]; !ok {
						updatedKeys[ms] = lastUpdatedKeys(typ, ms)
					}
					in, ex = keysInRanges(updatedKeys[ms], sc.ranges, id)
				}
			case lookups[i] == nil: // read neither to the end nor looked up
				in = true
			default:
				in, ex = mayMatch(c, sc.tag, sc.param, lookups[i], id)
			}
			if !in {
				keep = false
				break
			}
			sure = sure && ex
		}
		if keep {
			kept = append(kept, id)
			exact = append(exact, sure)
		}
	}
	ids = kept
	for _, id := range unreadableIDs(ib) {
		ids = append(ids, id)
		exact = append(exact, false)
	}
	return ids, exact, true, nil
}

// lastUpdatedKeys returns the index values of _lastUpdated for a resource
// of typ written at ms (Unix milliseconds): what IndexKeys gives for the
// meta.lastUpdated the write stamped.
func lastUpdatedKeys(typ string, ms int64) [][]byte {
	for _, p := range search.IndexedParams(typ) {
		if p.Code == "_lastUpdated" {
			res := map[string]any{"resourceType": typ, "meta": map[string]any{"lastUpdated": instant(time.UnixMilli(ms))}}
			return search.IndexKeys(p, res)
		}
	}
	return nil
}

// keysInRanges reports whether one of the index values of resource id
// lies in one of ranges, and whether one lies in an Exact one.
func keysInRanges(values [][]byte, ranges []search.KeyRange, id string) (in, exact bool) {
	for _, v := range values {
		key := append(append(bytes.Clone(v), 0), id...)
		for _, r := range ranges {
			if bytes.Compare(r.Lo, key) <= 0 && bytes.Compare(key, r.Hi) < 0 {
				in, exact = true, exact || r.Exact
			}
		}
	}
	return in, exact
}

// unionCandidates returns, in id order, the ids of typ with a key in any
// of filters (each read on its own); ok is false when the index cannot
// answer one of them.
func (p *ptx) unionCandidates(typ string, filters []search.IndexFilter) (ids []string, ok bool, err error) {
	seen := map[string]bool{}
	for _, f := range filters {
		some, _, ok, err := p.indexCandidates(typ, []search.IndexFilter{f})
		if err != nil || !ok {
			return nil, false, err
		}
		for _, id := range some {
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
	}
	slices.Sort(ids)
	return ids, true, nil
}

// intersectFactor bounds how far the other filters without few values
// read once the driver is known: up to this many times the driver's keys
// each (reading a key costs a small fraction of evaluating a candidate).
const intersectFactor = 16

// orderedIDs returns every live id of typ in the order of a single date
// sort key (see search.Query.OrderParam): by the key's value, ascending
// or descending, equal values and resources without one (last) in id
// order. ok is false when some resource of typ is unreadable: only a
// scan reports those.
func (p *ptx) orderedIDs(typ, param string, desc bool) ([]string, bool) {
	if p.noIndex {
		return nil, false
	}
	ib, err := p.indexBucket(typ)
	if err != nil {
		return nil, false // the transaction fails with it (update)
	}
	if ib == nil {
		return nil, true
	}
	if len(unreadableIDs(ib)) > 0 {
		return nil, false // the scan names them
	}
	type entry struct {
		value []byte
		id    string
	}
	var present []entry
	var missing []string
	tag, ok := search.IndexTag(typ, param)
	if !ok {
		return nil, false
	}
	r := search.OrderRange()
	lo := append([]byte{tag}, r.Lo...)
	hi := append([]byte{tag}, r.Hi...)
	c := ib.Cursor()
	for k, _ := c.Seek(lo); k != nil && bytes.Compare(k, hi) < 0; k, _ = c.Next() {
		v := k[1:bytes.LastIndexByte(k, 0)]
		id := idOfIndexKey(k)
		if search.OrderMissing(v) {
			missing = append(missing, id)
			continue
		}
		present = append(present, entry{v, id})
	}
	if desc {
		slices.Reverse(present)
		// Equal values keep id order: reverse each run back.
		for i := 0; i < len(present); {
			j := i + 1
			for j < len(present) && bytes.Equal(present[j].value, present[i].value) {
				j++
			}
			slices.Reverse(present[i:j])
			i = j
		}
	}
	ids := make([]string, 0, len(present)+len(missing))
	for _, e := range present {
		ids = append(ids, e.id)
	}
	return append(ids, missing...), true
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
