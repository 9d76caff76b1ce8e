package store

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"time"
)

// record is one stored version of a resource: its content, or a tombstone
// when the version is a deletion.
type record struct {
	Type        string
	ID          string
	Version     uint64
	LastUpdated time.Time
	Deleted     bool
	// Body is the resource JSON with id and meta.versionId/lastUpdated set;
	// nil for a tombstone.
	Body []byte
}

const (
	recordKindResource = 'R'
	recordKindDeleted  = 'D'
	recordHeaderLen    = 1 + 8 + 8
)

// encode lays a record out as kind byte, version, lastUpdated (Unix ms), body.
func (r *record) encode() []byte {
	out := make([]byte, recordHeaderLen, recordHeaderLen+len(r.Body))
	out[0] = recordKindResource
	if r.Deleted {
		out[0] = recordKindDeleted
	}
	binary.BigEndian.PutUint64(out[1:9], r.Version)
	binary.BigEndian.PutUint64(out[9:17], uint64(r.LastUpdated.UnixMilli()))
	return append(out, r.Body...)
}

// recordLastUpdated reads lastUpdated (Unix ms) from an encoded record.
func recordLastUpdated(rec []byte) int64 { return int64(binary.BigEndian.Uint64(rec[9:17])) }

// decodeRecord parses what encode wrote. The body is copied: bbolt memory is
// only valid inside its transaction.
func decodeRecord(typ, id string, raw []byte) (*record, error) {
	if len(raw) < recordHeaderLen || (raw[0] != recordKindResource && raw[0] != recordKindDeleted) {
		return nil, fmt.Errorf("corrupt record for %s/%s (%d bytes)", typ, id, len(raw))
	}
	r := &record{
		Type:        typ,
		ID:          id,
		Deleted:     raw[0] == recordKindDeleted,
		Version:     binary.BigEndian.Uint64(raw[1:9]),
		LastUpdated: time.UnixMilli(int64(binary.BigEndian.Uint64(raw[9:17]))).UTC(),
	}
	if !r.Deleted {
		r.Body = append([]byte(nil), raw[recordHeaderLen:]...)
	}
	return r, nil
}

// etag is the weak ETag of the record's version.
func (r *record) etag() string { return `W/"` + strconv.FormatUint(r.Version, 10) + `"` }

// versionID is meta.versionId.
func (r *record) versionID() string { return strconv.FormatUint(r.Version, 10) }

// instant formats t as a FHIR instant with milliseconds.
func instant(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z07:00") }

// versionKey is the key of one version in the versions bucket.
func versionKey(typ, id string, version uint64) []byte {
	k := make([]byte, 0, len(typ)+len(id)+10)
	k = append(k, typ...)
	k = append(k, 0)
	k = append(k, id...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, version)
}

// versionPrefix is the key prefix of every version of one resource.
func versionPrefix(typ, id string) []byte {
	k := make([]byte, 0, len(typ)+len(id)+2)
	k = append(k, typ...)
	k = append(k, 0)
	k = append(k, id...)
	return append(k, 0)
}

// splitVersionKey reverses versionKey.
func splitVersionKey(k []byte) (typ, id string, version uint64, err error) {
	if len(k) < 10 {
		return "", "", 0, fmt.Errorf("corrupt version key %q", k)
	}
	rest := k[:len(k)-8]
	version = binary.BigEndian.Uint64(k[len(k)-8:])
	for i, b := range rest {
		if b == 0 {
			if len(rest) < i+2 || rest[len(rest)-1] != 0 {
				break
			}
			return string(rest[:i]), string(rest[i+1 : len(rest)-1]), version, nil
		}
	}
	return "", "", 0, fmt.Errorf("corrupt version key %q", k)
}

// seqKey encodes a global sequence number.
func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }
