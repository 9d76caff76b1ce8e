package dopu

import "time"

// Status is where a drop-off is in its life.
type Status string

// The statuses a drop-off goes through: pending, then exactly one of the
// others, for good.
const (
	StatusPending  Status = "pending"
	StatusPickedUp Status = "picked-up"
	StatusRejected Status = "rejected"
	StatusExpired  Status = "expired"
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
	ID       string
	Status   Status
	Received time.Time
	// Duplicate is set when the same body had already been dropped off
	// for the same record: ID is the first drop-off's.
	Duplicate bool
}

// Summary describes a drop-off without its clinical content.
type Summary struct {
	ID             string
	RecordID       string
	Received       time.Time
	Sender         Sender
	Size           int64 // bytes of the (inflated) Bundle
	BundleType     string
	ResourceCounts map[string]int // entries by resourceType
	// Subject is the Bundle's subject Patient (see Pickup.Prepare for the
	// rule), nil when the Bundle names none.
	Subject *PatientSummary
	Status  Status
	Reason  string // why it was rejected
	Expires time.Time
	// Changed is when Status last changed (Received while pending).
	Changed time.Time
}

// DropOff is a stored drop-off: its summary plus what the store and the
// pick-up lease need.
type DropOff struct {
	Summary
	// Digest is the hex SHA-256 of the record id and the body, for
	// de-duplication.
	Digest string
	// Lease and LeaseExpires belong to the pick-up holding it, if any.
	Lease        string
	LeaseExpires time.Time
}

// Alert is one outbox entry: a drop-off whose webhook is still to be
// delivered.
type Alert struct {
	DropOffID   string
	RecordID    string
	Attempts    int
	NextAttempt time.Time
	LastError   string
}
