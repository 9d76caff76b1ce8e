package tenancy

import (
	"encoding/binary"
	"fmt"
	"time"
)

// accountDoc is an Account as stored.
type accountDoc struct {
	ID      string    `json:"id"`
	Issuer  string    `json:"iss"`
	Subject string    `json:"sub"`
	Created time.Time `json:"created"`
}

func (d *accountDoc) account() *Account {
	return &Account{ID: d.ID, Issuer: d.Issuer, Subject: d.Subject, Created: d.Created}
}

// identityKey encodes (iss, sub) without ambiguity: the issuer's length
// comes first, since both claims may hold any character.
func identityKey(iss, sub string) []byte {
	k := binary.AppendUvarint(nil, uint64(len(iss)))
	k = append(k, iss...)
	return append(k, sub...)
}

// EnsureAccount implements Tx.
func (t *boltTx) EnsureAccount(iss, sub string) (*Account, error) {
	if err := t.checkWrite(); err != nil {
		return nil, err
	}
	if err := validateIdentity(iss, sub); err != nil {
		return nil, fmt.Errorf("tenancy: ensuring account: %w", err)
	}
	a, err := t.accountByIdentity(iss, sub)
	if err == nil {
		return a, nil
	}
	var id string
	for range 3 {
		if candidate := NewID(); t.bucket(bucketAccounts).Get([]byte(candidate)) == nil {
			id = candidate
			break
		}
	}
	if id == "" {
		return nil, fmt.Errorf("tenancy: ensuring account: could not allocate an unused id")
	}
	d := accountDoc{ID: id, Issuer: iss, Subject: sub, Created: t.now}
	if err := t.putJSON(bucketAccounts, []byte(id), d); err != nil {
		return nil, fmt.Errorf("tenancy: ensuring account: %w", err)
	}
	if err := t.put(bucketIdentities, identityKey(iss, sub), []byte(id)); err != nil {
		return nil, fmt.Errorf("tenancy: ensuring account: %w", err)
	}
	return d.account(), nil
}

// AccountByIdentity implements Tx.
func (t *boltTx) AccountByIdentity(iss, sub string) (*Account, error) {
	if err := t.checkRead(); err != nil {
		return nil, err
	}
	a, err := t.accountByIdentity(iss, sub)
	if err != nil {
		return nil, fmt.Errorf("tenancy: %w", err)
	}
	return a, nil
}

func (t *boltTx) accountByIdentity(iss, sub string) (*Account, error) {
	id := t.bucket(bucketIdentities).Get(identityKey(iss, sub))
	if id == nil {
		return nil, fmt.Errorf("account of issuer %q subject %q: %w", iss, sub, ErrNotFound)
	}
	return t.loadAccount(string(id))
}

// Account implements Tx.
func (t *boltTx) Account(id string) (*Account, error) {
	if err := t.checkRead(); err != nil {
		return nil, err
	}
	a, err := t.loadAccount(id)
	if err != nil {
		return nil, fmt.Errorf("tenancy: %w", err)
	}
	return a, nil
}

func (t *boltTx) loadAccount(id string) (*Account, error) {
	var d accountDoc
	found, err := t.getJSON(bucketAccounts, []byte(id), &d)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("account %q: %w", id, ErrNotFound)
	}
	return d.account(), nil
}
