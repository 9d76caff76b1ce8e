package store

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/pfrgateway/caddy-pfr/fhir"
)

// snapshotTTL is how long the pages of a search stay available, as HAPI's
// search cache does.
const snapshotTTL = time.Hour

// searchSnapshot pins the ordered result of a search so that its pages stay
// stable while resources are written between page requests.
type searchSnapshot struct {
	Partition string `json:"partition"`
	// Kind is the Bundle type of the pages: searchset or history.
	Kind string `json:"kind"`
	// Type and Query are the search to re-plan for _include and _elements
	// on every page; Type is "" for $everything.
	Type  string `json:"type"`
	Query string `json:"query"`
	// Refs is the ordered result: "Type/id" each for a searchset,
	// "Type/id/version" for a history.
	Refs    refList
	Expires time.Time `json:"expires"`
	// size is how many references the snapshot holds (or will hold,
	// once placed): what maxSnapshotRefs counts.
	size int
	// A lazy snapshot (saveLazySnapshot) places its matches only when
	// they are needed: ready is closed once Refs holds them (or err says
	// why it cannot; nil ready: placed from the start), and place
	// computes them in a transaction that sees what the search saw.
	ready chan struct{}
	place func(p *ptx) (refList, error)
	err   error
	// holders is how many search ids name the snapshot: the same search
	// run again while its lazy snapshot is pending gets the same one
	// (nothing was written since: the same matches).
	holders int
}

// refList is an ordered list of references packed in one buffer: the
// matches of a search of a large record (100 000 for
// Observation?_sort=-date) are one allocation, not one each.
type refList struct {
	// prefix is prepended to every element ("Observation/" for the ids
	// of one type).
	prefix string
	data   []byte
	spans  []refSpan // element i is data[spans[i].start:spans[i].end]
}

// refSpan is where one element of a refList lies in its data.
type refSpan struct{ start, end uint32 }

// packRefs packs refs.
func packRefs(refs []string) refList {
	var b refListBuilder
	for _, r := range refs {
		b.addString(r)
	}
	return b.list()
}

// Len is the number of elements.
func (l refList) Len() int { return len(l.spans) }

// bare returns element i without the prefix.
func (l refList) bare(i int) string { return string(l.bareBytes(i)) }

// bareBytes is bare in the list's own memory.
func (l refList) bareBytes(i int) []byte { return l.data[l.spans[i].start:l.spans[i].end] }

// bareAll returns every element without the prefix.
func (l refList) bareAll() []string {
	out := make([]string, l.Len())
	for i := range out {
		out[i] = l.bare(i)
	}
	return out
}

// At returns element i.
func (l refList) At(i int) string { return l.prefix + l.bare(i) }

// Slice returns elements i to j-1.
func (l refList) Slice(i, j int) []string {
	out := make([]string, 0, j-i)
	for ; i < j; i++ {
		out = append(out, l.At(i))
	}
	return out
}

// refListBuilder collects the elements of a refList.
type refListBuilder struct {
	prefix string
	buf    []byte
	spans  []refSpan
}

func (b *refListBuilder) add(v []byte) {
	b.grow(len(v))
	b.spans = append(b.spans, refSpan{uint32(len(b.buf)), uint32(len(b.buf) + len(v))})
	b.buf = append(b.buf, v...)
}

func (b *refListBuilder) addString(v string) {
	b.grow(len(v))
	b.spans = append(b.spans, refSpan{uint32(len(b.buf)), uint32(len(b.buf) + len(v))})
	b.buf = append(b.buf, v...)
}

// grow makes room for one more element of n bytes, doubling what is
// full (append grows a large slice by a quarter: 100 000 ids would be
// copied about twenty times).
func (b *refListBuilder) grow(n int) {
	if len(b.buf)+n > cap(b.buf) {
		b.buf = slices.Grow(b.buf, max(n, cap(b.buf)))
	}
	if len(b.spans) == cap(b.spans) {
		b.spans = slices.Grow(b.spans, max(1, cap(b.spans)))
	}
}

// len is how many elements were added.
func (b *refListBuilder) len() int { return len(b.spans) }

// list returns what was added.
func (b *refListBuilder) list() refList {
	return refList{prefix: b.prefix, data: b.buf, spans: b.spans}
}

// Snapshots are kept in memory, not in the file: a search that has a
// next page must not pay a write (and an fsync) of every match's reference
// — 100 000 of them for Observation?_sort=-date on a large record. Losing
// them on a restart or a crash only turns their next links into the 410 an
// expired search gets (HAPI's answer too).
type snapshots struct {
	mu    sync.Mutex
	byID  map[string]*searchSnapshot
	order []string // ids, oldest first
	refs  int      // references held by every snapshot together
	// lastSweep is the last drop of expired snapshots.
	lastSweep time.Time

	// pending are the lazy snapshots of each partition not placed yet:
	// nothing was written to the partition since their search read it.
	// The next writer of the partition takes them (beginWrite) and
	// places them in a read transaction begun before its own.
	pending map[string][]*searchSnapshot
	// writes counts the writes begun in each partition and writing those
	// not ended: a search that saw no write in progress when it began and
	// the same count when it registers its snapshot read what the
	// partition still holds.
	writes  map[string]uint64
	writing map[string]int
	// beginning counts the read transactions being begun to place a
	// partition's snapshots: writes of the partition wait for them
	// (cond, on mu) so that those transactions see what was pending.
	// bbolt's Begin is never called with mu held: a search holds its
	// read transaction while it takes mu, and a Begin may wait for every
	// read transaction to end (a commit that grows the file).
	beginning map[string]int
	cond      *sync.Cond
}

// initLocked makes the maps and the condition; c.mu is held.
func (c *snapshots) initLocked() {
	if c.cond == nil {
		c.byID = map[string]*searchSnapshot{}
		c.pending = map[string][]*searchSnapshot{}
		c.writes, c.writing, c.beginning = map[string]uint64{}, map[string]int{}, map[string]int{}
		c.cond = sync.NewCond(&c.mu)
	}
}

// beginReadLocked begins a read transaction that sees partition part as
// it is now: no write of part begins before it has begun. c.mu is held
// on entry and on return, released meanwhile.
func (db *DB) beginReadLocked(part string) (*bolt.Tx, error) {
	c := &db.snapshots
	c.beginning[part]++
	c.mu.Unlock()
	tx, err := db.bolt.Begin(false)
	c.mu.Lock()
	if c.beginning[part]--; c.beginning[part] == 0 {
		delete(c.beginning, part)
	}
	c.cond.Broadcast()
	if err != nil {
		return nil, fmt.Errorf("search snapshot: %w", err)
	}
	return tx, nil
}

// sweepInterval bounds how often saving a snapshot also drops expired ones.
const sweepInterval = time.Minute

// maxSnapshotRefs bounds the references all snapshots hold together
// (about 64 bytes each): beyond it, the oldest snapshots go first.
var maxSnapshotRefs = 1_000_000

// saveSnapshot keeps snap under a fresh random id, dropping expired
// snapshots at most once per sweepInterval, and the oldest ones while
// the snapshots hold more than maxSnapshotRefs references.
func (db *DB) saveSnapshot(snap *searchSnapshot) (string, error) {
	now := db.clock()
	snap.Expires = now.Add(snapshotTTL)
	id := newID()
	c := &db.snapshots
	c.mu.Lock()
	defer c.mu.Unlock()
	c.initLocked()
	c.sweepLocked(now)
	c.addLocked(id, snap)
	return id, nil
}

// sweepLocked drops expired snapshots at most once per sweepInterval;
// c.mu is held.
func (c *snapshots) sweepLocked(now time.Time) {
	if now.Sub(c.lastSweep) >= sweepInterval {
		c.lastSweep = now
		c.dropLocked(func(s *searchSnapshot) bool { return now.After(s.Expires) })
	}
}

// addLocked keeps snap under id, dropping the oldest snapshots while the
// snapshots hold more than maxSnapshotRefs references; c.mu is held.
func (c *snapshots) addLocked(id string, snap *searchSnapshot) {
	if snap.ready == nil {
		snap.size = snap.Refs.Len()
	}
	c.byID[id] = snap
	snap.holders++
	c.order = append(c.order, id)
	c.refs += snap.size
	for c.refs > maxSnapshotRefs && len(c.order) > 1 {
		oldest := c.order[0]
		c.order = c.order[1:]
		if s := c.byID[oldest]; s != nil {
			c.forgetLocked(oldest, s)
		}
	}
}

// forgetLocked drops the snapshot s kept under id; c.mu is held.
func (c *snapshots) forgetLocked(id string, s *searchSnapshot) {
	c.refs -= s.size
	delete(c.byID, id)
	if s.holders--; s.holders == 0 {
		c.unpendLocked(s)
	}
}

// unpendLocked takes s out of its partition's pending snapshots and
// reports whether it was there; c.mu is held.
func (c *snapshots) unpendLocked(s *searchSnapshot) bool {
	list := c.pending[s.Partition]
	i := slices.Index(list, s)
	if i < 0 {
		return false
	}
	list = slices.Delete(list, i, i+1)
	if len(list) == 0 {
		delete(c.pending, s.Partition)
	} else {
		c.pending[s.Partition] = list
	}
	return true
}

// writeState returns how many writes of partition part have begun and
// whether none is in progress: what a search that may save a lazy
// snapshot notes before it begins its read transaction.
func (db *DB) writeState(part string) (writes uint64, idle bool) {
	c := &db.snapshots
	c.mu.Lock()
	defer c.mu.Unlock()
	c.initLocked()
	return c.writes[part], c.writing[part] == 0
}

// saveLazySnapshot keeps snap, a search's snapshot whose matches are not
// placed yet, under a fresh random id; p is the search's read
// transaction, still open, and writes and idle what writeState said
// before it began. When a write of the partition began since (or was in
// progress then), what p reads may already be gone by the time the
// snapshot is used: its matches are placed now, in p. Else the snapshot
// waits in the partition's pending ones until its pages are asked for
// (placeSnapshot) or the partition's next writer places it (beginWrite);
// the same search pending already gives its snapshot instead.
func (db *DB) saveLazySnapshot(p *ptx, snap *searchSnapshot, size int, writes uint64, idle bool) (string, error) {
	now := db.clock()
	snap.Expires = now.Add(snapshotTTL)
	snap.size = size
	snap.ready = make(chan struct{})
	id := newID()
	c := &db.snapshots
	c.mu.Lock()
	c.initLocked()
	if !idle || c.writes[snap.Partition] != writes || c.writing[snap.Partition] != 0 {
		c.mu.Unlock()
		fill(snap, p)
		if snap.err != nil {
			return "", snap.err
		}
		c.mu.Lock()
	} else if i := slices.IndexFunc(c.pending[snap.Partition], func(s *searchSnapshot) bool {
		return s.Kind == snap.Kind && s.Type == snap.Type && s.Query == snap.Query && !now.After(s.Expires)
	}); i >= 0 {
		// The same search, nothing written since: its snapshot, kept
		// as long as the newer search's.
		same := c.pending[snap.Partition][i]
		same.Expires = snap.Expires
		snap = same
	} else {
		c.pending[snap.Partition] = append(c.pending[snap.Partition], snap)
	}
	defer c.mu.Unlock()
	c.sweepLocked(now)
	c.addLocked(id, snap)
	return id, nil
}

// fill places the matches of the lazy snapshot snap in p and marks it
// ready.
func fill(snap *searchSnapshot, p *ptx) {
	snap.Refs, snap.err = snap.place(p)
	if snap.err == nil && snap.Refs.Len() != snap.size {
		snap.err = fmt.Errorf("search snapshot: %d matches placed, %d counted", snap.Refs.Len(), snap.size)
	}
	close(snap.ready)
}

// beginWrite is called before a write transaction of partition part
// begins; the write calls the function it returns once it has ended. The
// partition's pending snapshots are placed in a read transaction begun
// here, before the write's, so they see what their searches saw; they
// are placed in the background, and their pages wait for them.
func (db *DB) beginWrite(part string) (end func()) {
	c := &db.snapshots
	c.mu.Lock()
	c.initLocked()
	for c.beginning[part] > 0 {
		c.cond.Wait()
	}
	c.writes[part]++
	c.writing[part]++
	taken := c.pending[part]
	delete(c.pending, part)
	var tx *bolt.Tx
	var err error
	if len(taken) > 0 {
		tx, err = db.beginReadLocked(part)
	}
	c.mu.Unlock()
	end = func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.writing[part]--; c.writing[part] == 0 {
			delete(c.writing, part)
		}
	}
	if len(taken) == 0 {
		return end
	}
	if err != nil {
		for _, s := range taken {
			s.err = err
			close(s.ready)
		}
		return end
	}
	go db.fillIn(tx, part, taken)
	return end
}

// fillIn places the lazy snapshots snaps of partition part in the read
// transaction tx, then ends it.
func (db *DB) fillIn(tx *bolt.Tx, part string, snaps []*searchSnapshot) {
	defer func() { _ = tx.Rollback() }()
	b, err := openPartition(tx, part)
	for _, s := range snaps {
		if err != nil {
			s.err = err
			close(s.ready)
			continue
		}
		fill(s, &ptx{tx: tx, part: b, key: part, now: db.clock(), noIndex: db.noIndex, cache: &db.overlays})
	}
}

// placeSnapshot waits until the matches of snap are placed; a lazy
// snapshot still pending is placed here, in a read transaction begun
// while no write of its partition can begin.
func (db *DB) placeSnapshot(snap *searchSnapshot) error {
	if snap.ready == nil {
		return nil
	}
	c := &db.snapshots
	c.mu.Lock()
	if c.unpendLocked(snap) {
		tx, err := db.beginReadLocked(snap.Partition)
		c.mu.Unlock()
		if err != nil {
			snap.err = err
			close(snap.ready)
		} else {
			db.fillIn(tx, snap.Partition, []*searchSnapshot{snap})
		}
	} else {
		c.mu.Unlock()
	}
	<-snap.ready
	return snap.err
}

// dropLocked deletes the snapshots for which doomed is true; c.mu is held.
func (c *snapshots) dropLocked(doomed func(*searchSnapshot) bool) {
	kept := c.order[:0]
	for _, id := range c.order {
		s := c.byID[id]
		if s == nil {
			continue
		}
		if doomed(s) {
			c.forgetLocked(id, s)
			continue
		}
		kept = append(kept, id)
	}
	clear(c.order[len(kept):])
	c.order = kept
}

// count returns how many snapshots are kept.
func (c *snapshots) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.byID)
}

// loadSnapshot returns the snapshot id of partition part, or HAPI's 410 for
// an unknown or expired search. A snapshot of another partition is unknown.
// The snapshot is shared: callers only read it.
func (db *DB) loadSnapshot(id, part string) (*searchSnapshot, error) {
	c := &db.snapshots
	c.mu.Lock()
	snap := c.byID[id]
	c.mu.Unlock()
	if snap == nil || snap.Partition != part || db.clock().After(snap.Expires) {
		return nil, fhir.Errorf(http.StatusGone, fhir.CodeNotFound, "Search ID %q does not exist and may have expired", id)
	}
	if err := db.placeSnapshot(snap); err != nil {
		return nil, err
	}
	return snap, nil
}

// dropSnapshotsOf deletes every snapshot of a partition.
func (db *DB) dropSnapshotsOf(part string) {
	c := &db.snapshots
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropLocked(func(s *searchSnapshot) bool { return s.Partition == part })
}

// Snapshot kinds: the Bundle type their pages have.
const (
	snapshotSearch  = "searchset"
	snapshotHistory = "history"
)

// snapshotLink is the URL of one page of a snapshot, in HAPI's form.
func (q *request) snapshotLink(searchID, kind string, offset, count int) string {
	v := url.Values{}
	v.Set("_getpages", searchID)
	v.Set("_getpagesoffset", strconv.Itoa(offset))
	v.Set("_count", strconv.Itoa(count))
	v.Set("_bundletype", kind)
	return q.base + "?" + v.Encode()
}

// page answers GET base?_getpages=…: one page of a pinned search.
func (q *request) page() error {
	params := q.r.URL.Query()
	searchID := params.Get("_getpages")
	offset, err := nonNegativeInt(params, "_getpagesoffset")
	if err != nil {
		return err
	}
	count, err := pageSize(params)
	if err != nil {
		return err
	}
	count = max(count, 1)
	snap, err := q.h.db.loadSnapshot(searchID, q.part)
	if err != nil {
		return err
	}
	query, err := url.ParseQuery(snap.Query)
	if err != nil {
		return fmt.Errorf("search snapshot query: %w", err)
	}
	if snap.Kind == "" {
		snap.Kind = snapshotSearch
	}
	var plan *searchPlan
	if snap.Kind == snapshotSearch && snap.Type != "" {
		if plan, err = q.h.engine.plan(snap.Type, query, false); err != nil {
			return err
		}
	}
	total := snap.Refs.Len()
	b := q.newBundle(snap.Kind)
	b.Total = &total
	b.Link = []outLink{{Relation: "self", URL: q.snapshotLink(searchID, snap.Kind, offset, count)}}
	if offset+count < total {
		b.Link = append(b.Link, outLink{Relation: "next", URL: q.snapshotLink(searchID, snap.Kind, offset+count, count)})
	}
	if offset > 0 {
		b.Link = append(b.Link, outLink{Relation: "previous", URL: q.snapshotLink(searchID, snap.Kind, max(offset-count, 0), count)})
	}
	var page []string
	if offset < total {
		page = snap.Refs.Slice(offset, min(offset+count, total))
	}
	if snap.Kind == snapshotHistory {
		err = q.historyPage(b, page)
	} else {
		err = q.fillPage(b, page, plan)
	}
	if err != nil {
		return err
	}
	q.writeBundle(http.StatusOK, b)
	return nil
}
