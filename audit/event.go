package audit

import (
	"strings"
	"time"
	"unicode/utf8"
)

// Event is one access to a record, as the gateway saw it.
type Event struct {
	// Time is when the access happened; zero means "now" (Options.Now)
	// at the time Record is called.
	Time time.Time
	// RecordID is the immutable id of the PFR accessed (never the slug).
	// Events without one are dropped.
	RecordID string
	// Issuer, Subject and ClientID say who: the verified token's iss, sub
	// and client id. All empty for an anonymous drop-off sender.
	Issuer, Subject, ClientID string
	// SourceIP is the client's address.
	SourceIP string
	// Action is the FHIR AuditEvent.action: "C", "R", "U", "D" or "E".
	// Empty (or anything else) means: derived from Interaction.
	Action string
	// Interaction is what was done: a FHIR RESTful interaction (read,
	// vread, search-type, create, update, patch, delete, history,
	// transaction, batch, operation, …) or one of the gateway's own
	// (dropoff, pickup, reject, record-create, member-change, …).
	Interaction string
	// Target is what was accessed: "Observation/123" (instance),
	// "Observation" (type level) or "" (system level).
	Target string
	// Status is the HTTP status answered; 0 if none was.
	Status int
	// Detail is a short note, never clinical content: "3 entries", a
	// drop-off id.
	Detail string
}

// Limits on stored strings, so that a client cannot grow the log with
// long headers or ids.
const (
	maxFieldLen  = 512
	maxDetailLen = 256
)

// actions are the codes of http://hl7.org/fhir/audit-event-action.
var actions = map[string]bool{"C": true, "R": true, "U": true, "D": true, "E": true}

// normalize returns e as it is stored: a time in UTC, a valid action,
// bounded strings.
func normalize(e Event, now time.Time) Event {
	if e.Time.IsZero() {
		e.Time = now
	}
	e.Time = e.Time.UTC()
	e.Issuer = truncate(e.Issuer, maxFieldLen)
	e.Subject = truncate(e.Subject, maxFieldLen)
	e.ClientID = truncate(e.ClientID, maxFieldLen)
	e.SourceIP = truncate(e.SourceIP, maxFieldLen)
	e.Interaction = truncate(e.Interaction, maxFieldLen)
	e.Target = truncate(e.Target, maxFieldLen)
	e.Detail = truncate(e.Detail, maxDetailLen)
	if !actions[e.Action] {
		e.Action = actionOf(e.Interaction)
	}
	return e
}

// actionOf derives the AuditEvent action from an interaction name.
func actionOf(interaction string) string {
	switch interaction {
	case "create", "dropoff", "record-create":
		return "C"
	case "read", "vread", "search", "search-type", "search-system",
		"history", "history-instance", "history-type", "history-system",
		"capabilities", "export":
		return "R"
	case "update", "patch", "member-change":
		return "U"
	case "delete", "record-delete":
		return "D"
	default:
		return "E"
	}
}

// truncate cuts s to at most n bytes; a rune split by the cut, like any
// invalid UTF-8, is dropped.
func truncate(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	if utf8.ValidString(s) {
		return s // the usual case, checked eight bytes at a time
	}
	return strings.ToValidUTF8(s, "")
}
