package store

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
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
	Refs    []string  `json:"refs"`
	Expires time.Time `json:"expires"`
}

// sweepInterval bounds how often saving a snapshot also drops expired ones.
const sweepInterval = time.Minute

// A stored snapshot is its expiry (Unix ms, 8 bytes) followed by its JSON,
// so that sweeping reads 8 bytes per snapshot instead of decoding it.
const snapshotHeaderLen = 8

// saveSnapshot stores snap under a fresh random id, dropping expired
// snapshots at most once per sweepInterval.
func (db *DB) saveSnapshot(snap *searchSnapshot) (string, error) {
	now := db.clock()
	snap.Expires = now.Add(snapshotTTL)
	raw, err := json.Marshal(snap)
	if err != nil {
		return "", fmt.Errorf("encode search snapshot: %w", err)
	}
	value := binary.BigEndian.AppendUint64(make([]byte, 0, snapshotHeaderLen+len(raw)), uint64(snap.Expires.UnixMilli()))
	value = append(value, raw...)
	sweep := db.sweepDue(now)
	id := newID()
	err = db.bolt.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSearches)
		if sweep {
			if err := dropSnapshots(b, func(v []byte) bool { return snapshotExpired(v, now) }); err != nil {
				return err
			}
		}
		return b.Put([]byte(id), value)
	})
	if err != nil {
		return "", fmt.Errorf("save search snapshot: %w", err)
	}
	return id, nil
}

// sweepDue reports whether a sweep of expired snapshots is due, and if so
// records that one is happening now.
func (db *DB) sweepDue(now time.Time) bool {
	db.mu.Lock()
	defer db.mu.Unlock()
	if now.Sub(db.lastSweep) < sweepInterval {
		return false
	}
	db.lastSweep = now
	return true
}

// snapshotExpired reads the expiry header of a stored snapshot.
func snapshotExpired(v []byte, now time.Time) bool {
	if len(v) < snapshotHeaderLen {
		return true
	}
	return now.UnixMilli() > int64(binary.BigEndian.Uint64(v[:snapshotHeaderLen]))
}

// dropSnapshots deletes the snapshots for which doomed is true.
func dropSnapshots(b *bolt.Bucket, doomed func(v []byte) bool) error {
	var keys [][]byte
	err := b.ForEach(func(k, v []byte) error {
		if doomed(v) {
			keys = append(keys, append([]byte(nil), k...))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("scan search snapshots: %w", err)
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return fmt.Errorf("drop search snapshot: %w", err)
		}
	}
	return nil
}

// loadSnapshot returns the snapshot id of partition part, or HAPI's 410 for
// an unknown or expired search. A snapshot of another partition is unknown.
func (db *DB) loadSnapshot(id, part string) (*searchSnapshot, error) {
	var snap *searchSnapshot
	err := db.bolt.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bucketSearches).Get([]byte(id))
		if len(raw) < snapshotHeaderLen {
			return nil
		}
		snap = &searchSnapshot{}
		return json.Unmarshal(raw[snapshotHeaderLen:], snap)
	})
	if err != nil {
		return nil, fmt.Errorf("load search snapshot: %w", err)
	}
	if snap == nil || snap.Partition != part || db.clock().After(snap.Expires) {
		return nil, fhir.Errorf(http.StatusGone, fhir.CodeNotFound, "Search ID %q does not exist and may have expired", id)
	}
	return snap, nil
}

// dropSnapshotsOf deletes every snapshot of a partition.
func dropSnapshotsOf(tx *bolt.Tx, part string) error {
	return dropSnapshots(tx.Bucket(bucketSearches), func(v []byte) bool {
		var s searchSnapshot
		return len(v) < snapshotHeaderLen || json.Unmarshal(v[snapshotHeaderLen:], &s) != nil || s.Partition == part
	})
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
	total := len(snap.Refs)
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
		page = snap.Refs[offset:min(offset+count, total)]
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
