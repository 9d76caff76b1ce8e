package tenancy

import (
	"context"
	"time"
)

// Store keeps records, accounts, memberships and invitations, and gives
// access to them in transactions.
//
// Transactions serialize: concurrent Updates behave as if run one after
// the other, so a read followed by a write in one Update is safe (two
// requests for the same slug: exactly one wins). Keep them short and never
// call the network inside one: commit a record in StatusProvisioning, make
// the upstream partition, then activate it in a second Update. That way a
// partition id is committed before anything upstream uses it. Do not
// start a transaction inside another: a bbolt writer waits for itself.
type Store interface {
	// Update runs fn in one atomic read-write transaction. If fn returns
	// an error (or panics, or ctx is done by the time fn returns), nothing
	// fn did is kept and Update returns that error unchanged.
	Update(ctx context.Context, fn func(Tx) error) error
	// View runs fn in a read-only transaction with a consistent snapshot.
	// Writes inside it fail with ErrReadOnly.
	View(ctx context.Context, fn func(Tx) error) error
}

// Tx is one transaction. It is valid only while the function given to
// Update or View runs (afterwards every method returns ErrTxClosed) and
// must not be shared between goroutines. Returned values are copies:
// changing them changes nothing until written back.
type Tx interface {
	// EnsureAccount returns the account of (iss, sub), creating it on
	// first sight.
	EnsureAccount(iss, sub string) (*Account, error)
	// AccountByIdentity returns the account of (iss, sub), or ErrNotFound.
	AccountByIdentity(iss, sub string) (*Account, error)
	// Account returns the account with the given id, or ErrNotFound.
	Account(id string) (*Account, error)

	// CreateRecord stores a new record and fills in r. Slug and
	// Relationship are required; a slug in use gives ErrSlugTaken.
	//
	// ID is allocated when empty; when given (an import), it must have
	// NewID's form and never have been used (ErrConflict). PartitionID is
	// allocated when zero, from a counter that starts at 1 and only grows
	// (a committed id is never handed out again; numbers may be skipped);
	// when given, it must never have been used (ErrConflict).
	// PartitionName is derived from ID. Status defaults to
	// StatusProvisioning. Created and Updated are set to now.
	//
	// No membership is created: make the creator owner with SetMembership
	// in the same transaction.
	CreateRecord(r *Record) error
	// Record returns the record with the given id, or ErrNotFound.
	Record(id string) (*Record, error)
	// RecordBySlug returns the record using slug, or ErrNotFound.
	RecordBySlug(slug string) (*Record, error)
	// PutRecord updates the stored record with r's ID from r: Slug (still
	// unique: ErrSlugTaken), PatientID, Status and the webhook fields.
	// PartitionID, PartitionName and Relationship cannot change
	// (ErrConflict). Read the record, change it, put it back: Created is
	// taken from the stored record and Updated set to now, and both are
	// written back into r.
	PutRecord(r *Record) error
	// DeleteRecord removes the record, its memberships and invitations.
	// The slug becomes free; the id and partition id stay used forever.
	DeleteRecord(id string) error
	// RecordsForAccount returns the records the account is a member of,
	// with its role in each, ordered by slug.
	RecordsForAccount(accountID string) ([]RecordWithRole, error)
	// StaleProvisioning returns the records still in StatusProvisioning
	// whose Updated is before olderThan: left behind by a crash between
	// creating a record and provisioning it upstream.
	StaleProvisioning(olderThan time.Time) ([]Record, error)
	// StaleDeleting returns the records still in StatusDeleting whose
	// Updated is before olderThan: deletions interrupted by a crash.
	StaleDeleting(olderThan time.Time) ([]Record, error)

	// SetMembership creates or changes the account's role in the record.
	// Record and account must exist (ErrNotFound). A record may have
	// several owners. Demoting the last owner gives ErrLastOwner.
	// Created is set on creation and kept on change.
	SetMembership(m Membership) error
	// Membership returns the account's membership in the record, or
	// ErrNotFound.
	Membership(recordID, accountID string) (*Membership, error)
	// Memberships returns the record's memberships ordered by account id.
	Memberships(recordID string) ([]Membership, error)
	// DeleteMembership removes the account from the record. Removing the
	// last owner gives ErrLastOwner; a missing membership ErrNotFound.
	DeleteMembership(recordID, accountID string) error

	// CreateInvitation stores an invitation to the record with the given
	// role and returns its code (128 random bits, 26 characters of
	// lower-case base32: URL-safe), which is not stored and cannot be
	// recovered. The creator must hold at least the offered role
	// (ErrNotPermitted), so only an owner can offer a transfer (RoleOwner).
	// ttl must be positive and at most MaxInvitationTTL (ErrInvalid).
	CreateInvitation(recordID string, role Role, createdBy string, ttl time.Duration) (code string, err error)
	// Invitation returns the invitation with the given code, or
	// ErrNotFound; used and expired invitations are returned too.
	Invitation(code string) (*Invitation, error)
	// Invitations returns the record's invitations, used and expired ones
	// included, ordered by creation time.
	Invitations(recordID string) ([]Invitation, error)
	// RevokeInvitation deletes the record's invitation whose CodeHash is
	// codeHash, or returns ErrNotFound.
	RevokeInvitation(recordID, codeHash string) error
	// AcceptInvitation uses the invitation for the account, once:
	// ErrNotFound for an unknown code, ErrInvitationUsed when already
	// used, ErrInvitationExpired when expired, ErrNotPermitted when the
	// account is the invitation's creator.
	//
	// For viewer and manager the account gets that role, unless it
	// already has an equal or higher one, which it keeps: an invitation
	// never demotes. For owner it is a transfer: the account becomes an
	// owner and the creator's ownership becomes manager, so the creator
	// keeps access to the data but no longer controls the record. The
	// creator's authority is checked again here: if it no longer holds the
	// offered role in the record (a transfer whose creator is no longer an
	// owner), ErrNotPermitted, and the invitation stays unused.
	//
	// It does not look at the record's Status: whether a disabled record
	// takes new members is the caller's decision. It returns the accepting
	// account's membership after the change.
	AcceptInvitation(code string, accountID string) (*Membership, error)
}
