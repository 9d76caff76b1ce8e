package store

import (
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
	// Type and Query are the search to re-plan for _include and _elements
	// on every page; Type is "" for $everything.
	Type  string `json:"type"`
	Query string `json:"query"`
	// Refs is the ordered result, "Type/id" each.
	Refs    []string  `json:"refs"`
	Expires time.Time `json:"expires"`
}

// saveSnapshot stores snap under a fresh random id and drops expired
// snapshots on the way.
func (db *DB) saveSnapshot(snap *searchSnapshot) (string, error) {
	now := db.clock()
	snap.Expires = now.Add(snapshotTTL)
	raw, err := json.Marshal(snap)
	if err != nil {
		return "", fmt.Errorf("encode search snapshot: %w", err)
	}
	id := newID()
	err = db.bolt.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSearches)
		var expired [][]byte
		err := b.ForEach(func(k, v []byte) error {
			var s struct {
				Expires time.Time `json:"expires"`
			}
			if json.Unmarshal(v, &s) != nil || now.After(s.Expires) {
				expired = append(expired, append([]byte(nil), k...))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range expired {
			if err := b.Delete(k); err != nil {
				return fmt.Errorf("drop expired search: %w", err)
			}
		}
		return b.Put([]byte(id), raw)
	})
	if err != nil {
		return "", fmt.Errorf("save search snapshot: %w", err)
	}
	return id, nil
}

// loadSnapshot returns the snapshot id of partition part, or HAPI's 410 for
// an unknown or expired search. A snapshot of another partition is unknown.
func (db *DB) loadSnapshot(id, part string) (*searchSnapshot, error) {
	var snap *searchSnapshot
	err := db.bolt.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bucketSearches).Get([]byte(id))
		if raw == nil {
			return nil
		}
		snap = &searchSnapshot{}
		return json.Unmarshal(raw, snap)
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
	b := tx.Bucket(bucketSearches)
	var doomed [][]byte
	err := b.ForEach(func(k, v []byte) error {
		var s searchSnapshot
		if json.Unmarshal(v, &s) != nil || s.Partition == part {
			doomed = append(doomed, append([]byte(nil), k...))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range doomed {
		if err := b.Delete(k); err != nil {
			return fmt.Errorf("drop search snapshot: %w", err)
		}
	}
	return nil
}

// snapshotLink is the URL of one page of a snapshot, in HAPI's form.
func (q *request) snapshotLink(searchID string, offset, count int) string {
	v := url.Values{}
	v.Set("_getpages", searchID)
	v.Set("_getpagesoffset", strconv.Itoa(offset))
	v.Set("_count", strconv.Itoa(count))
	v.Set("_bundletype", "searchset")
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
	snap, err := q.h.db.loadSnapshot(searchID, q.part)
	if err != nil {
		return err
	}
	query, err := url.ParseQuery(snap.Query)
	if err != nil {
		return fmt.Errorf("search snapshot query: %w", err)
	}
	var plan *searchPlan
	if snap.Type != "" {
		if plan, err = q.h.engine.plan(snap.Type, query, false); err != nil {
			return err
		}
	}
	total := len(snap.Refs)
	b := q.newBundle("searchset")
	b.Total = &total
	b.Link = []outLink{{Relation: "self", URL: q.snapshotLink(searchID, offset, count)}}
	if offset+count < total {
		b.Link = append(b.Link, outLink{Relation: "next", URL: q.snapshotLink(searchID, offset+count, count)})
	}
	if offset > 0 {
		b.Link = append(b.Link, outLink{Relation: "previous", URL: q.snapshotLink(searchID, max(offset-count, 0), count)})
	}
	var page []string
	if offset < total {
		page = snap.Refs[offset:min(offset+count, total)]
	}
	if err := q.fillPage(b, page, plan); err != nil {
		return err
	}
	q.writeBundle(http.StatusOK, b)
	return nil
}
