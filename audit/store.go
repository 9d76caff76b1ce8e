package audit

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/kv"
)

// Buckets, all prefixed "audit/" since the bbolt file is shared with the
// other packages.
var (
	bucketEvents = []byte("audit/events")  // record id, 0, time (8), seq (8) → storedEvent JSON
	bucketByTime = []byte("audit/by-time") // time (8), seq (8) → record id
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

// stamp returns the stamp of an event at t with sequence number seq. Times
// outside what a stamp holds count as its earliest or latest.
func stamp(t time.Time, seq uint64) []byte {
	k := make([]byte, stampLen)
	var ns uint64
	switch {
	case t.After(latestStamp):
		ns = math.MaxInt64
	case t.After(earliestStamp):
		ns = uint64(t.UnixNano())
	}
	binary.BigEndian.PutUint64(k, ns)
	binary.BigEndian.PutUint64(k[8:], seq)
	return k
}

// recordPrefix is the start of every event key of recordID.
func recordPrefix(recordID string) []byte {
	return append([]byte(recordID), 0)
}

// eventKey is the key of an event of recordID with stamp st.
func eventKey(recordID string, st []byte) []byte {
	return append(recordPrefix(recordID), st...)
}

// eventSizeHint is about the size of an event as stored, for sizing a
// batch's buffer.
const eventSizeHint = 256

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
	added := make(map[string]uint64)
	// Every event's JSON in one buffer: a value must stay unchanged until
	// the transaction ends, so each is a full slice of what was appended
	// (a buffer outgrown is left as it is, not reused). Sized for the
	// batch at once (an event is about 200 bytes), so that a batch of
	// thousands does not regrow it a dozen times.
	enc := make([]byte, 0, len(events)*eventSizeHint)
	for _, e := range events {
		seq, err := t.b(bucketEvents).NextSequence()
		if err != nil {
			return nil, fmt.Errorf("audit: numbering event: %w", err)
		}
		start := len(enc)
		enc, err = appendStored(enc, e)
		if err != nil {
			return nil, fmt.Errorf("audit: encoding event: %w", err)
		}
		data := enc[start:len(enc):len(enc)]
		st := stamp(e.Time, seq)
		if err := t.b(bucketEvents).Put(eventKey(e.RecordID, st), data); err != nil {
			return nil, fmt.Errorf("audit: writing event of %s: %w", e.RecordID, err)
		}
		if err := t.b(bucketByTime).Put(st, []byte(e.RecordID)); err != nil {
			return nil, fmt.Errorf("audit: indexing event of %s: %w", e.RecordID, err)
		}
		added[e.RecordID]++
	}
	for id, n := range added {
		if err := t.setCount(id, t.count(id)+n); err != nil {
			return nil, err
		}
	}
	return added, nil
}

// keepNewest deletes the oldest events of recordID beyond max.
func (t boltTx) keepNewest(recordID string, max uint64) error {
	n := t.count(recordID)
	if n <= max {
		return nil
	}
	excess := n - max
	prefix := recordPrefix(recordID)
	// Keys are collected before deleting: deleting under a bbolt cursor
	// can skip entries.
	var stamps [][]byte
	c := t.b(bucketEvents).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && uint64(len(stamps)) < excess; k, _ = c.Next() {
		stamps = append(stamps, bytes.Clone(k[len(prefix):]))
	}
	if err := t.deleteStamps(recordID, stamps); err != nil {
		return err
	}
	return t.setCount(recordID, n-uint64(len(stamps)))
}

// deleteExpired deletes up to maxExpiredPerTx events older than cutoff.
func (t boltTx) deleteExpired(cutoff time.Time) error {
	limit := stamp(cutoff, 0)
	type expired struct {
		recordID string
		stamp    []byte
	}
	var found []expired
	c := t.b(bucketByTime).Cursor()
	for k, v := c.First(); k != nil && bytes.Compare(k, limit) < 0; k, v = c.Next() {
		if len(found) == maxExpiredPerTx {
			break
		}
		found = append(found, expired{string(v), bytes.Clone(k)})
	}
	removed := make(map[string]uint64)
	for _, x := range found {
		if err := t.deleteStamps(x.recordID, [][]byte{x.stamp}); err != nil {
			return err
		}
		removed[x.recordID]++
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
	var stamps [][]byte
	c := t.b(bucketEvents).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		stamps = append(stamps, bytes.Clone(k[len(prefix):]))
	}
	if err := t.deleteStamps(recordID, stamps); err != nil {
		return err
	}
	return t.setCount(recordID, 0)
}

// deleteStamps deletes the events of recordID with the given stamps and
// their time index entries; it leaves the count to the caller.
func (t boltTx) deleteStamps(recordID string, stamps [][]byte) error {
	for _, st := range stamps {
		if err := t.b(bucketEvents).Delete(eventKey(recordID, st)); err != nil {
			return fmt.Errorf("audit: deleting event of %s: %w", recordID, err)
		}
		if err := t.b(bucketByTime).Delete(st); err != nil {
			return fmt.Errorf("audit: unindexing event of %s: %w", recordID, err)
		}
	}
	return nil
}

// Stored is an event read back, with the id its store gave it (stable,
// sortable by time, unique across records).
type Stored struct {
	Event
	ID string
}

// newest returns up to limit events of recordID at or after from, newest
// first: a reverse walk over the record's keys.
func (t boltTx) newest(recordID string, from time.Time, limit int) ([]Stored, error) {
	prefix := recordPrefix(recordID)
	// Every key of the record sorts before recordID+1, the first key of
	// no other record can start with prefix.
	end := append([]byte(recordID), 1)
	lowest := stamp(from, 0)
	c := t.b(bucketEvents).Cursor()
	var k, v []byte
	if k, _ = c.Seek(end); k == nil {
		k, v = c.Last()
	} else {
		k, v = c.Prev()
	}
	var out []Stored
	for ; k != nil && bytes.HasPrefix(k, prefix) && len(out) < limit; k, v = c.Prev() {
		st := k[len(prefix):]
		if bytes.Compare(st, lowest) < 0 {
			break
		}
		var s storedEvent
		if err := json.Unmarshal(v, &s); err != nil {
			return nil, fmt.Errorf("audit: decoding event of %s: %w", recordID, err)
		}
		out = append(out, Stored{Event: s.event(recordID), ID: hex.EncodeToString(st)})
	}
	return out, nil
}
