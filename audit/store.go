package audit

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/kv"
)

// Buckets, all prefixed "audit/" since the bbolt file is shared with the
// other packages.
var (
	bucketEvents = []byte("audit/events")  // record id, 0, newest stamp → segment (segment.go)
	bucketByTime = []byte("audit/by-time") // oldest stamp → record id, 0, newest stamp (byTimeValue)
	bucketCounts = []byte("audit/counts")  // record id → number of events (8, big-endian)
)

// BoltBuckets lists every bucket the log uses.
var BoltBuckets = [][]byte{bucketEvents, bucketByTime, bucketCounts}

// stampLen is the length of an event's stamp: big-endian nanoseconds since
// 1970 and a big-endian sequence number, so stamps sort by time.
const stampLen = 16

// maxExpiredPerTx bounds the expired events one transaction deletes, so
// that a first pruning after a long pause does not hold the writer lock for
// long; the next round deletes the rest.
const maxExpiredPerTx = 10000

// storedEvent is an Event as stored: short names, empty fields omitted.
type storedEvent struct {
	Time        time.Time `json:"t"`
	Issuer      string    `json:"iss,omitempty"`
	Subject     string    `json:"sub,omitempty"`
	ClientID    string    `json:"cid,omitempty"`
	SourceIP    string    `json:"ip,omitempty"`
	Action      string    `json:"a"`
	Interaction string    `json:"i,omitempty"`
	Target      string    `json:"tgt,omitempty"`
	Status      int       `json:"s,omitempty"`
	Detail      string    `json:"d,omitempty"`
}

// storedAs returns e without its record id, which is in the key.
func storedAs(e Event) storedEvent {
	return storedEvent{
		Time: e.Time, Issuer: e.Issuer, Subject: e.Subject, ClientID: e.ClientID,
		SourceIP: e.SourceIP, Action: e.Action, Interaction: e.Interaction,
		Target: e.Target, Status: e.Status, Detail: e.Detail,
	}
}

// event returns the Event s stores for recordID.
func (s storedEvent) event(recordID string) Event {
	return Event{
		Time: s.Time, RecordID: recordID, Issuer: s.Issuer, Subject: s.Subject,
		ClientID: s.ClientID, SourceIP: s.SourceIP, Action: s.Action,
		Interaction: s.Interaction, Target: s.Target, Status: s.Status, Detail: s.Detail,
	}
}

// validRecordID reports whether id can be part of a key: not empty, short,
// and without the NUL byte that ends it in keys.
func validRecordID(id string) bool {
	return id != "" && len(id) <= 255 && !bytes.ContainsRune([]byte(id), 0)
}

// Times a stamp can hold: nanoseconds since 1970 in an int64.
var (
	earliestStamp = time.Unix(0, 0)
	latestStamp   = time.Unix(0, math.MaxInt64)
)

// stamp returns the stamp of an event at t with sequence number seq.
func stamp(t time.Time, seq uint64) []byte {
	return appendStamp(make([]byte, 0, stampLen), t, seq)
}

// appendStamp appends the stamp of an event at t with sequence number seq.
// Times outside what a stamp holds count as its earliest or latest.
func appendStamp(buf []byte, t time.Time, seq uint64) []byte {
	var ns uint64
	switch {
	case t.After(latestStamp):
		ns = math.MaxInt64
	case t.After(earliestStamp):
		ns = uint64(t.UnixNano())
	}
	buf = binary.BigEndian.AppendUint64(buf, ns)
	return binary.BigEndian.AppendUint64(buf, seq)
}

// recordPrefix is the start of every event key of recordID.
func recordPrefix(recordID string) []byte {
	return append([]byte(recordID), 0)
}

// eventKey is the key of recordID's segment whose newest event has stamp
// st (see segment.go).
func eventKey(recordID string, st []byte) []byte {
	return append(recordPrefix(recordID), st...)
}

// eventSizeHint is about the size of an event as stored, for sizing a
// batch's buffer.
const eventSizeHint = 256

// seqSpan is how many events one sequence number stamps: the n-th event of
// a batch gets the sequence number seq*seqSpan+n, unique across batches
// (the bucket's sequence only grows) and above every sequence number the
// log gave single events before (seq*seqSpan > seq), so one NextSequence
// serves a whole batch (a round trip on PostgreSQL).
const seqSpan = 1 << 20

// boltTx is the log's view of one kv transaction (bbolt or PostgreSQL).
type boltTx struct{ tx kv.Tx }

func (t boltTx) b(name []byte) kv.Bucket { return t.tx.Bucket(name) }

// count returns how many events recordID has.
func (t boltTx) count(recordID string) uint64 {
	v := t.b(bucketCounts).Get([]byte(recordID))
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// setCount stores how many events recordID has.
func (t boltTx) setCount(recordID string, n uint64) error {
	var err error
	if n == 0 {
		err = t.b(bucketCounts).Delete([]byte(recordID))
	} else {
		err = t.b(bucketCounts).Put([]byte(recordID), binary.BigEndian.AppendUint64(nil, n))
	}
	if err != nil {
		return fmt.Errorf("audit: counting events of %s: %w", recordID, err)
	}
	return nil
}

// add writes events (already normalized, with valid record ids) and
// returns how many each record received.
func (t boltTx) add(events []Event) (map[string]uint64, error) {
	// Every event's stamp and JSON in one buffer: a value must stay
	// unchanged until the transaction ends, so each is a full slice of
	// what was appended (a buffer outgrown is left as it is, not reused).
	enc := make([]byte, 0, len(events)*(eventSizeHint+stampLen))
	byRecord := make(map[string][]segEvent)
	var seq uint64
	for i, e := range events {
		if i%seqSpan == 0 {
			s, err := t.b(bucketEvents).NextSequence()
			if err != nil {
				return nil, fmt.Errorf("audit: numbering events: %w", err)
			}
			seq = s * seqSpan
		}
		start := len(enc)
		enc = appendStamp(enc, e.Time, seq+uint64(i%seqSpan))
		var err error
		enc, err = appendStored(enc, e)
		if err != nil {
			return nil, fmt.Errorf("audit: encoding event: %w", err)
		}
		st := enc[start : start+stampLen : start+stampLen]
		data := enc[start+stampLen : len(enc) : len(enc)]
		byRecord[e.RecordID] = append(byRecord[e.RecordID], segEvent{stamp: st, data: data})
	}
	// Every read first, then every write: bbolt's Cursor.Prev can return
	// nil where a leaf was emptied by a delete earlier in the same
	// transaction, so the reverse walks that find overlaps run before any
	// delete. (keepNewest and deleteExpired, after, walk forward only.)
	type plan struct {
		id         string
		evs        []segEvent
		overlapped []segmentRef
	}
	plans := make([]plan, 0, len(byRecord))
	for id, evs := range byRecord {
		sortByStamp(evs)
		overlapped, older, err := t.overlaps(id, evs[0].stamp)
		if err != nil {
			return nil, err
		}
		if len(older) > 0 {
			evs = append(older, evs...)
			slices.SortFunc(evs, compareStamps)
		}
		plans = append(plans, plan{id, evs, overlapped})
	}
	added := make(map[string]uint64, len(plans))
	for _, p := range plans {
		for _, ref := range p.overlapped {
			if err := t.deleteSegment(ref); err != nil {
				return nil, err
			}
		}
		for evs := p.evs; len(evs) > 0; {
			n := min(len(evs), maxSegmentEvents)
			if err := t.putSegment(p.id, evs[:n]); err != nil {
				return nil, err
			}
			evs = evs[n:]
		}
		n := uint64(len(byRecord[p.id]))
		added[p.id] = n
		if err := t.setCount(p.id, t.count(p.id)+n); err != nil {
			return nil, err
		}
	}
	return added, nil
}

// sortByStamp sorts events by stamp; a batch is mostly in order already.
func sortByStamp(evs []segEvent) {
	if !slices.IsSortedFunc(evs, compareStamps) {
		slices.SortFunc(evs, compareStamps)
	}
}

func compareStamps(a, b segEvent) int { return bytes.Compare(a.stamp, b.stamp) }

// overlaps returns recordID's segments holding events newer than oldest,
// and copies of their events: new events older than the record's newest
// stored one (a slow request's event in the next batch, another node's
// batch) are merged with the segments they overlap, so that segments stay
// apart.
func (t boltTx) overlaps(recordID string, oldest []byte) ([]segmentRef, []segEvent, error) {
	var refs []segmentRef
	var evs []segEvent
	prefix := recordPrefix(recordID)
	c := t.b(bucketEvents).Cursor()
	for k, v := t.lastOf(c, recordID); k != nil && bytes.HasPrefix(k, prefix) && bytes.Compare(k[len(prefix):], oldest) > 0; k, v = c.Prev() {
		before := len(evs)
		var err error
		if evs, err = readSegment(evs, k[len(prefix):], v); err != nil {
			return nil, nil, fmt.Errorf("audit: reading events of %s: %w", recordID, err)
		}
		refs = append(refs, segmentRef{recordID: recordID, newest: bytes.Clone(k[len(prefix):]), oldest: bytes.Clone(evs[before].stamp)})
	}
	// The values read are deleted before the merged events are written.
	for i := range evs {
		evs[i] = segEvent{stamp: bytes.Clone(evs[i].stamp), data: bytes.Clone(evs[i].data)}
	}
	return refs, evs, nil
}

// lastOf moves c to recordID's newest segment (or to a key of another
// record or nil, when it has none).
func (t boltTx) lastOf(c kv.Cursor, recordID string) (k, v []byte) {
	// Every key of the record sorts before recordID+1: no record's key can
	// start with the prefix recordID+NUL.
	if k, _ = c.Seek(append([]byte(recordID), 1)); k == nil {
		return c.Last()
	}
	return c.Prev()
}

// putSegment stores evs (in stamp order, at most maxSegmentEvents) as one
// segment of recordID and indexes it by its oldest stamp.
func (t boltTx) putSegment(recordID string, evs []segEvent) error {
	ref := segmentRef{recordID: recordID, newest: evs[len(evs)-1].stamp, oldest: evs[0].stamp}
	value := appendSegment(make([]byte, 0, segmentSize(evs)), evs)
	if err := t.b(bucketEvents).Put(eventKey(recordID, ref.newest), value); err != nil {
		return fmt.Errorf("audit: writing events of %s: %w", recordID, err)
	}
	if err := t.b(bucketByTime).Put(ref.oldest, byTimeValue(ref)); err != nil {
		return fmt.Errorf("audit: indexing events of %s: %w", recordID, err)
	}
	return nil
}

// deleteSegment deletes a segment and its time index entry.
func (t boltTx) deleteSegment(ref segmentRef) error {
	if err := t.b(bucketEvents).Delete(eventKey(ref.recordID, ref.newest)); err != nil {
		return fmt.Errorf("audit: deleting events of %s: %w", ref.recordID, err)
	}
	if err := t.b(bucketByTime).Delete(ref.oldest); err != nil {
		return fmt.Errorf("audit: unindexing events of %s: %w", ref.recordID, err)
	}
	return nil
}

// trimSegment deletes the oldest n events of the segment ref holding evs
// (fewer than all): the rest stay under the same key, indexed by their
// oldest stamp.
func (t boltTx) trimSegment(ref segmentRef, evs []segEvent, n int) error {
	kept := evs[n:]
	value := appendSegment(make([]byte, 0, segmentSize(kept)), kept)
	if err := t.b(bucketByTime).Delete(ref.oldest); err != nil {
		return fmt.Errorf("audit: unindexing events of %s: %w", ref.recordID, err)
	}
	newRef := segmentRef{recordID: ref.recordID, newest: ref.newest, oldest: bytes.Clone(kept[0].stamp)}
	if err := t.b(bucketEvents).Put(eventKey(ref.recordID, ref.newest), value); err != nil {
		return fmt.Errorf("audit: writing events of %s: %w", ref.recordID, err)
	}
	if err := t.b(bucketByTime).Put(newRef.oldest, byTimeValue(newRef)); err != nil {
		return fmt.Errorf("audit: indexing events of %s: %w", ref.recordID, err)
	}
	return nil
}

// segment reads the segment ref points at.
func (t boltTx) segment(ref segmentRef) ([]segEvent, error) {
	v := t.b(bucketEvents).Get(eventKey(ref.recordID, ref.newest))
	if v == nil {
		return nil, fmt.Errorf("audit: events of %s indexed at %x are missing: %w", ref.recordID, ref.oldest, errBadSegment)
	}
	evs, err := readSegment(nil, ref.newest, v)
	if err != nil {
		return nil, fmt.Errorf("audit: reading events of %s: %w", ref.recordID, err)
	}
	return evs, nil
}

// keepNewest deletes the oldest events of recordID beyond max.
func (t boltTx) keepNewest(recordID string, max uint64) error {
	n := t.count(recordID)
	if n <= max {
		return nil
	}
	excess := n - max
	prefix := recordPrefix(recordID)
	// Segments are collected before deleting: deleting under a cursor can
	// skip entries.
	var refs []segmentRef
	var counts []uint64
	var seen uint64
	var evs []segEvent
	c := t.b(bucketEvents).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && seen < excess; k, v = c.Next() {
		var err error
		if evs, err = readSegment(evs[:0], k[len(prefix):], v); err != nil {
			return fmt.Errorf("audit: reading events of %s: %w", recordID, err)
		}
		refs = append(refs, segmentRef{recordID: recordID, newest: bytes.Clone(k[len(prefix):]), oldest: bytes.Clone(evs[0].stamp)})
		counts = append(counts, uint64(len(evs)))
		seen += uint64(len(evs))
	}
	var removed uint64
	for i, ref := range refs {
		if removed+counts[i] <= excess {
			if err := t.deleteSegment(ref); err != nil {
				return err
			}
			removed += counts[i]
			continue
		}
		evs, err := t.segment(ref)
		if err != nil {
			return err
		}
		if err := t.trimSegment(ref, evs, int(excess-removed)); err != nil {
			return err
		}
		removed = excess
	}
	return t.setCount(recordID, n-removed)
}

// deleteExpired deletes up to maxExpiredPerTx events older than cutoff.
func (t boltTx) deleteExpired(cutoff time.Time) error {
	limit := stamp(cutoff, 0)
	// Every segment indexed before limit holds an expired event: at most
	// maxExpiredPerTx of them are needed.
	var refs []segmentRef
	c := t.b(bucketByTime).Cursor()
	for k, v := c.First(); k != nil && bytes.Compare(k, limit) < 0 && len(refs) < maxExpiredPerTx; k, v = c.Next() {
		ref, err := parseByTime(k, v)
		if err != nil {
			return err
		}
		refs = append(refs, ref)
	}
	removed := make(map[string]uint64)
	budget := maxExpiredPerTx
	for _, ref := range refs {
		if budget == 0 {
			break
		}
		evs, err := t.segment(ref)
		if err != nil {
			return err
		}
		expired, _ := slices.BinarySearchFunc(evs, limit, func(e segEvent, l []byte) int { return bytes.Compare(e.stamp, l) })
		expired = min(expired, budget)
		if expired == len(evs) {
			err = t.deleteSegment(ref)
		} else {
			err = t.trimSegment(ref, evs, expired)
		}
		if err != nil {
			return err
		}
		removed[ref.recordID] += uint64(expired)
		budget -= expired
	}
	for id, n := range removed {
		have := t.count(id)
		if n > have {
			n = have
		}
		if err := t.setCount(id, have-n); err != nil {
			return err
		}
	}
	return nil
}

// hasExpired reports whether any event is older than cutoff.
func (t boltTx) hasExpired(cutoff time.Time) bool {
	k, _ := t.b(bucketByTime).Cursor().First()
	return k != nil && bytes.Compare(k, stamp(cutoff, 0)) < 0
}

// deleteRecord deletes every event of recordID.
func (t boltTx) deleteRecord(recordID string) error {
	prefix := recordPrefix(recordID)
	var refs []segmentRef
	var evs []segEvent
	c := t.b(bucketEvents).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		var err error
		if evs, err = readSegment(evs[:0], k[len(prefix):], v); err != nil {
			return fmt.Errorf("audit: reading events of %s: %w", recordID, err)
		}
		refs = append(refs, segmentRef{recordID: recordID, newest: bytes.Clone(k[len(prefix):]), oldest: bytes.Clone(evs[0].stamp)})
	}
	for _, ref := range refs {
		if err := t.deleteSegment(ref); err != nil {
			return err
		}
	}
	return t.setCount(recordID, 0)
}

// Stored is an event read back, with the id its store gave it (stable,
// sortable by time, unique across records).
type Stored struct {
	Event
	ID string
}

// newest returns up to limit events of recordID at or after from, newest
// first: a reverse walk over the record's segments, which hold its events
// in time order.
func (t boltTx) newest(recordID string, from time.Time, limit int) ([]Stored, error) {
	prefix := recordPrefix(recordID)
	lowest := stamp(from, 0)
	c := t.b(bucketEvents).Cursor()
	var out []Stored
	var evs []segEvent
	for k, v := t.lastOf(c, recordID); k != nil && bytes.HasPrefix(k, prefix) && len(out) < limit; k, v = c.Prev() {
		var err error
		if evs, err = readSegment(evs[:0], k[len(prefix):], v); err != nil {
			return nil, fmt.Errorf("audit: reading events of %s: %w", recordID, err)
		}
		for i := len(evs) - 1; i >= 0 && len(out) < limit; i-- {
			if bytes.Compare(evs[i].stamp, lowest) < 0 {
				return out, nil
			}
			var s storedEvent
			if err := json.Unmarshal(evs[i].data, &s); err != nil {
				return nil, fmt.Errorf("audit: decoding event of %s: %w", recordID, err)
			}
			out = append(out, Stored{Event: s.event(recordID), ID: hex.EncodeToString(evs[i].stamp)})
		}
	}
	return out, nil
}
