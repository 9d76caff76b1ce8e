package audit

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// A record's events are stored in segments: one value holding up to
// maxSegmentEvents events in stamp order, under the key of the record and
// the segment's newest stamp (eventKey). A record's segments never
// overlap: every event of a segment is newer than every event of the
// segments before it, so a walk over the record's keys meets its events in
// time order. The time index maps each segment's oldest stamp to where the
// segment is (byTimeValue). One batch of the writer is one segment per
// record (a busy record's batch, several): a handful of key writes a
// second instead of two per event, and as many deletes when a record at
// its limit or events past retention are pruned (BenchmarkWriteAtLimit).
//
// A segment's value is segmentMark and then, per event, its stamp, the
// uvarint length of its JSON and the JSON (storedEvent). A value that is
// one JSON object is an event stored alone under its own stamp, as the log
// stored every event before segments: such values are read as segments of
// one event, so a log written before needs no conversion.

// segmentMark starts a segment's value; a lone event's starts with '{'.
const segmentMark = 0x01

// maxSegmentEvents bounds a segment, and so what trimming its oldest
// events rewrites (about 15 kB), against the keys a busy record's batch
// writes (one per segment).
const maxSegmentEvents = 64

// errBadSegment is wrapped by the error for a value that is neither.
var errBadSegment = errors.New("malformed audit segment")

// segEvent is one event of a segment: its stamp and its stored JSON, both
// valid as long as the value they were read from.
type segEvent struct {
	stamp []byte
	data  []byte
}

// appendSegment appends the value of a segment holding events (in stamp
// order) to buf.
func appendSegment(buf []byte, events []segEvent) []byte {
	buf = append(buf, segmentMark)
	for _, e := range events {
		buf = append(buf, e.stamp...)
		buf = binary.AppendUvarint(buf, uint64(len(e.data)))
		buf = append(buf, e.data...)
	}
	return buf
}

// segmentSize is the length of appendSegment's value for events.
func segmentSize(events []segEvent) int {
	n := 1
	for _, e := range events {
		n += stampLen + binary.MaxVarintLen64 + len(e.data)
	}
	return n
}

// readSegment appends the events of the value v stored under a key with
// stamp keyStamp to dst.
func readSegment(dst []segEvent, keyStamp, v []byte) ([]segEvent, error) {
	if len(v) > 0 && v[0] == '{' {
		return append(dst, segEvent{stamp: keyStamp, data: v}), nil
	}
	if len(v) < 1 || v[0] != segmentMark {
		return dst, errBadSegment
	}
	for rest := v[1:]; len(rest) > 0; {
		if len(rest) < stampLen {
			return dst, errBadSegment
		}
		st := rest[:stampLen:stampLen]
		n, w := binary.Uvarint(rest[stampLen:])
		if w <= 0 || n > uint64(len(rest)-stampLen-w) {
			return dst, errBadSegment
		}
		start := stampLen + w
		dst = append(dst, segEvent{stamp: st, data: rest[start : start+int(n) : start+int(n)]})
		rest = rest[start+int(n):]
	}
	return dst, nil
}

// segmentRef is where a segment is: its record, its key's (newest) stamp
// and its oldest stamp (its time index key).
type segmentRef struct {
	recordID string
	newest   []byte
	oldest   []byte
}

// byTimeValue is the time index's value for ref: the record id, a NUL and
// the segment's newest stamp. An event stored alone before segments is
// indexed by its record id only (its oldest and newest stamp are one).
func byTimeValue(ref segmentRef) []byte {
	v := make([]byte, 0, len(ref.recordID)+1+stampLen)
	v = append(v, ref.recordID...)
	v = append(v, 0)
	return append(v, ref.newest...)
}

// parseByTime returns the segment a time index entry (oldest stamp k,
// value v) points at, with copies of its stamps.
func parseByTime(k, v []byte) (segmentRef, error) {
	ref := segmentRef{oldest: bytes.Clone(k)}
	if i := bytes.IndexByte(v, 0); i >= 0 {
		if len(v)-i-1 != stampLen {
			return ref, fmt.Errorf("audit: time index entry %x: %w", k, errBadSegment)
		}
		ref.recordID, ref.newest = string(v[:i]), bytes.Clone(v[i+1:])
		return ref, nil
	}
	ref.recordID, ref.newest = string(v), ref.oldest
	return ref, nil
}
