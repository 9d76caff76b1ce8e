package tenancy

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// invitationDoc is an Invitation as stored, under its code hash. The code
// itself is never stored.
type invitationDoc struct {
	RecordID  string    `json:"recordId"`
	Role      string    `json:"role"`
	CreatedBy string    `json:"createdBy"`
	Created   time.Time `json:"created"`
	Expires   time.Time `json:"expires"`
	UsedBy    string    `json:"usedBy,omitempty"`
	Used      time.Time `json:"used,omitzero"`
}

func (d *invitationDoc) invitation(codeHash string) *Invitation {
	return &Invitation{
		CodeHash: codeHash, RecordID: d.RecordID, Role: Role(d.Role), CreatedBy: d.CreatedBy,
		Created: d.Created, Expires: d.Expires, UsedBy: d.UsedBy, Used: d.Used,
	}
}

func docFromInvitation(inv *Invitation) invitationDoc {
	return invitationDoc{
		RecordID: inv.RecordID, Role: string(inv.Role), CreatedBy: inv.CreatedBy,
		Created: inv.Created, Expires: inv.Expires, UsedBy: inv.UsedBy, Used: inv.Used,
	}
}

// CreateInvitation implements Tx.
func (t *boltTx) CreateInvitation(recordID string, role Role, createdBy string, ttl time.Duration) (string, error) {
	if err := t.checkWrite(); err != nil {
		return "", err
	}
	if err := t.checkInvitation(recordID, role, createdBy, ttl); err != nil {
		return "", fmt.Errorf("tenancy: inviting to record %s as %s: %w", recordID, role, err)
	}
	var code, hash string
	for range 3 {
		code = NewID()
		if hash = HashInvitationCode(code); t.bucket(bucketInvitations).Get([]byte(hash)) == nil {
			break
		}
		code = ""
	}
	if code == "" {
		return "", fmt.Errorf("tenancy: inviting to record %s: could not allocate an unused code", recordID)
	}
	inv := Invitation{
		CodeHash: hash, RecordID: recordID, Role: role, CreatedBy: createdBy,
		Created: t.now, Expires: t.now.Add(ttl),
	}
	if err := t.putJSON(bucketInvitations, []byte(hash), docFromInvitation(&inv)); err != nil {
		return "", fmt.Errorf("tenancy: inviting to record %s: %w", recordID, err)
	}
	if err := t.put(bucketRecordInvitations, pairKey(recordID, hash), []byte{}); err != nil {
		return "", fmt.Errorf("tenancy: inviting to record %s: %w", recordID, err)
	}
	return code, nil
}

// checkInvitation enforces that nobody offers more than they hold.
func (t *boltTx) checkInvitation(recordID string, role Role, createdBy string, ttl time.Duration) error {
	if !role.Valid() {
		return fmt.Errorf("%w %q", ErrInvalidRole, role)
	}
	if ttl <= 0 || ttl > MaxInvitationTTL {
		return fmt.Errorf("%w time to live %s: want more than 0 and at most %s", ErrInvalid, ttl, MaxInvitationTTL)
	}
	if _, err := t.loadRecord(recordID); err != nil {
		return err
	}
	creator, err := t.loadMembership(recordID, createdBy)
	if isNotFound(err) {
		return fmt.Errorf("%w: account %s is not a member", ErrNotPermitted, createdBy)
	}
	if err != nil {
		return err
	}
	if !creator.Role.AtLeast(role) {
		return fmt.Errorf("%w: a %s cannot offer the role %s", ErrNotPermitted, creator.Role, role)
	}
	return nil
}

// loadInvitation finds an invitation by its code.
func (t *boltTx) loadInvitation(code string) (*Invitation, error) {
	// Refusing malformed codes early keeps junk out of the hash lookups.
	if ValidateID(strings.ToLower(code)) != nil {
		return nil, fmt.Errorf("invitation: %w", ErrNotFound)
	}
	return t.loadInvitationByHash(HashInvitationCode(code))
}

func (t *boltTx) loadInvitationByHash(hash string) (*Invitation, error) {
	var d invitationDoc
	found, err := t.getJSON(bucketInvitations, []byte(hash), &d)
	if err != nil {
		return nil, err
	}
	if !found {
		// Never echo the code: error messages end up in logs.
		return nil, fmt.Errorf("invitation: %w", ErrNotFound)
	}
	return d.invitation(hash), nil
}

// Invitation implements Tx.
func (t *boltTx) Invitation(code string) (*Invitation, error) {
	if err := t.checkRead(); err != nil {
		return nil, err
	}
	inv, err := t.loadInvitation(code)
	if err != nil {
		return nil, fmt.Errorf("tenancy: %w", err)
	}
	return inv, nil
}

// Invitations implements Tx.
func (t *boltTx) Invitations(recordID string) ([]Invitation, error) {
	if err := t.checkRead(); err != nil {
		return nil, err
	}
	if _, err := t.loadRecord(recordID); err != nil {
		return nil, fmt.Errorf("tenancy: invitations: %w", err)
	}
	var out []Invitation
	for _, hash := range t.suffixesWithPrefix(bucketRecordInvitations, recordID) {
		inv, err := t.loadInvitationByHash(hash)
		if err != nil {
			return nil, fmt.Errorf("tenancy: invitations of record %s: %w", recordID, err)
		}
		out = append(out, *inv)
	}
	slices.SortFunc(out, func(a, b Invitation) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.CodeHash, b.CodeHash)
	})
	return out, nil
}

// RevokeInvitation implements Tx.
func (t *boltTx) RevokeInvitation(recordID, codeHash string) error {
	if err := t.checkWrite(); err != nil {
		return err
	}
	inv, err := t.loadInvitationByHash(codeHash)
	if err == nil && inv.RecordID != recordID {
		// Another record's invitation: as good as absent for this caller.
		err = fmt.Errorf("invitation: %w", ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("tenancy: revoking invitation of record %s: %w", recordID, err)
	}
	if err := t.deleteInvitationEntries(recordID, codeHash); err != nil {
		return fmt.Errorf("tenancy: revoking invitation of record %s: %w", recordID, err)
	}
	return nil
}

func (t *boltTx) deleteInvitationEntries(recordID, codeHash string) error {
	if err := t.del(bucketInvitations, []byte(codeHash)); err != nil {
		return err
	}
	return t.del(bucketRecordInvitations, pairKey(recordID, codeHash))
}

// AcceptInvitation implements Tx.
func (t *boltTx) AcceptInvitation(code string, accountID string) (*Membership, error) {
	if err := t.checkWrite(); err != nil {
		return nil, err
	}
	m, err := t.acceptInvitation(code, accountID)
	if err != nil {
		return nil, fmt.Errorf("tenancy: accepting invitation for account %s: %w", accountID, err)
	}
	return m, nil
}

func (t *boltTx) acceptInvitation(code string, accountID string) (*Membership, error) {
	inv, err := t.loadInvitation(code)
	if err != nil {
		return nil, err
	}
	if _, err := t.loadAccount(accountID); err != nil {
		return nil, err
	}
	if inv.UsedBy != "" {
		return nil, ErrInvitationUsed
	}
	if !t.now.Before(inv.Expires) {
		return nil, ErrInvitationExpired
	}
	if accountID == inv.CreatedBy {
		return nil, fmt.Errorf("%w: the creator of an invitation cannot accept it", ErrNotPermitted)
	}
	// Authority is checked at acceptance too: the creator may have lost it
	// since.
	creator, err := t.loadMembership(inv.RecordID, inv.CreatedBy)
	if isNotFound(err) {
		return nil, fmt.Errorf("%w: the inviting account is no longer a member", ErrNotPermitted)
	}
	if err != nil {
		return nil, err
	}
	if !creator.Role.AtLeast(inv.Role) {
		return nil, fmt.Errorf("%w: the inviting account is no longer %s", ErrNotPermitted, inv.Role)
	}

	current, err := t.loadMembership(inv.RecordID, accountID)
	if err != nil && !isNotFound(err) {
		return nil, err
	}
	if current == nil || !current.Role.AtLeast(inv.Role) {
		if err := t.setMembership(Membership{RecordID: inv.RecordID, AccountID: accountID, Role: inv.Role}); err != nil {
			return nil, err
		}
	}
	if inv.Role == RoleOwner {
		// The transfer: the new owner is in place, so the creator is not
		// the last owner any more and can step down.
		if err := t.setMembership(Membership{RecordID: inv.RecordID, AccountID: inv.CreatedBy, Role: RoleManager}); err != nil {
			return nil, err
		}
	}
	inv.UsedBy, inv.Used = accountID, t.now
	if err := t.putJSON(bucketInvitations, []byte(inv.CodeHash), docFromInvitation(inv)); err != nil {
		return nil, err
	}
	return t.loadMembership(inv.RecordID, accountID)
}
