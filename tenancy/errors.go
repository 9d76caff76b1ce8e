package tenancy

import (
	"errors"
	"fmt"
)

// Sentinel errors. Methods wrap them with context; test with errors.Is.
// Several are refinements of ErrInvalid or ErrConflict, so a caller can map a
// whole family to one HTTP status (400, 409) with a single errors.Is.
var (
	// ErrNotFound means the record, account, membership or invitation does
	// not exist (an unknown or malformed invitation code included).
	ErrNotFound = errors.New("not found")

	// ErrInvalid means an argument or a field is malformed.
	ErrInvalid = errors.New("invalid")

	// ErrInvalidSlug means a slug is not an allowed DNS label; it wraps ErrInvalid.
	ErrInvalidSlug = fmt.Errorf("%w slug", ErrInvalid)

	// ErrInvalidRole means a role is not owner, manager or viewer; it wraps ErrInvalid.
	ErrInvalidRole = fmt.Errorf("%w role", ErrInvalid)

	// ErrConflict means the write contradicts stored state: a taken id or
	// partition id, or a change to an immutable field.
	ErrConflict = errors.New("conflict")

	// ErrSlugTaken means another record that is not deleted uses the slug;
	// it wraps ErrConflict.
	ErrSlugTaken = fmt.Errorf("%w: slug taken", ErrConflict)

	// ErrLastOwner means the change would leave a record without an owner.
	ErrLastOwner = errors.New("a record must keep at least one owner")

	// ErrInvitationExpired means the invitation's time to live has passed.
	ErrInvitationExpired = errors.New("invitation expired")

	// ErrInvitationUsed means the invitation was already accepted.
	ErrInvitationUsed = errors.New("invitation already used")

	// ErrNotPermitted means the acting account lacks the authority the
	// operation needs, e.g. a transfer offered by an account that is not
	// (or no longer) an owner, or an invitation accepted by its own creator.
	ErrNotPermitted = errors.New("not permitted")

	// ErrReadOnly means a write was attempted inside View.
	ErrReadOnly = errors.New("read-only transaction")

	// ErrTxClosed means a Tx was used after its function returned.
	ErrTxClosed = errors.New("transaction closed")
)
