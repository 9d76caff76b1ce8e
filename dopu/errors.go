package dopu

import "errors"

// Errors returned by the Service and the Store. Match them with errors.Is.
var (
	// ErrNotFound: no drop-off with that id (for that record).
	ErrNotFound = errors.New("drop-off not found")
	// ErrNotPending: the drop-off was already picked up, rejected or expired.
	ErrNotPending = errors.New("drop-off is not pending")
	// ErrPickupInProgress: another pick-up holds the drop-off's lease.
	ErrPickupInProgress = errors.New("a pick-up of this drop-off is in progress")
	// ErrLeaseLost: the pick-up's lease was taken over after it expired.
	ErrLeaseLost = errors.New("pick-up lease lost")
	// ErrMismatch: the Bundle's patient does not match the record's Patient.
	ErrMismatch = errors.New("the drop-off's patient does not match the record's Patient")
	// ErrNoBody: the drop-off's body is gone (it is no longer pending).
	ErrNoBody = errors.New("drop-off body not stored")
)
