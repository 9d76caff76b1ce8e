package tenancy

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"time"
)

// Invitation offers a role in a record to whoever presents its code first.
// An invitation for RoleOwner is a transfer: see Tx.AcceptInvitation.
//
// The code itself is shown once, to the creator, and never stored: only its
// SHA-256 is. The code has 128 random bits, so a fast unsalted hash is
// enough to keep a copy of the database from revealing usable codes.
type Invitation struct {
	// CodeHash is HashInvitationCode(code): lower-case hex SHA-256.
	CodeHash string
	RecordID string
	Role     Role
	// CreatedBy is the inviting account's id.
	CreatedBy string
	Created   time.Time
	Expires   time.Time
	// UsedBy is the accepting account's id and Used the time of
	// acceptance; both are empty until then.
	UsedBy string
	Used   time.Time
}

// Pending reports whether the invitation can still be accepted at now.
func (inv *Invitation) Pending(now time.Time) bool {
	return inv.UsedBy == "" && now.Before(inv.Expires)
}

// HashInvitationCode returns the stored form of an invitation code. Codes
// are compared case-insensitively, since people retype them.
func HashInvitationCode(code string) string {
	sum := sha256.Sum256([]byte(strings.ToLower(code)))
	return hex.EncodeToString(sum[:])
}

// MaxInvitationTTL bounds how long an invitation may stay open.
const MaxInvitationTTL = 30 * 24 * time.Hour
