package dopu

import (
	"context"
	"time"
)

// Store keeps drop-offs, their bodies and the alert outbox. It is not shaped
// like bbolt so that other databases (PostgreSQL for several gateway nodes)
// can implement it.
//
// Transactions serialize: an Update behaves as if it ran alone. Update must
// be durable when it returns nil (synced to disk), and atomic: if fn fails,
// nothing it did is kept.
type Store interface {
	// Update runs fn in one atomic, durable read-write transaction.
	Update(ctx context.Context, fn func(Tx) error) error
	// View runs fn in a read-only transaction on a consistent snapshot.
	View(ctx context.Context, fn func(Tx) error) error
}

// Tx is one transaction, valid only while the function given to Update or
// View runs. Returned values are copies.
//
// The store keeps one invariant on its own: a drop-off has a body exactly
// while it is pending. Put of a drop-off that leaves StatusPending deletes
// its body, takes it out of the record's pending usage and out of the
// expiry index, and into the index Finished reads; leaving it as
// StatusExpired also forgets its digest, so the same body can be dropped
// off again.
type Tx interface {
	// Create stores a new pending drop-off with its body. d.ID and
	// d.Digest must be unused. body is not kept past the transaction (the
	// caller reuses its memory).
	Create(d *DropOff, body []byte) error
	// Get returns the drop-off with that id, or ErrNotFound.
	Get(id string) (*DropOff, error)
	// ByDigest returns the drop-off with that digest, or ErrNotFound.
	ByDigest(digest string) (*DropOff, error)
	// Body returns the body of a pending drop-off, or ErrNoBody.
	Body(id string) ([]byte, error)
	// Put updates a pending drop-off's status, reason, Changed, Expires
	// and lease; the other fields keep their stored values, and d is set
	// to what was stored. A drop-off that is no longer pending cannot
	// change: ErrNotPending.
	Put(d *DropOff) error
	// List returns the record's drop-offs, newest first.
	List(recordID string) ([]DropOff, error)
	// Usage returns the number and total size of the record's pending
	// drop-offs.
	Usage(recordID string) (count int, size int64, err error)
	// Expiring returns up to limit pending drop-offs whose Expires is not
	// after t, oldest first.
	Expiring(t time.Time, limit int) ([]DropOff, error)
	// Finished returns up to limit drop-offs that left StatusPending
	// (their Changed) at or before t, oldest first.
	Finished(t time.Time, limit int) ([]DropOff, error)
	// Delete removes a drop-off that is no longer pending, with its
	// alert and every index entry; ErrNotPending for a pending one.
	Delete(id string) error

	// PutAlert creates or replaces the alert of a.DropOffID. A dead
	// alert is kept but never due.
	PutAlert(a *Alert) error
	// Alert returns the alert of a drop-off, or ErrNotFound.
	Alert(dropOffID string) (*Alert, error)
	// DueAlerts returns up to limit live alerts whose NextAttempt is not
	// after t.
	DueAlerts(t time.Time, limit int) ([]Alert, error)
	// DeleteAlert removes a drop-off's alert, if any.
	DeleteAlert(dropOffID string) error
}

// bodyStager is a Store that keeps large bodies outside its transactions
// (KVStore on bbolt: in files). Intake calls stageBody while it checks the
// body, so that the body's write and sync overlap with the check and the
// transaction stays small. A nil done means the store keeps this body in
// the transaction as usual. Otherwise the body is durable when stageBody
// returns, Create of drop-off id with the same body refers to it instead
// of storing it, and done must be called once that transaction has ended:
// kept false (the drop-off was not stored) removes the staged body.
type bodyStager interface {
	stageBody(id string, body []byte) (done func(kept bool), err error)
}
