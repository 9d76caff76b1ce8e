package tenancy

import (
	"fmt"
	"github.com/pfrgateway/caddy-pfr/fhir"
	"net/url"
	"time"
)

// Status is where a record is in its life cycle.
type Status string

// The statuses. Only an active record serves FHIR traffic and gets a
// certificate; the others still hold their slug.
const (
	// StatusProvisioning: the record is committed but its upstream
	// partition and Patient are not made yet (or their making failed and
	// nobody cleaned up; see Tx.StaleProvisioning).
	StatusProvisioning Status = "provisioning"
	// StatusActive: the record serves traffic.
	StatusActive Status = "active"
	// StatusDisabled: kept, but serves no traffic.
	StatusDisabled Status = "disabled"
	// StatusDeleting: its upstream data is being removed; DeleteRecord
	// follows (see Tx.StaleDeleting).
	StatusDeleting Status = "deleting"
)

// Valid reports whether s is one of the defined statuses.
func (s Status) Valid() bool {
	switch s {
	case StatusProvisioning, StatusActive, StatusDisabled, StatusDeleting:
		return true
	}
	return false
}

// Relationship is how the account that created a record relates to the
// person the record is about. It is recorded as given at creation.
type Relationship string

// The relationships.
const (
	RelationshipSelf      Relationship = "self"
	RelationshipParent    Relationship = "parent"
	RelationshipChild     Relationship = "child"
	RelationshipSpouse    Relationship = "spouse"
	RelationshipCaregiver Relationship = "caregiver"
	RelationshipOther     Relationship = "other"
)

// Valid reports whether r is one of the defined relationships.
func (r Relationship) Valid() bool {
	switch r {
	case RelationshipSelf, RelationshipParent, RelationshipChild,
		RelationshipSpouse, RelationshipCaregiver, RelationshipOther:
		return true
	}
	return false
}

// Record is one PFR.
type Record struct {
	// ID is random, immutable and never reused, even after deletion
	// (see NewID for its form). Upstream names derive from it, never from
	// the slug, so a slug can change or be freed without touching data.
	ID string
	// Slug is the DNS label of the record's subdomain (see ValidateSlug),
	// unique among records that exist.
	Slug string
	// PartitionID is the numeric upstream partition: unique, allocated
	// from 1 upwards (0 is HAPI's DEFAULT partition) and never reused.
	PartitionID int64
	// PartitionName is the upstream partition's name, "pfr-" + ID
	// (see PartitionNameFor).
	PartitionName string
	// PatientID is the id of the PFR's Patient upstream; empty until
	// provisioning has created it.
	PatientID string
	// Relationship is how the creator relates to the person.
	Relationship Relationship
	// Status is where the record is in its life cycle.
	Status Status
	// Created is when the record was created; Updated when it last
	// changed. The store sets both, in UTC.
	Created, Updated time.Time
	// WebhookURL receives drop-off alerts, signed with WebhookSecret;
	// both optional. The secret is stored as given, since signing needs it.
	WebhookURL    string
	WebhookSecret string
}

// RecordWithRole is a record together with an account's role in it.
type RecordWithRole struct {
	Record
	Role Role
}

// PartitionNamePrefix starts every partition name.
const PartitionNamePrefix = "pfr-"

// PartitionNameFor returns the upstream partition name of the record with
// the given id. It is a valid HAPI partition name (a FHIR code) and a safe
// URL path segment.
func PartitionNameFor(id string) string { return PartitionNamePrefix + id }

// MaxWebhookSecretLength bounds WebhookSecret, which is stored in clear.
const MaxWebhookSecretLength = 256

// validate checks the fields a caller may set. It does not look at
// uniqueness, which needs the store.
func (r *Record) validate() error {
	if err := ValidateSlug(r.Slug); err != nil {
		return err
	}
	if err := ValidateID(r.ID); err != nil {
		return err
	}
	if r.PartitionID <= 0 {
		return fmt.Errorf("%w partition id %d: must be positive", ErrInvalid, r.PartitionID)
	}
	if want := PartitionNameFor(r.ID); r.PartitionName != want {
		return fmt.Errorf("%w partition name %q: must be %q", ErrInvalid, r.PartitionName, want)
	}
	if r.PatientID != "" && !fhir.IsID(r.PatientID) {
		return fmt.Errorf("%w patient id %q: not a FHIR id", ErrInvalid, r.PatientID)
	}
	if !r.Relationship.Valid() {
		return fmt.Errorf("%w relationship %q: want self, parent, child, spouse, caregiver or other", ErrInvalid, r.Relationship)
	}
	if !r.Status.Valid() {
		return fmt.Errorf("%w status %q: want provisioning, active, disabled or deleting", ErrInvalid, r.Status)
	}
	if r.WebhookURL != "" {
		u, err := url.Parse(r.WebhookURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
			return fmt.Errorf("%w webhook URL %q: want an absolute http(s) URL without credentials", ErrInvalid, r.WebhookURL)
		}
	}
	if len(r.WebhookSecret) > MaxWebhookSecretLength {
		return fmt.Errorf("%w webhook secret: longer than %d bytes", ErrInvalid, MaxWebhookSecretLength)
	}
	return nil
}
