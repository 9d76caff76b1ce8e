package tenancy

import "fmt"

// Role is what a membership lets an account do with a record.
type Role string

// The roles, from most to least powerful.
const (
	// RoleOwner reads and writes, manages members and invitations, deletes
	// the record and transfers ownership. A record has at least one owner.
	RoleOwner Role = "owner"
	// RoleManager reads and writes FHIR data.
	RoleManager Role = "manager"
	// RoleViewer only reads FHIR data.
	RoleViewer Role = "viewer"
)

// ParseRole returns the Role named s, or an error wrapping ErrInvalidRole.
func ParseRole(s string) (Role, error) {
	r := Role(s)
	if !r.Valid() {
		return "", fmt.Errorf("%w %q: want owner, manager or viewer", ErrInvalidRole, s)
	}
	return r, nil
}

// Valid reports whether r is one of the defined roles.
func (r Role) Valid() bool { return r.rank() > 0 }

// CanRead reports whether r may read the record's FHIR data (every role).
func (r Role) CanRead() bool { return r.Valid() }

// CanWrite reports whether r may write the record's FHIR data and pick up
// or reject drop-offs (owner and manager).
func (r Role) CanWrite() bool { return r == RoleOwner || r == RoleManager }

// CanManage reports whether r may manage members and invitations, delete
// the record and transfer it (owner only).
func (r Role) CanManage() bool { return r == RoleOwner }

// AtLeast reports whether r grants everything other grants.
func (r Role) AtLeast(other Role) bool { return r.Valid() && r.rank() >= other.rank() }

// rank orders roles by power; 0 means not a role.
func (r Role) rank() int {
	switch r {
	case RoleOwner:
		return 3
	case RoleManager:
		return 2
	case RoleViewer:
		return 1
	}
	return 0
}
