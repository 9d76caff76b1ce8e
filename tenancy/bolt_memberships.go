package tenancy

import (
	"fmt"
	"time"
)

// membershipDoc is a Membership as stored, under record id "/" account id.
type membershipDoc struct {
	Role    string    `json:"role"`
	Created time.Time `json:"created"`
}

// SetMembership implements Tx.
func (t *boltTx) SetMembership(m Membership) error {
	if err := t.checkWrite(); err != nil {
		return err
	}
	if err := t.setMembership(m); err != nil {
		return fmt.Errorf("tenancy: setting membership of account %s in record %s: %w", m.AccountID, m.RecordID, err)
	}
	return nil
}

// setMembership checks and writes m; it is shared with AcceptInvitation.
func (t *boltTx) setMembership(m Membership) error {
	if !m.Role.Valid() {
		return fmt.Errorf("%w %q", ErrInvalidRole, m.Role)
	}
	if _, err := t.loadRecord(m.RecordID); err != nil {
		return err
	}
	if _, err := t.loadAccount(m.AccountID); err != nil {
		return err
	}
	m.Created = t.now
	old, err := t.loadMembership(m.RecordID, m.AccountID)
	switch {
	case err == nil:
		m.Created = old.Created
		if old.Role == RoleOwner && m.Role != RoleOwner {
			if err := t.checkNotLastOwner(m.RecordID); err != nil {
				return err
			}
		}
	case !isNotFound(err):
		return err
	}
	if err := t.putJSON(bucketMemberships, pairKey(m.RecordID, m.AccountID), membershipDoc{Role: string(m.Role), Created: m.Created}); err != nil {
		return err
	}
	return t.put(bucketAccountMemberships, pairKey(m.AccountID, m.RecordID), []byte{})
}

// checkNotLastOwner fails with ErrLastOwner when the record has one owner
// or none, i.e. when taking an owner away would leave it without.
func (t *boltTx) checkNotLastOwner(recordID string) error {
	owners := 0
	for _, accountID := range t.suffixesWithPrefix(bucketMemberships, recordID) {
		m, err := t.loadMembership(recordID, accountID)
		if err != nil {
			return err
		}
		if m.Role == RoleOwner {
			owners++
		}
	}
	if owners <= 1 {
		return fmt.Errorf("record %s: %w", recordID, ErrLastOwner)
	}
	return nil
}

func (t *boltTx) loadMembership(recordID, accountID string) (*Membership, error) {
	// Ids never hold '/', so a key built from a forged one cannot alias another.
	if ValidateID(recordID) != nil || ValidateID(accountID) != nil {
		return nil, fmt.Errorf("membership of account %q in record %q: %w", accountID, recordID, ErrNotFound)
	}
	var d membershipDoc
	found, err := t.getJSON(bucketMemberships, pairKey(recordID, accountID), &d)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("membership of account %q in record %q: %w", accountID, recordID, ErrNotFound)
	}
	return &Membership{RecordID: recordID, AccountID: accountID, Role: Role(d.Role), Created: d.Created}, nil
}

// Membership implements Tx.
func (t *boltTx) Membership(recordID, accountID string) (*Membership, error) {
	if err := t.checkRead(); err != nil {
		return nil, err
	}
	m, err := t.loadMembership(recordID, accountID)
	if err != nil {
		return nil, fmt.Errorf("tenancy: %w", err)
	}
	return m, nil
}

// Memberships implements Tx.
func (t *boltTx) Memberships(recordID string) ([]Membership, error) {
	if err := t.checkRead(); err != nil {
		return nil, err
	}
	if _, err := t.loadRecord(recordID); err != nil {
		return nil, fmt.Errorf("tenancy: members: %w", err)
	}
	var out []Membership
	for _, accountID := range t.suffixesWithPrefix(bucketMemberships, recordID) {
		m, err := t.loadMembership(recordID, accountID)
		if err != nil {
			return nil, fmt.Errorf("tenancy: members of record %s: %w", recordID, err)
		}
		out = append(out, *m)
	}
	return out, nil
}

// DeleteMembership implements Tx.
func (t *boltTx) DeleteMembership(recordID, accountID string) error {
	if err := t.checkWrite(); err != nil {
		return err
	}
	m, err := t.loadMembership(recordID, accountID)
	if err != nil {
		return fmt.Errorf("tenancy: removing member: %w", err)
	}
	if m.Role == RoleOwner {
		if err := t.checkNotLastOwner(recordID); err != nil {
			return fmt.Errorf("tenancy: removing owner %s: %w", accountID, err)
		}
	}
	if err := t.deleteMembershipEntries(recordID, accountID); err != nil {
		return fmt.Errorf("tenancy: removing member %s from record %s: %w", accountID, recordID, err)
	}
	return nil
}

func (t *boltTx) deleteMembershipEntries(recordID, accountID string) error {
	if err := t.del(bucketMemberships, pairKey(recordID, accountID)); err != nil {
		return err
	}
	return t.del(bucketAccountMemberships, pairKey(accountID, recordID))
}
