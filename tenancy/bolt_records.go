package tenancy

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// recordDoc is a Record as stored. It is separate from Record so that the
// on-disk form changes only on purpose.
type recordDoc struct {
	ID            string    `json:"id"`
	Slug          string    `json:"slug"`
	PartitionID   int64     `json:"partitionId"`
	PartitionName string    `json:"partitionName"`
	PatientID     string    `json:"patientId,omitempty"`
	Relationship  string    `json:"relationship"`
	Status        string    `json:"status"`
	Created       time.Time `json:"created"`
	Updated       time.Time `json:"updated"`
	WebhookURL    string    `json:"webhookUrl,omitempty"`
	WebhookSecret string    `json:"webhookSecret,omitempty"`
}

func docFromRecord(r *Record) recordDoc {
	return recordDoc{
		ID: r.ID, Slug: r.Slug, PartitionID: r.PartitionID, PartitionName: r.PartitionName,
		PatientID: r.PatientID, Relationship: string(r.Relationship), Status: string(r.Status),
		Created: r.Created, Updated: r.Updated, WebhookURL: r.WebhookURL, WebhookSecret: r.WebhookSecret,
	}
}

func (d *recordDoc) record() *Record {
	return &Record{
		ID: d.ID, Slug: d.Slug, PartitionID: d.PartitionID, PartitionName: d.PartitionName,
		PatientID: d.PatientID, Relationship: Relationship(d.Relationship), Status: Status(d.Status),
		Created: d.Created, Updated: d.Updated, WebhookURL: d.WebhookURL, WebhookSecret: d.WebhookSecret,
	}
}

// partitionKey encodes a partition id so keys sort numerically.
func partitionKey(id int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(id)) }

// CreateRecord implements Tx.
func (t *boltTx) CreateRecord(r *Record) error {
	if err := t.checkWrite(); err != nil {
		return err
	}
	// Work on a copy so that r is only filled in on success.
	c := *r
	if err := ValidateSlug(c.Slug); err != nil {
		return fmt.Errorf("tenancy: creating record: %w", err)
	}
	// Before allocating, so a caller that tries another slug in the same
	// transaction leaves no gap in the partition ids.
	if t.bucket(bucketSlugs).Get([]byte(c.Slug)) != nil {
		return fmt.Errorf("tenancy: creating record %q: %w", c.Slug, ErrSlugTaken)
	}
	if c.Status == "" {
		c.Status = StatusProvisioning
	}
	if err := t.assignRecordID(&c); err != nil {
		return fmt.Errorf("tenancy: creating record %q: %w", c.Slug, err)
	}
	if c.PartitionName == "" {
		c.PartitionName = PartitionNameFor(c.ID)
	}
	if err := t.assignPartitionID(&c); err != nil {
		return fmt.Errorf("tenancy: creating record %q: %w", c.Slug, err)
	}
	c.Created, c.Updated = t.now, t.now
	if err := c.validate(); err != nil {
		return fmt.Errorf("tenancy: creating record %q: %w", c.Slug, err)
	}
	if err := t.writeRecord(&c); err != nil {
		return fmt.Errorf("tenancy: creating record %q: %w", c.Slug, err)
	}
	if err := t.put(bucketSlugs, []byte(c.Slug), []byte(c.ID)); err != nil {
		return fmt.Errorf("tenancy: creating record %q: %w", c.Slug, err)
	}
	if err := t.put(bucketPartitions, partitionKey(c.PartitionID), []byte(c.ID)); err != nil {
		return fmt.Errorf("tenancy: creating record %q: %w", c.Slug, err)
	}
	*r = c
	return nil
}

// assignRecordID allocates an id, or checks a given one was never used.
func (t *boltTx) assignRecordID(r *Record) error {
	if r.ID != "" {
		if err := ValidateID(r.ID); err != nil {
			return err
		}
		if t.recordIDUsed(r.ID) {
			return fmt.Errorf("%w: record id %s was already used", ErrConflict, r.ID)
		}
		return nil
	}
	// 128 random bits do not collide in practice; checking costs nothing.
	for range 3 {
		if id := NewID(); !t.recordIDUsed(id) {
			r.ID = id
			return nil
		}
	}
	return fmt.Errorf("could not allocate an unused record id")
}

func (t *boltTx) recordIDUsed(id string) bool {
	return t.bucket(bucketRecords).Get([]byte(id)) != nil || t.bucket(bucketRetiredIDs).Get([]byte(id)) != nil
}

// assignPartitionID allocates the next partition id, or checks a given one
// was never used. Allocation skips ids that callers chose themselves.
func (t *boltTx) assignPartitionID(r *Record) error {
	partitions := t.bucket(bucketPartitions)
	if r.PartitionID != 0 {
		if r.PartitionID > 0 && partitions.Get(partitionKey(r.PartitionID)) != nil {
			return fmt.Errorf("%w: partition id %d was already used", ErrConflict, r.PartitionID)
		}
		return nil // validate refuses negative ids
	}
	meta := t.bucket(bucketMeta)
	for {
		seq, err := meta.NextSequence()
		if err != nil {
			return fmt.Errorf("allocating a partition id: %w", err)
		}
		if seq > math.MaxInt64 {
			return fmt.Errorf("allocating a partition id: exhausted")
		}
		if partitions.Get(partitionKey(int64(seq))) == nil {
			r.PartitionID = int64(seq)
			return nil
		}
	}
}

func (t *boltTx) writeRecord(r *Record) error {
	return t.putJSON(bucketRecords, []byte(r.ID), docFromRecord(r))
}

// loadRecord returns the stored record or an error wrapping ErrNotFound.
func (t *boltTx) loadRecord(id string) (*Record, error) {
	var d recordDoc
	found, err := t.getJSON(bucketRecords, []byte(id), &d)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("record %q: %w", id, ErrNotFound)
	}
	return d.record(), nil
}

// Record implements Tx.
func (t *boltTx) Record(id string) (*Record, error) {
	if err := t.checkRead(); err != nil {
		return nil, err
	}
	r, err := t.loadRecord(id)
	if err != nil {
		return nil, fmt.Errorf("tenancy: %w", err)
	}
	return r, nil
}

// RecordBySlug implements Tx.
func (t *boltTx) RecordBySlug(slug string) (*Record, error) {
	if err := t.checkRead(); err != nil {
		return nil, err
	}
	id := t.bucket(bucketSlugs).Get([]byte(slug))
	if id == nil {
		return nil, fmt.Errorf("tenancy: record with slug %q: %w", slug, ErrNotFound)
	}
	r, err := t.loadRecord(string(id))
	if err != nil {
		return nil, fmt.Errorf("tenancy: record with slug %q: %w", slug, err)
	}
	return r, nil
}

// PutRecord implements Tx.
func (t *boltTx) PutRecord(r *Record) error {
	if err := t.checkWrite(); err != nil {
		return err
	}
	old, err := t.loadRecord(r.ID)
	if err != nil {
		return fmt.Errorf("tenancy: updating record: %w", err)
	}
	if r.PartitionID != old.PartitionID || r.PartitionName != old.PartitionName || r.Relationship != old.Relationship {
		return fmt.Errorf("tenancy: updating record %s: %w: partition id, partition name and relationship cannot change", r.ID, ErrConflict)
	}
	c := *r
	c.Created, c.Updated = old.Created, t.now
	if err := c.validate(); err != nil {
		return fmt.Errorf("tenancy: updating record %s: %w", r.ID, err)
	}
	if c.Slug != old.Slug {
		if t.bucket(bucketSlugs).Get([]byte(c.Slug)) != nil {
			return fmt.Errorf("tenancy: renaming record %s to %q: %w", r.ID, c.Slug, ErrSlugTaken)
		}
		if err := t.del(bucketSlugs, []byte(old.Slug)); err != nil {
			return fmt.Errorf("tenancy: renaming record %s: %w", r.ID, err)
		}
		if err := t.put(bucketSlugs, []byte(c.Slug), []byte(c.ID)); err != nil {
			return fmt.Errorf("tenancy: renaming record %s: %w", r.ID, err)
		}
	}
	if err := t.writeRecord(&c); err != nil {
		return fmt.Errorf("tenancy: updating record %s: %w", r.ID, err)
	}
	*r = c
	return nil
}

// DeleteRecord implements Tx.
func (t *boltTx) DeleteRecord(id string) error {
	if err := t.checkWrite(); err != nil {
		return err
	}
	r, err := t.loadRecord(id)
	if err != nil {
		return fmt.Errorf("tenancy: deleting record: %w", err)
	}
	if err := t.deleteRecordEntries(r); err != nil {
		return fmt.Errorf("tenancy: deleting record %s: %w", id, err)
	}
	return nil
}

func (t *boltTx) deleteRecordEntries(r *Record) error {
	for _, accountID := range t.suffixesWithPrefix(bucketMemberships, r.ID) {
		if err := t.deleteMembershipEntries(r.ID, accountID); err != nil {
			return err
		}
	}
	for _, codeHash := range t.suffixesWithPrefix(bucketRecordInvitations, r.ID) {
		if err := t.deleteInvitationEntries(r.ID, codeHash); err != nil {
			return err
		}
	}
	if err := t.del(bucketSlugs, []byte(r.Slug)); err != nil {
		return err
	}
	if err := t.del(bucketRecords, []byte(r.ID)); err != nil {
		return err
	}
	// The id stays used forever; the partition index entry is kept too.
	stamp, err := t.now.MarshalText()
	if err != nil {
		return fmt.Errorf("encoding deletion time: %w", err)
	}
	return t.put(bucketRetiredIDs, []byte(r.ID), stamp)
}

// RecordsForAccount implements Tx.
func (t *boltTx) RecordsForAccount(accountID string) ([]RecordWithRole, error) {
	if err := t.checkRead(); err != nil {
		return nil, err
	}
	if _, err := t.loadAccount(accountID); err != nil {
		return nil, fmt.Errorf("tenancy: records of account: %w", err)
	}
	var out []RecordWithRole
	for _, recordID := range t.suffixesWithPrefix(bucketAccountMemberships, accountID) {
		m, err := t.loadMembership(recordID, accountID)
		if err != nil {
			return nil, fmt.Errorf("tenancy: records of account %s: %w", accountID, err)
		}
		r, err := t.loadRecord(recordID)
		if err != nil {
			return nil, fmt.Errorf("tenancy: records of account %s: %w", accountID, err)
		}
		out = append(out, RecordWithRole{Record: *r, Role: m.Role})
	}
	slices.SortFunc(out, func(a, b RecordWithRole) int { return strings.Compare(a.Slug, b.Slug) })
	return out, nil
}

// StaleProvisioning implements Tx.
func (t *boltTx) StaleProvisioning(olderThan time.Time) ([]Record, error) {
	return t.stale(StatusProvisioning, olderThan)
}

// StaleDeleting implements Tx.
func (t *boltTx) StaleDeleting(olderThan time.Time) ([]Record, error) {
	return t.stale(StatusDeleting, olderThan)
}

// stale scans every record: a gateway holds thousands, and this runs
// rarely, from a janitor.
func (t *boltTx) stale(status Status, olderThan time.Time) ([]Record, error) {
	if err := t.checkRead(); err != nil {
		return nil, err
	}
	var out []Record
	err := t.bucket(bucketRecords).ForEach(func(k, v []byte) error {
		var d recordDoc
		if err := decodeJSON(bucketRecords, k, v, &d); err != nil {
			return err
		}
		if Status(d.Status) == status && d.Updated.Before(olderThan) {
			out = append(out, *d.record())
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("tenancy: listing %s records: %w", status, err)
	}
	slices.SortFunc(out, func(a, b Record) int { return a.Updated.Compare(b.Updated) })
	return out, nil
}
