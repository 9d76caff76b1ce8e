package dopu

import "time"

// Status is where a drop-off is in its life.
type Status string

// The statuses a drop-off goes through: pending, then exactly one of the
// others, for good.
const (
	StatusPending  Status = "pending"
	StatusPickedUp Status = "picked-up"
	// StatusPickedUpPartially: picked up, but some entries were left out
	// (they were about another person); Reason says how many and why.
	StatusPickedUpPartially Status = "picked-up-partially"
	StatusRejected          Status = "rejected"
	StatusExpired           Status = "expired"
)

// Sender is who dropped a Bundle off, as far as the gateway could tell.
// Issuer, Subject and ClientID are set only when the sender presented a
// token that the gateway verified.
type Sender struct {
	IP        string `json:"ip,omitempty"`
	UserAgent string `json:"userAgent,omitempty"`
	Issuer    string `json:"issuer,omitempty"`
	Subject   string `json:"subject,omitempty"`
	ClientID  string `json:"clientId,omitempty"`
}

// Receipt is what the sender gets back. ID is the receipt the sender uses
// to ask for the status (128 random bits, base64url), and also the
// drop-off's id in the record's inbox.
type Receipt struct {
	ID       string    `json:"id"`
	Status   Status    `json:"status"`
	Received time.Time `json:"received"`
	// Duplicate is set when the same body had already been dropped off
	// for the same record: ID is the first drop-off's.
	Duplicate bool `json:"duplicate,omitempty"`
}

// Summary describes a drop-off without its clinical content.
type Summary struct {
	ID             string         `json:"id"`
	RecordID       string         `json:"recordId"`
	Received       time.Time      `json:"received"`
	Sender         Sender         `json:"sender"`
	Size           int64          `json:"size"`           // bytes of the (inflated) Bundle
	BundleType     string         `json:"bundleType"`     // document, collection, …
	ResourceCounts map[string]int `json:"resourceCounts"` // entries by resourceType
	// Subject is the Bundle's subject Patient (see Pickup.Prepare for the
	// rule), nil when the Bundle names none. The inbox's match score is
	// ScoreMatch(Subject, SummarizePatient(the record's Patient)).
	Subject *PatientSummary `json:"subject,omitempty"`
	Status  Status          `json:"status"`
	// Alert is the state of the drop-off's webhook alert while it is in
	// the outbox (computed when read, never stored); nil once delivered or
	// when the record has no webhook.
	Alert *AlertState `json:"alert,omitempty"`
	// Reason is why it was rejected (the person's words, private) or
	// only partially picked up.
	Reason string `json:"reason,omitempty"`
	// SenderReason is the reason the sender sees with the status: what a
	// partial pick-up left out, or what the person chose to tell the
	// sender when rejecting.
	SenderReason string `json:"senderReason,omitempty"`
	// AboutNoOne: the Bundle names no patient and holds nothing of a
	// type in the Patient compartment (an organization directory, say);
	// it needs no patient match to be picked up.
	AboutNoOne bool `json:"aboutNoOne,omitempty"`
	// BundleIdentifier is Bundle.identifier as "system|value".
	BundleIdentifier string `json:"bundleIdentifier,omitempty"`
	// LikelyDuplicateOf is set by the inbox on a pending drop-off whose
	// Bundle.identifier (or, when it has none, whose set of resource
	// identifiers) is that of a drop-off already picked up: that one's id.
	LikelyDuplicateOf string    `json:"likelyDuplicateOf,omitempty"`
	Expires           time.Time `json:"expires"`
	// Changed is when Status last changed (Received while pending).
	Changed time.Time `json:"changed"`
}

// DropOff is a stored drop-off: its summary plus what the store and the
// pick-up lease need.
type DropOff struct {
	Summary
	// Digest is the hex SHA-256 of the record id and the body, for
	// de-duplication.
	Digest string `json:"digest"`
	// IdentifiersDigest is the hex SHA-256 of the set of its entries'
	// identifiers (see Summary.LikelyDuplicateOf), "" if none has one.
	IdentifiersDigest string `json:"identifiersDigest,omitempty"`
	// Lease and LeaseExpires belong to the pick-up holding it, if any.
	Lease        string    `json:"lease,omitempty"`
	LeaseExpires time.Time `json:"leaseExpires,omitzero"`
}

// Alert is one outbox entry: a drop-off whose webhook is still to be
// delivered.
type Alert struct {
	DropOffID   string    `json:"dropoff"`
	RecordID    string    `json:"record"`
	Attempts    int       `json:"attempts"`
	NextAttempt time.Time `json:"next"`
	LastError   string    `json:"lastError,omitempty"`
	// Dead is set when the alert will never be delivered: MaxAttempts
	// failures, or a destination the egress policy refuses. A dead alert
	// stays for the owner to see and is never attempted again.
	Dead bool `json:"dead,omitempty"`
	// Lease names the delivery attempt that holds the alert; while it is
	// set, NextAttempt is when the lease runs out (a node that died
	// mid-delivery leaves the alert to another after that). Only the
	// holder may finish or reschedule the alert.
	Lease string `json:"lease,omitempty"`
}

// The states of an alert in the outbox.
const (
	AlertPending = "pending"
	AlertDead    = "dead"
)

// AlertState is what the inbox shows of a drop-off's alert.
type AlertState struct {
	// State is AlertPending (to be delivered, perhaps after failures) or
	// AlertDead (never delivered; LastError says why).
	State       string    `json:"state"`
	Attempts    int       `json:"attempts"`
	LastError   string    `json:"lastError,omitempty"`
	NextAttempt time.Time `json:"nextAttempt,omitzero"`
}
