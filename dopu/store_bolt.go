package dopu

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"go.etcd.io/bbolt"

	"github.com/pfrgateway/caddy-pfr/internal/kv"
)

// Buckets, all prefixed "dopu/" since the bbolt file is shared.
var (
	bucketDropOffs  = []byte("dopu/dropoffs")   // id → DropOff JSON
	bucketBodies    = []byte("dopu/bodies")     // id → Bundle bytes or fileRef, pending only
	bucketDigests   = []byte("dopu/digests")    // digest → id
	bucketByRecord  = []byte("dopu/by-record")  // record id, 0, received (8 bytes), id → empty
	bucketExpiry    = []byte("dopu/expiry")     // expires (8 bytes), id → empty, pending only
	bucketUsage     = []byte("dopu/usage")      // record id → usage JSON, pending only
	bucketOutbox    = []byte("dopu/outbox")     // drop-off id → Alert JSON
	bucketAlertsDue = []byte("dopu/alerts-due") // next attempt (8 bytes), id → empty
	bucketFinished  = []byte("dopu/finished")   // changed (8 bytes), id → empty, not pending only
)

// BoltBuckets lists every bucket the store uses (on bbolt or PostgreSQL).
var BoltBuckets = [][]byte{
	bucketDropOffs, bucketBodies, bucketDigests, bucketByRecord,
	bucketExpiry, bucketUsage, bucketOutbox, bucketAlertsDue, bucketFinished,
}

// KVStore is the Store on an internal/kv database: a bbolt file shared
// with other packages (NewBoltStore, one node) or PostgreSQL (NewStore
// with an internal/pgstate.DB, several nodes); both run this code. It
// never closes the database.
type KVStore struct {
	db kv.DB
	// files keeps large bodies beside a bbolt database; nil on
	// PostgreSQL (every node must read every body).
	files *bodyFiles
}

var _ Store = (*KVStore)(nil)

// NewBoltStore returns a Store on db, creating its buckets if needed.
// Bodies of FileBodyMin bytes or more are kept as files in the directory
// named after db's file with ".dropoffs" appended; what a crash left
// there unreferenced is removed now.
func NewBoltStore(db *bbolt.DB) (*KVStore, error) {
	if db == nil {
		return nil, errors.New("dopu: nil database")
	}
	s, err := NewStore(kv.Bolt(db))
	if err != nil {
		return nil, err
	}
	if s.files, err = openBodyFiles(db.Path()); err != nil {
		return nil, err
	}
	err = s.db.View(context.Background(), "dopu", func(tx kv.Tx) error {
		return s.files.sweep(func(id string) bool {
			_, ok := parseFileRef(tx.Bucket(bucketBodies).Get([]byte(id)))
			return ok
		})
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// NewStore returns a Store on db, creating its buckets if needed.
func NewStore(db kv.DB) (*KVStore, error) {
	if db == nil {
		return nil, errors.New("dopu: nil database")
	}
	if err := db.CreateBuckets(BoltBuckets); err != nil {
		return nil, fmt.Errorf("dopu: opening store: %w", err)
	}
	return &KVStore{db: db}, nil
}

// Update implements Store. bbolt syncs on commit unless the database was
// opened with NoSync; PostgreSQL commits durably unless configured not to.
// Body files whose references the transaction deleted are removed once it
// has committed.
func (s *KVStore) Update(ctx context.Context, fn func(Tx) error) error {
	var gone []string
	err := s.db.Update(ctx, "dopu", func(ktx kv.Tx) error {
		t := &boltTx{tx: ktx, files: s.files}
		defer func() { t.closed = true }()
		gone = nil // a retried transaction starts afresh
		err := fn(t)
		gone = t.gone
		return err
	})
	if err == nil && len(gone) > 0 {
		s.files.remove(gone)
	}
	return err
}

// View implements Store.
func (s *KVStore) View(ctx context.Context, fn func(Tx) error) error {
	return s.db.View(ctx, "dopu", func(ktx kv.Tx) error {
		t := &boltTx{tx: ktx, files: s.files}
		defer func() { t.closed = true }()
		return fn(t)
	})
}

// stageBody implements bodyStager: bodies of FileBodyMin bytes or more
// go to files on bbolt.
func (s *KVStore) stageBody(id string, body []byte) (func(kept bool), error) {
	if s.files == nil || len(body) < FileBodyMin {
		return nil, nil
	}
	return s.files.stage(id, body)
}

// boltTx implements Tx on a kv transaction.
type boltTx struct {
	tx     kv.Tx
	files  *bodyFiles
	gone   []string // drop-offs whose body files go once this commits
	closed bool
}

var errTxClosed = errors.New("dopu: transaction used after it ended")

type usage struct {
	Count int   `json:"count"`
	Size  int64 `json:"size"`
}

func (t *boltTx) b(name []byte) kv.Bucket { return t.tx.Bucket(name) }

func timeKey(ts time.Time, id string) []byte {
	k := make([]byte, 8, 8+len(id))
	binary.BigEndian.PutUint64(k, uint64(ts.UnixNano()))
	return append(k, id...)
}

func recordKey(recordID string, received time.Time, id string) []byte {
	k := append([]byte(recordID), 0)
	return append(k, timeKey(received, id)...)
}

func (t *boltTx) putJSON(bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("dopu: encoding %s/%s: %w", bucket, key, err)
	}
	if err := t.b(bucket).Put(key, data); err != nil {
		return fmt.Errorf("dopu: writing %s/%s: %w", bucket, key, err)
	}
	return nil
}

func (t *boltTx) getJSON(bucket, key []byte, v any) (bool, error) {
	data := t.b(bucket).Get(key)
	if data == nil {
		return false, nil
	}
	if err := json.Unmarshal(data, v); err != nil {
		return true, fmt.Errorf("dopu: decoding %s/%s: %w", bucket, key, err)
	}
	return true, nil
}

func (t *boltTx) put(bucket, key, value []byte) error {
	if err := t.b(bucket).Put(key, value); err != nil {
		return fmt.Errorf("dopu: writing %s: %w", bucket, err)
	}
	return nil
}

func (t *boltTx) del(bucket, key []byte) error {
	if err := t.b(bucket).Delete(key); err != nil {
		return fmt.Errorf("dopu: deleting from %s: %w", bucket, err)
	}
	return nil
}

func (t *boltTx) addUsage(recordID string, count int, size int64) error {
	var u usage
	if _, err := t.getJSON(bucketUsage, []byte(recordID), &u); err != nil {
		return err
	}
	u.Count += count
	u.Size += size
	if u.Count <= 0 {
		return t.del(bucketUsage, []byte(recordID))
	}
	return t.putJSON(bucketUsage, []byte(recordID), u)
}

// Create implements Tx.
func (t *boltTx) Create(d *DropOff, body []byte) error {
	if t.closed {
		return errTxClosed
	}
	if d.ID == "" || d.RecordID == "" || d.Digest == "" || bytes.IndexByte([]byte(d.RecordID), 0) >= 0 {
		return fmt.Errorf("dopu: creating drop-off: incomplete or invalid drop-off")
	}
	if t.b(bucketDropOffs).Get([]byte(d.ID)) != nil {
		return fmt.Errorf("dopu: creating drop-off %s: id in use", d.ID)
	}
	if t.b(bucketDigests).Get([]byte(d.Digest)) != nil {
		return fmt.Errorf("dopu: creating drop-off %s: digest in use", d.ID)
	}
	if d.Status != StatusPending {
		return fmt.Errorf("dopu: creating drop-off %s: status %q, want pending", d.ID, d.Status)
	}
	id := []byte(d.ID)
	if err := t.putJSON(bucketDropOffs, id, d); err != nil {
		return err
	}
	value := body
	if t.files != nil && len(body) >= FileBodyMin && t.files.staged(d.ID, len(body)) {
		value = fileRef(len(body)) // the body is in its file already
	}
	if err := t.put(bucketBodies, id, value); err != nil {
		return err
	}
	if err := t.put(bucketDigests, []byte(d.Digest), id); err != nil {
		return err
	}
	if err := t.put(bucketByRecord, recordKey(d.RecordID, d.Received, d.ID), nil); err != nil {
		return err
	}
	if err := t.put(bucketExpiry, timeKey(d.Expires, d.ID), nil); err != nil {
		return err
	}
	return t.addUsage(d.RecordID, 1, d.Size)
}

// Get implements Tx.
func (t *boltTx) Get(id string) (*DropOff, error) {
	if t.closed {
		return nil, errTxClosed
	}
	var d DropOff
	found, err := t.getJSON(bucketDropOffs, []byte(id), &d)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, ErrNotFound
	}
	return &d, nil
}

// ByDigest implements Tx.
func (t *boltTx) ByDigest(digest string) (*DropOff, error) {
	if t.closed {
		return nil, errTxClosed
	}
	id := t.b(bucketDigests).Get([]byte(digest))
	if id == nil {
		return nil, ErrNotFound
	}
	return t.Get(string(id))
}

// Body implements Tx.
func (t *boltTx) Body(id string) ([]byte, error) {
	if t.closed {
		return nil, errTxClosed
	}
	body := t.b(bucketBodies).Get([]byte(id))
	if body == nil {
		return nil, ErrNoBody
	}
	if size, ok := parseFileRef(body); ok {
		if t.files == nil {
			return nil, fmt.Errorf("dopu: the body of drop-off %s is in a file, but the store has none", id)
		}
		body, err := t.files.read(id, size)
		if errors.Is(err, os.ErrNotExist) {
			// Removed after a transaction newer than this one's snapshot
			// took the drop-off out of pending.
			return nil, ErrNoBody
		}
		return body, err
	}
	// bbolt's memory is valid only during the transaction.
	return bytes.Clone(body), nil
}

// delBody deletes the body of drop-off id; its file goes after the commit.
func (t *boltTx) delBody(id []byte) error {
	if _, ok := parseFileRef(t.b(bucketBodies).Get(id)); ok {
		t.gone = append(t.gone, string(id))
	}
	return t.del(bucketBodies, id)
}

// Put implements Tx.
func (t *boltTx) Put(d *DropOff) error {
	if t.closed {
		return errTxClosed
	}
	old, err := t.Get(d.ID)
	if err != nil {
		return fmt.Errorf("dopu: updating drop-off %s: %w", d.ID, err)
	}
	// Only the mutable fields change; the rest stays as created.
	next := *old
	next.Status, next.Reason, next.SenderReason, next.Changed = d.Status, d.Reason, d.SenderReason, d.Changed
	next.Expires, next.Lease, next.LeaseExpires = d.Expires, d.Lease, d.LeaseExpires
	if old.Status != StatusPending {
		return fmt.Errorf("dopu: updating drop-off %s, %s: %w", d.ID, old.Status, ErrNotPending)
	}
	id := []byte(d.ID)
	if old.Status == StatusPending && !old.Expires.Equal(next.Expires) {
		if err := t.del(bucketExpiry, timeKey(old.Expires, old.ID)); err != nil {
			return err
		}
		if next.Status == StatusPending {
			if err := t.put(bucketExpiry, timeKey(next.Expires, next.ID), nil); err != nil {
				return err
			}
		}
	}
	if old.Status == StatusPending && next.Status != StatusPending {
		if err := t.del(bucketExpiry, timeKey(old.Expires, old.ID)); err != nil {
			return err
		}
		if err := t.delBody(id); err != nil {
			return err
		}
		if err := t.addUsage(old.RecordID, -1, -old.Size); err != nil {
			return err
		}
		if err := t.put(bucketFinished, timeKey(next.Changed, next.ID), nil); err != nil {
			return err
		}
		if next.Status == StatusExpired {
			if err := t.del(bucketDigests, []byte(old.Digest)); err != nil {
				return err
			}
		}
	}
	*d = next
	return t.putJSON(bucketDropOffs, id, &next)
}

// List implements Tx.
func (t *boltTx) List(recordID string) ([]DropOff, error) {
	if t.closed {
		return nil, errTxClosed
	}
	prefix := append([]byte(recordID), 0)
	var ids []string
	c := t.b(bucketByRecord).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		ids = append(ids, string(k[len(prefix)+8:]))
	}
	out := make([]DropOff, 0, len(ids))
	for i := len(ids) - 1; i >= 0; i-- {
		d, err := t.Get(ids[i])
		if err != nil {
			return nil, fmt.Errorf("dopu: listing %s: %w", recordID, err)
		}
		out = append(out, *d)
	}
	return out, nil
}

// Usage implements Tx.
func (t *boltTx) Usage(recordID string) (int, int64, error) {
	if t.closed {
		return 0, 0, errTxClosed
	}
	var u usage
	if _, err := t.getJSON(bucketUsage, []byte(recordID), &u); err != nil {
		return 0, 0, err
	}
	return u.Count, u.Size, nil
}

// Expiring implements Tx.
func (t *boltTx) Expiring(at time.Time, limit int) ([]DropOff, error) {
	if t.closed {
		return nil, errTxClosed
	}
	end := uint64(at.UnixNano())
	var out []DropOff
	c := t.b(bucketExpiry).Cursor()
	for k, _ := c.First(); k != nil && len(out) < limit; k, _ = c.Next() {
		if binary.BigEndian.Uint64(k[:8]) > end {
			break
		}
		d, err := t.Get(string(k[8:]))
		if err != nil {
			return nil, fmt.Errorf("dopu: expiry index: %w", err)
		}
		out = append(out, *d)
	}
	return out, nil
}

// Finished implements Tx.
func (t *boltTx) Finished(at time.Time, limit int) ([]DropOff, error) {
	if t.closed {
		return nil, errTxClosed
	}
	end := uint64(at.UnixNano())
	var out []DropOff
	c := t.b(bucketFinished).Cursor()
	for k, _ := c.First(); k != nil && len(out) < limit; k, _ = c.Next() {
		if binary.BigEndian.Uint64(k[:8]) > end {
			break
		}
		d, err := t.Get(string(k[8:]))
		if err != nil {
			return nil, fmt.Errorf("dopu: finished index: %w", err)
		}
		out = append(out, *d)
	}
	return out, nil
}

// Delete implements Tx.
func (t *boltTx) Delete(id string) error {
	if t.closed {
		return errTxClosed
	}
	d, err := t.Get(id)
	if err != nil {
		return fmt.Errorf("dopu: deleting drop-off %s: %w", id, err)
	}
	if d.Status == StatusPending {
		return fmt.Errorf("dopu: deleting drop-off %s: %w", id, ErrNotPending)
	}
	if string(t.b(bucketDigests).Get([]byte(d.Digest))) == id {
		if err := t.del(bucketDigests, []byte(d.Digest)); err != nil {
			return err
		}
	}
	if err := t.DeleteAlert(id); err != nil {
		return err
	}
	for _, k := range []struct {
		bucket, key []byte
	}{
		{bucketFinished, timeKey(d.Changed, id)},
		{bucketByRecord, recordKey(d.RecordID, d.Received, id)},
		{bucketDropOffs, []byte(id)},
	} {
		if err := t.del(k.bucket, k.key); err != nil {
			return err
		}
	}
	return t.delBody([]byte(id))
}

// PutAlert implements Tx.
func (t *boltTx) PutAlert(a *Alert) error {
	if t.closed {
		return errTxClosed
	}
	if err := t.DeleteAlert(a.DropOffID); err != nil {
		return err
	}
	if err := t.putJSON(bucketOutbox, []byte(a.DropOffID), a); err != nil {
		return err
	}
	if a.Dead {
		return nil // kept for the owner to see, never due
	}
	return t.put(bucketAlertsDue, timeKey(a.NextAttempt, a.DropOffID), nil)
}

// Alert implements Tx.
func (t *boltTx) Alert(dropOffID string) (*Alert, error) {
	if t.closed {
		return nil, errTxClosed
	}
	var a Alert
	found, err := t.getJSON(bucketOutbox, []byte(dropOffID), &a)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, ErrNotFound
	}
	return &a, nil
}

// DueAlerts implements Tx.
func (t *boltTx) DueAlerts(at time.Time, limit int) ([]Alert, error) {
	if t.closed {
		return nil, errTxClosed
	}
	end := uint64(at.UnixNano())
	var out []Alert
	c := t.b(bucketAlertsDue).Cursor()
	for k, _ := c.First(); k != nil && len(out) < limit; k, _ = c.Next() {
		if binary.BigEndian.Uint64(k[:8]) > end {
			break
		}
		a, err := t.Alert(string(k[8:]))
		if err != nil {
			return nil, fmt.Errorf("dopu: alert index: %w", err)
		}
		out = append(out, *a)
	}
	return out, nil
}

// DeleteAlert implements Tx.
func (t *boltTx) DeleteAlert(dropOffID string) error {
	if t.closed {
		return errTxClosed
	}
	old, err := t.Alert(dropOffID)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if !old.Dead {
		if err := t.del(bucketAlertsDue, timeKey(old.NextAttempt, dropOffID)); err != nil {
			return err
		}
	}
	return t.del(bucketOutbox, []byte(dropOffID))
}
