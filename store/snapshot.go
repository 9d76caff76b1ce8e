package store

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

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
	if c.byID == nil {
		c.byID = map[string]*searchSnapshot{}
	}
	if now.Sub(c.lastSweep) >= sweepInterval {
		c.lastSweep = now
		c.dropLocked(func(s *searchSnapshot) bool { return now.After(s.Expires) })
	}
	c.byID[id] = snap
	c.order = append(c.order, id)
	c.refs += snap.Refs.Len()
	for c.refs > maxSnapshotRefs && len(c.order) > 1 {
		oldest := c.order[0]
		c.order = c.order[1:]
		if s := c.byID[oldest]; s != nil {
			c.refs -= s.Refs.Len()
			delete(c.byID, oldest)
		}
	}
	return id, nil
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
			c.refs -= s.Refs.Len()
			delete(c.byID, id)
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
