package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

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
//	indexlog:      type 0x00 seq → the index changes of one commit
//
// tag is the parameter's search.IndexTag (0 for the unreadable marker),
// key what search.IndexKeys gives. A parameter whose keys are those of
// other parameters together (search.KeysOf: Observation's combo-code) has
// none of its own: searches read its parts' (filterRanges). Ids of
// created resources rise with time (newResourceID), so a value's keys are
// about in the order their resources were written.
//
// A small commit (a single write: ~14 keys of an Observation, each in its
// own leaf of a large index, so ~55 B-tree pages rewritten and fsynced)
// appends its changes to indexlog instead: one record at the log's end,
// about three pages. Every read of an index sees the log's changes over
// it (indexCursor), and once the log holds maxLogKeys changes the commit
// that would exceed it writes them, with its own, into the index in key
// order (flushIndex), where they share leaves.
//
// The keys of parameters placed by a measured value (search.ValuePlaced:
// an Observation's value-quantity and code-value-quantity, 2 of its ~12
// keys) go elsewhere: their place in their parameter's run depends on
// the value, so a transaction of 1 000 resources puts them at random
// places in runs as long as the partition, and its commit rewrites
// about every leaf of those runs (with index version 6's 4 such keys,
// ~2 300 page writes of a transaction into a 20 000-Observation
// partition, against ~300 for the other keys). They go to the type's
// delta instead, a bucket that holds only those added since it was
// last merged: a transaction rewrites the delta's few leaves, not the
// index's many.
//
//	indexdelta/{type}:   tag key 0x00 id → (empty), as in index/{type}
//	indexdelta: type 0x00 → the keys added to the delta since its merge
//
// Once more than maxDeltaKeys were added to it, the commit that adds
// them writes its own changes and the delta's keys into the index in one
// key order (mergeDelta) and drops the delta: that commit rewrites the index's leaves that the keys land
// on, as every commit did before, once for many commits. A key removed
// is removed from both; a key may be in both (a resource written again
// with the same value), and every read sees the index, the delta and
// the log's changes over them as one set (indexView).
//
// A write computes the entries of the version it replaces from that
// version's JSON (keys depend on nothing else) and removes them. A search
// takes candidates from the most selective of its indexed filters, drops
// those another filter with exact values excludes (one lookup each), and
// checks the rest with the full evaluator: the answer is the one a scan
// gives.
var (
	bucketIndex      = []byte("index")
	bucketIndexLog   = []byte("indexlog")
	bucketIndexDelta = []byte("indexdelta")
	// metaIndexVersion in the meta bucket holds search.IndexVersion() once
	// every partition is indexed (Open rebuilds otherwise).
	metaIndexVersion = []byte("index-version")
)

// indexLayout names the store's own part of the index layout (the log,
// the delta); the meta bucket holds search.IndexVersion() and it, so a
// file written by a store that knows no log or no delta is indexed
// again, and the other way round.
const indexLayout = "log1+delta1"

// indexVersion is what metaIndexVersion holds once the indexes are built.
func indexVersion() string { return search.IndexVersion() + "+" + indexLayout }

// The index log's bounds (variables for tests): a commit with more than
// maxLogCommit changes writes them into the index, and so does the one
// that would make the log hold more than maxLogKeys.
var (
	maxLogCommit = 256
	maxLogKeys   = 4096
)

// maxDeltaKeys bounds the keys added to a type's delta between two
// merges (a variable for tests). A transaction of 1 000 Observations adds
// ~2 000: the delta is merged at every ninth, and the eight before it
// rewrite at most its ~400 leaves each.
var maxDeltaKeys = 16384

// indexEntry is one key of one parameter (by tag) of a resource.
type indexEntry struct {
	tag byte
	key []byte
}

// indexEntries computes the entries of res (nil: none): the keys of
// every indexed parameter but those whose keys are other parameters'
// together (search.KeysOf), which searches read under those.
func indexEntries(typ string, res map[string]any) []indexEntry {
	if res == nil {
		return nil
	}
	var out []indexEntry
	stored := search.KeysOf(typ)
	for i, keys := range search.ResourceKeys(typ, res) {
		if !stored[i] {
			continue
		}
		for _, k := range keys {
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
// that leaf. A resource's ~14 keys are mostly shared prefixes (the same
// code, subject, category, _lastUpdated…) followed by a random id, so the
// keys of a large transaction pile up in a few leaves at random places:
// n resources cost O(n²) moves (83 % of a 20 000-resource import). In key
// order each insert lands after the previous one, and a transaction's
// cost is linear in its entries.
func (p *ptx) reindex(typ, id string, old, body []byte) error {
	return p.reindexEntries(typ, id, old, func() []indexEntry { return entriesOf(typ, body) })
}

// reindexEntries is reindex with the new version's entries computed by
// entries (called once, unless indexes are off). The entries of old and
// of the new version are computed by p.keys (keyWork: on other cores
// while the transaction goes on when it writes several resources) and
// folded into p.pending in the order of the calls by flushIndex.
func (p *ptx) reindexEntries(typ, id string, old []byte, entries func() []indexEntry) error {
	if p.noIndex {
		return nil
	}
	if p.keys == nil {
		p.keys = &keyWork{}
	}
	p.keys.add(&keyJob{typ: typ, id: id, old: old, entries: entries})
	return nil
}

// foldKeys waits for the index keys p.keys computes and folds them into
// p.pending, in the order the changes were made: the last change of a
// key wins, as if each was applied in turn. The keys of a resource that
// only adds keys, of a type with no other change pending, go to p.added
// instead (a transaction creating many resources: no set of its keys to
// build, only a list to sort); a later change of the type moves them
// into p.pending first.
func (p *ptx) foldKeys() {
	if p.keys == nil {
		return
	}
	jobs := p.keys.finish()
	p.keys = nil
	if p.pending == nil {
		p.pending = map[string]map[string]bool{}
	}
	if p.added == nil {
		p.added = map[string][]string{}
	}
	// Room for every key added, at most, in each type's list: a
	// transaction of 1 000 Observations adds ~14 000.
	sizes := map[string]int{}
	for _, j := range jobs {
		sizes[j.typ] += len(j.added)
	}
	for typ, n := range sizes {
		if p.pending[typ] == nil && n > 0 {
			p.added[typ] = slices.Grow(p.added[typ], n)
		}
	}
	type typeID struct{ typ, id string }
	seen := make(map[typeID]bool, len(jobs)) // the resources added
	for _, j := range jobs {
		if m := p.pending[j.typ]; m == nil && len(j.removed) == 0 && !seen[typeID{j.typ, j.id}] {
			seen[typeID{j.typ, j.id}] = true
			p.added[j.typ] = append(p.added[j.typ], j.added...)
			continue
		}
		m := p.pendingOf(j.typ)
		for _, k := range j.removed {
			m[k] = false
		}
		for _, k := range j.added {
			m[k] = true
		}
	}
}

// pendingOf returns the set of typ's pending changes, with the keys only
// added (p.added) moved into it.
func (p *ptx) pendingOf(typ string) map[string]bool {
	m := p.pending[typ]
	if m == nil {
		m = make(map[string]bool, len(p.added[typ]))
		p.pending[typ] = m
	}
	for _, k := range p.added[typ] {
		m[k] = true
	}
	delete(p.added, typ)
	return m
}

// keyJob is the index work of one reindex: the keys of typ/id to remove
// (those of old, the JSON of the version replaced) and to add (those
// entries gives), computed by compute.
type keyJob struct {
	typ, id        string
	old            []byte
	entries        func() []indexEntry
	removed, added []string
	done           bool
	panicked       any // what compute panicked with (re-raised by finish)
}

// compute computes the job's keys.
func (j *keyJob) compute() {
	defer func() {
		if r := recover(); r != nil {
			j.panicked = r
		}
	}()
	j.done = true
	j.removed = entryKeys(entriesOf(j.typ, j.old), j.id)
	j.added = entryKeys(j.entries(), j.id)
}

// entryKeys returns the index keys of entries of resource id (indexKey
// of each, as strings sharing one allocation).
func entryKeys(entries []indexEntry, id string) []string {
	if len(entries) == 0 {
		return nil
	}
	size := 0
	for _, e := range entries {
		size += len(e.key) + len(id) + 2
	}
	buf := make([]byte, 0, size)
	for _, e := range entries {
		buf = append(append(append(append(buf, e.tag), e.key...), 0), id...)
	}
	all := string(buf)
	out := make([]string, len(entries))
	at := 0
	for i, e := range entries {
		n := len(e.key) + len(id) + 2
		out[i] = all[at : at+n]
		at += n
	}
	return out
}

// keyWork computes the index keys of one transaction's writes. Computing
// a resource's keys is the largest part of indexing it (evaluating every
// indexed parameter's FHIRPath on it, ~50 µs for an Observation), and
// nothing else in the transaction depends on them until its index changes
// are written or read (flushIndex): a transaction of many resources
// queues them, and up to GOMAXPROCS-1 goroutines compute them while the
// transaction parses, encodes and stores the next ones; the queue's rest
// is computed by the transaction itself when it needs the keys (finish).
// A single write computes its keys itself, as before.
//
// The entries functions run on other goroutines: what they read (the
// resource written, old) must not change until the transaction ends,
// which holds as ptx.write is the last to touch the resource it stores.
type keyWork struct {
	jobs    []*keyJob
	queue   chan *keyJob // nil until a second job comes
	workers sync.WaitGroup
}

// keyQueue bounds the jobs waiting for a worker; beyond it the
// transaction computes a job itself.
const keyQueue = 256

// add queues j (computed by finish at the latest).
func (w *keyWork) add(j *keyJob) {
	w.jobs = append(w.jobs, j)
	if len(w.jobs) < 2 {
		return // a single write: computed by finish
	}
	if w.queue == nil {
		n := runtime.GOMAXPROCS(0) - 1
		if n < 1 {
			return
		}
		w.queue = make(chan *keyJob, keyQueue)
		for range n {
			w.workers.Add(1)
			go func() {
				defer w.workers.Done()
				for j := range w.queue {
					j.compute()
				}
			}()
		}
		w.queue <- w.jobs[0]
	}
	select {
	case w.queue <- j:
	default:
		j.compute() // the workers are behind: do it here
	}
}

// finish computes what the workers have not taken, waits for them and
// returns the jobs with their keys, in the order they were added. It
// re-raises a panic of a job's computation here.
func (w *keyWork) finish() []*keyJob {
	w.stop()
	for _, j := range w.jobs {
		if !j.done { // a single write's
			j.compute()
		}
	}
	for _, j := range w.jobs {
		if j.panicked != nil {
			panic(j.panicked)
		}
	}
	return w.jobs
}

// stop lets the workers end: it closes the queue, computes here what is
// still in it, and waits for the workers. It is safe to call more than
// once (update calls it when a transaction fails before flushIndex).
func (w *keyWork) stop() {
	if w.queue == nil {
		return
	}
	close(w.queue)
	for j := range w.queue {
		j.compute()
	}
	w.workers.Wait()
	w.queue = nil
}

// flushIndex writes the pending index changes (reindex) to bbolt: as one
// record per type at the end of the index log when they are few and the
// log has room, else into the indexes, each type's in key order, together
// with the log's changes (the log is then emptied). The first error
// sticks: the transaction fails with it (update).
func (p *ptx) flushIndex() error {
	p.foldKeys()
	if p.indexErr != nil || len(p.pending) == 0 && len(p.added) == 0 {
		return p.indexErr
	}
	if err := p.writePending(); err != nil {
		p.indexErr = err
		return err
	}
	p.pending, p.added, p.overlays = nil, nil, nil
	return nil
}

func (p *ptx) writePending() error {
	n := 0
	for _, m := range p.pending {
		n += len(m)
	}
	for _, keys := range p.added {
		n += len(keys)
	}
	lb := p.part.Bucket(bucketIndexLog)
	logged := 0
	if lb != nil {
		c := lb.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			count, _ := binary.Uvarint(v)
			logged += int(count)
		}
	}
	if lb != nil || !p.noLog && n <= maxLogCommit && logged+n <= maxLogKeys {
		// The log's records and merge work on sets.
		for _, typ := range slices.Collect(maps.Keys(p.added)) {
			p.pendingOf(typ)
		}
	}
	if !p.noLog && n <= maxLogCommit && logged+n <= maxLogKeys {
		lb, err := p.part.CreateBucketIfNotExists(bucketIndexLog)
		if err != nil {
			return fmt.Errorf("index log bucket: %w", err)
		}
		p.logWritten = true
		for _, typ := range slices.Sorted(maps.Keys(p.pending)) {
			// The file's sequence: never the same number twice in what
			// is committed, in any partition (readOverlay relies on it).
			seq, err := p.tx.Bucket(bucketMeta).NextSequence()
			if err != nil {
				return fmt.Errorf("index log: %w", err)
			}
			if err := lb.Put(logKey(typ, seq), encodeLogRecord(p.pending[typ])); err != nil {
				return fmt.Errorf("index log %s: %w", typ, err)
			}
		}
		return nil
	}
	changes := p.pending
	if lb != nil {
		// The log's changes come first (in the order they were made),
		// the pending ones after them: the last change of a key wins.
		changes = map[string]map[string]bool{}
		c := lb.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			typ, ok := typeOfLogKey(k)
			if !ok {
				return fmt.Errorf("index log: corrupt key %q", k)
			}
			m := changes[typ]
			if m == nil {
				m = map[string]bool{}
				changes[typ] = m
			}
			if err := decodeLogRecord(v, func(key []byte, present bool) { m[string(key)] = present }); err != nil {
				return fmt.Errorf("index log %s: %w", typ, err)
			}
		}
		for typ, pm := range p.pending {
			m := changes[typ]
			if m == nil {
				changes[typ] = pm
				continue
			}
			maps.Copy(m, pm)
		}
		if err := p.part.DeleteBucket(bucketIndexLog); err != nil {
			return fmt.Errorf("index log: %w", err)
		}
		p.logWritten = true
	}
	types := slices.Collect(maps.Keys(changes))
	for typ := range p.added { // after the log's merge: none when it had some
		if _, ok := changes[typ]; !ok {
			types = append(types, typ)
		}
	}
	slices.Sort(types)
	for _, typ := range types {
		m := changes[typ]
		var keys []string
		if m != nil {
			keys = slices.Collect(maps.Keys(m))
		} else { // only added, each once
			keys = p.added[typ]
		}
		keys = sortKeys(keys)
		if err := p.writeKeys(typ, keys, m); err != nil {
			return err
		}
	}
	return nil
}

// sortKeys returns keys sorted (in keys itself or a new slice). A
// transaction of 1 000 Observations writes ~14 000 keys, whose sort
// (~3 ms) waits for nothing but the cores: many keys are sorted in two
// halves at once, on the transaction's goroutine and another (the key
// workers are done by then), and the halves merged.
func sortKeys(keys []string) []string {
	if len(keys) < parallelSortMin || runtime.GOMAXPROCS(0) < 2 {
		slices.Sort(keys)
		return keys
	}
	a, b := keys[:len(keys)/2], keys[len(keys)/2:]
	var wg sync.WaitGroup
	wg.Go(func() { slices.Sort(b) })
	slices.Sort(a)
	wg.Wait()
	out := make([]string, 0, len(keys))
	for len(a) > 0 && len(b) > 0 {
		if b[0] < a[0] {
			out, b = append(out, b[0]), b[1:]
		} else {
			out, a = append(out, a[0]), a[1:]
		}
	}
	return append(append(out, a...), b...)
}

// parallelSortMin is the fewest keys sortKeys sorts in two halves (a
// variable for tests).
var parallelSortMin = 4096

// writeKeys writes typ's index changes keys (in key order; present when
// m is nil or m says so) to bbolt: into the index, those of parameters
// placed by value into the delta (removed from both). The changes that
// would take the keys added to the delta since its last merge past
// maxDeltaKeys are written with the delta's keys into the index instead
// (mergeDelta).
func (p *ptx) writeKeys(typ string, keys []string, m map[string]bool) error {
	ib, err := nestedBucket(p.part, bucketIndex, typ)
	if err != nil {
		return err
	}
	ib.FillPercent = appendFill
	byValue := search.ValuePlaced(typ)
	toDelta := func(k string) bool {
		tag := int(k[0])
		return tag > 0 && tag <= len(byValue) && byValue[tag-1]
	}
	present := func(k string) bool { return m == nil || m[k] }
	added := 0
	for _, k := range keys {
		if toDelta(k) && present(k) {
			added++
		}
	}
	// The count of keys added since the merge is an upper bound of the
	// delta's keys (a key put twice or removed again still counts): it
	// decides when to merge, never what a search finds.
	var db *bolt.Bucket
	var count uint64
	countKey := append([]byte(typ), 0)
	parent := p.part.Bucket(bucketIndexDelta)
	if parent != nil {
		db = parent.Bucket([]byte(typ))
		count, _ = binary.Uvarint(parent.Get(countKey))
	}
	if count+uint64(added) > uint64(maxDeltaKeys) {
		return mergeDelta(parent, db, ib, typ, keys, present)
	}
	size := 0
	for _, k := range keys {
		size += len(k)
	}
	// bbolt keeps the key slices until the commit: one buffer for all
	// of them.
	buf := make([]byte, 0, size)
	for _, k := range keys {
		buf = append(buf, k...)
		key := buf[len(buf)-len(k):]
		switch {
		case toDelta(k) && present(k):
			if db == nil {
				if db, err = nestedBucket(p.part, bucketIndexDelta, typ); err != nil {
					return err
				}
			}
			err = db.Put(key, nil)
		case present(k):
			err = ib.Put(key, nil)
		default:
			if db != nil {
				err = db.Delete(key)
			}
			if err == nil {
				err = ib.Delete(key)
			}
		}
		if err != nil {
			return fmt.Errorf("index %s/%s: %w", typ, idOfIndexKey(key), err)
		}
	}
	if added == 0 {
		return nil
	}
	if err := p.part.Bucket(bucketIndexDelta).Put(countKey, binary.AppendUvarint(nil, count+uint64(added))); err != nil {
		return fmt.Errorf("index delta %s: %w", typ, err)
	}
	return nil
}

// mergeDelta writes typ's index changes keys (in key order, present as
// present says) and the keys of its delta db (nil: none; a bucket of
// parent) into the index ib, all in one key order (a change of keys wins
// over the delta's key), and drops the delta and its count. In one key
// order: bbolt splits nodes only when a transaction commits, so a key
// written before others of the same transaction, in a leaf they are
// appended to, moves them all (a transaction of 10 000 Observations into a
// new partition took 6 times as long when the delta's keys followed its
// own).
func mergeDelta(parent, db, ib *bolt.Bucket, typ string, keys []string, present func(string) bool) error {
	var old []string // copied: the delta's pages are freed below
	if db != nil {
		c := db.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			old = append(old, string(k))
		}
	}
	size := 0
	for _, k := range keys {
		size += len(k)
	}
	for _, k := range old {
		size += len(k)
	}
	// bbolt keeps the key slices until the commit: one buffer for all
	// of them, never grown.
	buf := make([]byte, 0, size)
	put := func(k string, present bool) error {
		buf = append(buf, k...)
		key := buf[len(buf)-len(k):]
		if present {
			return ib.Put(key, nil)
		}
		return ib.Delete(key)
	}
	for i, j := 0, 0; i < len(keys) || j < len(old); {
		var err error
		if j >= len(old) || i < len(keys) && keys[i] <= old[j] {
			if j < len(old) && old[j] == keys[i] {
				j++ // changed now
			}
			err = put(keys[i], present(keys[i]))
			i++
		} else {
			err = put(old[j], true)
			j++
		}
		if err != nil {
			return fmt.Errorf("index %s: %w", typ, err)
		}
	}
	if parent == nil {
		return nil
	}
	if db != nil {
		if err := parent.DeleteBucket([]byte(typ)); err != nil {
			return fmt.Errorf("index delta %s: %w", typ, err)
		}
	}
	if err := parent.Delete(append([]byte(typ), 0)); err != nil {
		return fmt.Errorf("index delta %s: %w", typ, err)
	}
	return nil
}

// logKey is the key of one record of the index log: type 0x00 seq.
func logKey(typ string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(typ), 0), seq)
}

// typeOfLogKey returns the type of a log key.
func typeOfLogKey(k []byte) (string, bool) {
	if len(k) < 10 || k[len(k)-9] != 0 {
		return "", false
	}
	return string(k[:len(k)-9]), true
}

// encodeLogRecord lays out one type's changes: their number, then each
// key (its length, the key) and 1 when present or 0 when removed, in key
// order.
func encodeLogRecord(m map[string]bool) []byte {
	size := binary.MaxVarintLen64
	for k := range m {
		size += len(k) + binary.MaxVarintLen64 + 1
	}
	out := binary.AppendUvarint(make([]byte, 0, size), uint64(len(m)))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = binary.AppendUvarint(out, uint64(len(k)))
		out = append(out, k...)
		if m[k] {
			out = append(out, 1)
		} else {
			out = append(out, 0)
		}
	}
	return out
}

// decodeLogRecord calls fn with each change of a record (key in bbolt's
// memory: valid only during the call).
func decodeLogRecord(v []byte, fn func(key []byte, present bool)) error {
	n, w := binary.Uvarint(v)
	if w <= 0 {
		return fmt.Errorf("corrupt record")
	}
	v = v[w:]
	for range n {
		l, w := binary.Uvarint(v)
		if w <= 0 || uint64(len(v)-w) < l+1 {
			return fmt.Errorf("corrupt record")
		}
		key := v[w : w+int(l)]
		fn(key, v[w+int(l)] == 1)
		v = v[w+int(l)+1:]
	}
	if len(v) != 0 {
		return fmt.Errorf("corrupt record")
	}
	return nil
}

// overlayEntry is one key the index log changes: present or removed.
type overlayEntry struct {
	key     []byte
	present bool
}

// overlay returns the index log's changes of typ in key order (the last
// change of each key), read once per transaction (flushIndex forgets it)
// and kept across transactions in db.overlays while the log is what a
// commit left.
func (p *ptx) overlay(typ string) ([]overlayEntry, error) {
	if ov, ok := p.overlays[typ]; ok {
		return ov, nil
	}
	var ov []overlayEntry
	if lb := p.part.Bucket(bucketIndexLog); lb != nil {
		var err error
		if ov, err = p.readOverlay(lb, typ); err != nil {
			return nil, err
		}
	}
	if p.overlays == nil {
		p.overlays = map[string][]overlayEntry{}
	}
	p.overlays[typ] = ov
	return ov, nil
}

// readOverlay reads typ's part of the log lb: the records after those of
// the cached overlay when it holds the same first record, else all.
func (p *ptx) readOverlay(lb *bolt.Bucket, typ string) ([]overlayEntry, error) {
	prefix := append([]byte(typ), 0)
	c := lb.Cursor()
	k, _ := c.Seek(prefix)
	if k == nil || !bytes.HasPrefix(k, prefix) {
		return nil, nil
	}
	first := binary.BigEndian.Uint64(k[len(prefix):])
	switch k, _ = c.Seek(logKey(typ, math.MaxUint64)); {
	case k == nil:
		k, _ = c.Last()
	case !bytes.HasPrefix(k, prefix):
		k, _ = cursorPrev(c, k)
	}
	last := binary.BigEndian.Uint64(k[len(prefix):])
	// Log records are numbered by the file's one sequence, so the first
	// and last number name what a committed log holds: records are only
	// appended, and all removed together. A transaction that wrote to the
	// log itself sees what no other does: it neither takes nor leaves
	// a cached overlay.
	cacheKey := p.key + "\x00" + typ
	var base *logOverlay
	if !p.logWritten && p.cache != nil {
		base = p.cache.get(cacheKey)
		if base != nil && base.first == first && base.last == last {
			return base.ov, nil
		}
		if base != nil && (base.first != first || base.last > last) {
			base = nil
		}
	}
	from := first
	if base != nil {
		from = base.last + 1
	}
	m := map[string]bool{}
	for k, v := c.Seek(logKey(typ, from)); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if err := decodeLogRecord(v, func(key []byte, present bool) { m[string(key)] = present }); err != nil {
			return nil, fmt.Errorf("index log %s: %w", typ, err)
		}
	}
	var ov []overlayEntry
	if base != nil {
		ov = mergeOverlay(base.ov, m)
	} else {
		ov = make([]overlayEntry, 0, len(m))
		for _, k := range slices.Sorted(maps.Keys(m)) {
			ov = append(ov, overlayEntry{[]byte(k), m[k]})
		}
	}
	if !p.logWritten && p.cache != nil {
		p.cache.put(cacheKey, &logOverlay{first: first, last: last, ov: ov})
	}
	return ov, nil
}

// mergeOverlay returns base (in key order) with the later changes m over
// it, in key order; base is not modified.
func mergeOverlay(base []overlayEntry, m map[string]bool) []overlayEntry {
	keys := slices.Sorted(maps.Keys(m))
	out := make([]overlayEntry, 0, len(base)+len(keys))
	i := 0
	for _, k := range keys {
		for i < len(base) && string(base[i].key) < k {
			out = append(out, base[i])
			i++
		}
		if i < len(base) && string(base[i].key) == k {
			i++ // replaced
		}
		out = append(out, overlayEntry{[]byte(k), m[k]})
	}
	return append(out, base[i:]...)
}

// logOverlay is the overlay of one type's committed log records first
// to last (the sequence numbers of their keys).
type logOverlay struct {
	first, last uint64
	ov          []overlayEntry // shared: never modified
}

// overlayCache keeps the latest logOverlay of up to maxCachedOverlays
// partition types, so a search does not decode the log each time.
type overlayCache struct {
	mu sync.Mutex
	m  map[string]*logOverlay
}

const maxCachedOverlays = 256

func (c *overlayCache) get(key string) *logOverlay {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[key]
}

func (c *overlayCache) put(key string, o *logOverlay) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.m[key]; old != nil && old.first == o.first && old.last > o.last {
		return // a newer one is there (an older transaction read it late)
	}
	if c.m == nil {
		c.m = map[string]*logOverlay{}
	}
	if _, ok := c.m[key]; !ok && len(c.m) >= maxCachedOverlays {
		for k := range c.m { // any one goes
			delete(c.m, k)
			break
		}
	}
	c.m[key] = o
}

// indexView is one type's index as a transaction sees it: the index
// bucket and the delta, with the index log's changes over them.
type indexView struct {
	b  *bolt.Bucket // nil when the type has no index bucket yet
	d  *bolt.Bucket // the delta, nil when none
	ov []overlayEntry
	// dtags are the tags the delta holds keys of, in order (deltaTags).
	dtags []byte
}

// newIndexView returns the view of index b and delta d (either may be
// nil) with the log's changes ov over them.
func newIndexView(b, d *bolt.Bucket, ov []overlayEntry) *indexView {
	v := &indexView{b: b, d: d, ov: ov}
	if d != nil {
		c := d.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Seek([]byte{k[0] + 1}) {
			v.dtags = append(v.dtags, k[0])
			if k[0] == 0xff {
				break
			}
		}
		if v.dtags == nil { // emptied in this transaction
			v.d = nil
		}
	}
	return v
}

// cursor returns a new cursor on the view: bbolt's own when neither the
// log nor the delta changes anything of the type.
func (v *indexView) cursor() keyCursor {
	if len(v.ov) == 0 && v.d == nil && v.b != nil {
		return boltKeys{v.b.Cursor()}
	}
	ic := &indexCursor{ov: v.ov, dtags: v.dtags, dbound: -1}
	if v.b != nil {
		ic.c = v.b.Cursor()
	}
	if v.d != nil {
		ic.d = v.d.Cursor()
	}
	return ic
}

// has reports whether k is in the index or the delta (the log's changes
// aside).
func (v *indexView) has(k []byte) bool {
	for _, b := range []*bolt.Bucket{v.b, v.d} {
		if b != nil {
			if at, _ := b.Cursor().Seek(k); bytes.Equal(at, k) {
				return true
			}
		}
	}
	return false
}

// indexCursor walks the keys of an indexView in order: those of the
// index bucket and of the delta (a key in both once) that the log does
// not remove, and those the log adds.
//
// Most of a type's tags have no key in the delta: a Seek into one of
// them does not seek the delta, but notes the next tag it holds keys of
// (dbound) and seeks there only if the walk gets that far; until then
// Next steps the bucket alone, as bbolt's own cursor.
type indexCursor struct {
	c  *bolt.Cursor // nil: no index bucket
	mk []byte       // the bucket's current key, nil past the end
	d  *bolt.Cursor // nil: no delta
	dk []byte       // the delta's current key, nil past its end or while dbound holds
	// dbound, when not -1, is a tag: the delta holds no key before the
	// first key of that tag not yet passed (it was not sought).
	dbound int
	dtags  []byte
	ov     []overlayEntry
	oi     int    // the overlay's current position
	cur    []byte // the key last returned
}

// Seek moves to the first key >= k and returns it (nil: none).
func (ic *indexCursor) Seek(k []byte) []byte {
	if ic.c != nil {
		ic.mk, _ = ic.c.Seek(k)
	}
	ic.dk, ic.dbound = nil, -1
	if ic.d != nil {
		tag := byte(0)
		if len(k) > 0 {
			tag = k[0]
		}
		i, found := slices.BinarySearch(ic.dtags, tag)
		switch {
		case found || len(k) == 0:
			ic.dk, _ = ic.d.Seek(k)
		case i < len(ic.dtags):
			ic.dbound = int(ic.dtags[i])
		}
	}
	ic.oi, _ = slices.BinarySearchFunc(ic.ov, k, func(e overlayEntry, k []byte) int { return bytes.Compare(e.key, k) })
	return ic.settle()
}

// Next moves to the key after the one last returned and returns it.
func (ic *indexCursor) Next() []byte {
	if ic.cur == nil {
		return nil
	}
	if ic.oi >= len(ic.ov) && ic.dk == nil && ic.mk != nil {
		// Only the bucket's keys are left before the delta's bound:
		// the walk of a tag the delta holds nothing of.
		k, _ := ic.c.Next()
		ic.mk = k
		if k != nil && (ic.dbound < 0 || int(k[0]) < ic.dbound) {
			ic.cur = k
			return k
		}
		return ic.settle()
	}
	cur := ic.cur
	if ic.mk != nil && bytes.Equal(ic.mk, cur) {
		ic.mk, _ = ic.c.Next()
	}
	if ic.dk != nil && bytes.Equal(ic.dk, cur) {
		ic.dk, _ = ic.d.Next()
	}
	if ic.oi < len(ic.ov) && bytes.Equal(ic.ov[ic.oi].key, cur) {
		ic.oi++
	}
	return ic.settle()
}

// settle returns the smallest visible key at or after the positions,
// stepping over the keys the log removes.
func (ic *indexCursor) settle() []byte {
	for {
		least := ic.mk
		if ic.dk != nil && (least == nil || bytes.Compare(ic.dk, least) < 0) {
			least = ic.dk
		}
		if ic.oi < len(ic.ov) && (least == nil || bytes.Compare(ic.ov[ic.oi].key, least) < 0) {
			least = ic.ov[ic.oi].key
		}
		if ic.dbound >= 0 && (least == nil || int(least[0]) >= ic.dbound) {
			// The walk reached where the delta's keys go on.
			ic.dk, _ = ic.d.Seek([]byte{byte(ic.dbound)})
			ic.dbound = -1
			continue
		}
		if least == nil {
			ic.cur = nil
			return nil
		}
		if ic.oi >= len(ic.ov) || !bytes.Equal(ic.ov[ic.oi].key, least) || ic.ov[ic.oi].present {
			ic.cur = least
			return least
		}
		// Removed by the log: skip it here and in the buckets.
		if ic.mk != nil && bytes.Equal(ic.mk, least) {
			ic.mk, _ = ic.c.Next()
		}
		if ic.dk != nil && bytes.Equal(ic.dk, least) {
			ic.dk, _ = ic.d.Next()
		}
		ic.oi++
	}
}

// searchForm returns what decodeForSearch gives for the JSON that
// encodeResource writes of v (a decoded resource or a part of it): the
// same tree with numbers as float64, parsed as encoding/json parses them,
// without writing and reading the JSON. ok is false for anything whose
// round trip is not surely that (an invalid UTF-8 string becomes U+FFFD,
// a number beyond float64 an error, another Go type); the caller then
// decodes the JSON itself. The parts of v that are already so (no
// number to convert: most of a resource) are v's own, not copies: the
// result is only to be read.
func searchForm(v any) (out any, ok bool) {
	out, _, ok = searchFormOf(v)
	return out, ok
}

// searchFormOf is searchForm; changed reports whether out is not v
// itself.
func searchFormOf(v any) (out any, changed, ok bool) {
	// Unchanged parts are returned as v itself, not re-boxed.
	switch x := v.(type) {
	case nil, bool:
		return v, false, true
	case string:
		return v, false, utf8.ValidString(x)
	case json.Number:
		f, err := strconv.ParseFloat(string(x), 64)
		return f, true, err == nil
	case float64:
		return v, false, !math.IsInf(x, 0) && !math.IsNaN(x)
	case map[string]any:
		var m map[string]any // a copy once an element changes
		for k, e := range x {
			if !utf8.ValidString(k) {
				return nil, false, false
			}
			f, ch, ok := searchFormOf(e)
			if !ok {
				return nil, false, false
			}
			if ch {
				if m == nil {
					m = maps.Clone(x)
				}
				m[k] = f
			}
		}
		if m == nil {
			return v, false, true
		}
		return m, true, true
	case []any:
		var l []any
		for i, e := range x {
			f, ch, ok := searchFormOf(e)
			if !ok {
				return nil, false, false
			}
			if ch {
				if l == nil {
					l = slices.Clone(x)
				}
				l[i] = f
			}
		}
		if l == nil {
			return v, false, true
		}
		return l, true, true
	}
	return nil, false, false
}

// entriesOfResource returns the index entries of res as written (its
// JSON is body): from res itself when searchForm can give what decoding
// body gives, else from body.
func entriesOfResource(typ string, res map[string]any, body []byte) []indexEntry {
	if form, ok := searchForm(res); ok {
		return indexEntries(typ, form.(map[string]any))
	}
	return entriesOf(typ, body)
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
func unreadableIDs(ix *indexView) []string {
	prefix := indexKey(0, unreadableEntries[0].key, "")
	var ids []string
	c := ix.cursor()
	for k := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k = c.Next() {
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

// indexBucket returns the index of typ with the transaction's pending
// changes in it, nil when nothing of typ was ever indexed.
func (p *ptx) indexBucket(typ string) (*indexView, error) {
	if err := p.flushIndex(); err != nil {
		return nil, err
	}
	ov, err := p.overlay(typ)
	if err != nil {
		return nil, err
	}
	var tb, db *bolt.Bucket
	if b := p.part.Bucket(bucketIndex); b != nil {
		tb = b.Bucket([]byte(typ))
	}
	if b := p.part.Bucket(bucketIndexDelta); b != nil {
		db = b.Bucket([]byte(typ))
	}
	if tb == nil && db == nil && len(ov) == 0 {
		return nil, nil
	}
	return newIndexView(tb, db, ov), nil
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
	if string(version) == indexVersion() {
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
			for _, name := range [][]byte{bucketIndex, bucketIndexLog, bucketIndexDelta} {
				if b.Bucket(name) != nil {
					if err := b.DeleteBucket(name); err != nil {
						return fmt.Errorf("drop the indexes of partition %s: %w", key, err)
					}
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
		logf("pfr_store: building search indexes of %d resources in %d partitions (once, for index version %s)", total, len(parts), indexVersion())
	}
	done, lastLog := 0, time.Now()
	for _, w := range todo {
		for start := 0; start < len(w.ids); start += indexBatch {
			batch := w.ids[start:min(start+indexBatch, len(w.ids))]
			err := db.bolt.Update(func(tx *bolt.Tx) error {
				p := &ptx{tx: tx, part: tx.Bucket(partitionBucketName(w.part)), key: w.part, noLog: true}
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
		return tx.Bucket(bucketMeta).Put(metaIndexVersion, []byte(indexVersion()))
	})
	if err != nil {
		return err
	}
	if total > 0 {
		logf("pfr_store: search indexes built (%d resources)", total)
	}
	return nil
}
