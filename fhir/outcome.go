// Package fhir holds the FHIR R4 helpers every other package shares:
// OperationOutcome errors, references, Bundle walking and the Patient
// compartment. It knows nothing of Caddy or of storage.
package fhir

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
)

// ContentType is the media type of every FHIR JSON body this project writes.
const ContentType = "application/fhir+json; charset=utf-8"

// Issue codes from http://hl7.org/fhir/ValueSet/issue-type used across the project.
const (
	CodeInvalid       = "invalid"
	CodeStructure     = "structure"
	CodeRequired      = "required"
	CodeValue         = "value"
	CodeSecurity      = "security"
	CodeLogin         = "login"
	CodeForbidden     = "forbidden"
	CodeNotFound      = "not-found"
	CodeDeleted       = "deleted"
	CodeConflict      = "conflict"
	CodeDuplicate     = "duplicate"
	CodeNotSupported  = "not-supported"
	CodeProcessing    = "processing"
	CodeBusinessRule  = "business-rule"
	CodeTooCostly     = "too-costly"
	CodeThrottled     = "throttled"
	CodeException     = "exception"
	CodeTransient     = "transient"
	CodeInformational = "informational"
	CodeTooLong       = "too-long"
)

// Issue severities.
const (
	SeverityFatal       = "fatal"
	SeverityError       = "error"
	SeverityWarning     = "warning"
	SeverityInformation = "information"
)

// Issue is one OperationOutcome.issue.
type Issue struct {
	Severity    string   `json:"severity"`
	Code        string   `json:"code"`
	Diagnostics string   `json:"diagnostics,omitempty"`
	Expression  []string `json:"expression,omitempty"`
}

// OperationOutcome is the FHIR resource every client-visible error becomes.
type OperationOutcome struct {
	ResourceType string  `json:"resourceType"`
	Issue        []Issue `json:"issue"`
}

// Error is an error that knows its HTTP status and its OperationOutcome.
// Handlers return it; WriteError renders it.
type Error struct {
	Status int
	Issues []Issue
	// Header holds extra response headers (WWW-Authenticate, Retry-After, …).
	Header http.Header
	// Err is the underlying cause, kept for logs, never shown to clients.
	Err error
}

// Errorf returns an *Error with one issue of severity "error".
func Errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Issues: []Issue{{
		Severity: SeverityError, Code: code, Diagnostics: fmt.Sprintf(format, args...),
	}}}
}

// Error implements error with the first issue's diagnostics.
func (e *Error) Error() string {
	msg := http.StatusText(e.Status)
	if len(e.Issues) > 0 && e.Issues[0].Diagnostics != "" {
		msg = e.Issues[0].Diagnostics
	}
	if e.Err != nil {
		return fmt.Sprintf("%d %s: %v", e.Status, msg, e.Err)
	}
	return fmt.Sprintf("%d %s", e.Status, msg)
}

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

// WithCause records err as the cause (for logs) and returns e.
func (e *Error) WithCause(err error) *Error { e.Err = err; return e }

// WithHeader sets a response header and returns e.
func (e *Error) WithHeader(key, value string) *Error {
	if e.Header == nil {
		e.Header = http.Header{}
	}
	e.Header.Set(key, value)
	return e
}

// WithExpression sets the FHIRPath expression of the first issue and returns e.
func (e *Error) WithExpression(expr ...string) *Error {
	if len(e.Issues) > 0 {
		e.Issues[0].Expression = append(e.Issues[0].Expression, expr...)
	}
	return e
}

// Outcome returns the OperationOutcome of e.
func (e *Error) Outcome() *OperationOutcome {
	return &OperationOutcome{ResourceType: "OperationOutcome", Issue: e.Issues}
}

// NewOutcome returns an OperationOutcome with a single issue.
func NewOutcome(severity, code, diagnostics string) *OperationOutcome {
	return &OperationOutcome{ResourceType: "OperationOutcome", Issue: []Issue{{
		Severity: severity, Code: code, Diagnostics: diagnostics,
	}}}
}

// AsError converts any error into an *Error: an *Error anywhere in the chain
// is returned as it is; a full disk becomes a 507 that says so (see
// StorageFull); anything else becomes a 500 whose diagnostics do not leak
// the cause.
func AsError(err error) *Error {
	var fe *Error
	if errors.As(err, &fe) {
		if _, full := StorageFull(fe.Err); full && fe.Status >= http.StatusInternalServerError {
			return storageFullError(fe.Err)
		}
		if errors.Is(fe.Err, ErrStateUnavailable) && fe.Status == http.StatusInternalServerError {
			return stateUnavailableError(fe.Err)
		}
		return fe
	}
	if _, full := StorageFull(err); full {
		return storageFullError(err)
	}
	if errors.Is(err, ErrStateUnavailable) {
		return stateUnavailableError(err)
	}
	return Errorf(http.StatusInternalServerError, CodeException, "internal server error").WithCause(err)
}

// WriteError writes err as an OperationOutcome with its status and headers.
func WriteError(w http.ResponseWriter, err error) {
	fe := AsError(err)
	for k, vs := range fe.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	WriteJSON(w, fe.Status, fe.Outcome())
}

// WriteJSON writes v as a FHIR JSON body with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		body, _ = json.Marshal(NewOutcome(SeverityError, CodeException, "cannot encode response"))
	}
	WriteBody(w, status, body)
}

// WriteBody writes body, FHIR JSON already encoded, with the given status
// and the headers every FHIR JSON answer carries.
func WriteBody(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", ContentType)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Del("Content-Encoding")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
