package fhir

import (
	"errors"
	"net/http"
	"os"
	"strings"
	"syscall"
)

// StorageFullRetryAfter is the Retry-After, in seconds, of a 507 answer:
// a full disk is an operator's problem, not one a client's quick retry
// solves.
const StorageFullRetryAfter = "60"

// StorageFull reports whether err says the disk (or the quota) is full, and
// the file it was writing when the error names one. bbolt flattens some of
// its errors into text, so the error text counts as well as the chain.
func StorageFull(err error) (path string, full bool) {
	if err == nil {
		return "", false
	}
	full = errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) ||
		strings.Contains(err.Error(), syscall.ENOSPC.Error()) || strings.Contains(err.Error(), syscall.EDQUOT.Error())
	if !full {
		return "", false
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		path = pe.Path
	}
	return path, true
}

// storageFullError is the client's answer when a write failed for want of
// disk space: 507 Insufficient Storage, and nothing of the request stored.
func storageFullError(err error) *Error {
	return Errorf(http.StatusInsufficientStorage, CodeTransient,
		"the server's storage is full: nothing of this request was stored; try again later").
		WithHeader("Retry-After", StorageFullRetryAfter).WithCause(err)
}

// ErrStateUnavailable marks an error of the gateway's own state database
// that is no fault of the request: the database cannot be reached, is
// shutting down, or the connection broke. Clients get 503 with
// Retry-After (see AsError), never a 500.
var ErrStateUnavailable = errors.New("the gateway's state database is unavailable")

// StateUnavailableRetryAfter is the Retry-After, in seconds, of a 503 for
// ErrStateUnavailable: a balancer has usually moved on to another node.
const StateUnavailableRetryAfter = "5"

func stateUnavailableError(err error) *Error {
	return Errorf(http.StatusServiceUnavailable, CodeTransient,
		"the server cannot reach its state database; try again").
		WithHeader("Retry-After", StateUnavailableRetryAfter).WithCause(err)
}
