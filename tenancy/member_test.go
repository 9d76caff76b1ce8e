package tenancy

import (
	"errors"
	"testing"
)

func TestMember(t *testing.T) {
	e := newTestEnv(t)
	alice, bob := e.account(t, "alice"), e.account(t, "bob")
	r := e.recordOwnedBy(t, "john", alice)
	e.update(t, func(tx Tx) error {
		return tx.SetMembership(Membership{RecordID: r.ID, AccountID: bob.ID, Role: RoleViewer})
	})
	e.account(t, "carol") // an account, but no member
	for _, c := range []struct {
		sub     string
		account bool
		role    Role
	}{
		{"alice", true, RoleOwner},
		{"bob", true, RoleViewer},
		{"carol", true, ""},
		{"nobody", false, ""},
	} {
		e.view(t, func(tx Tx) error {
			acct, m, err := Member(tx, r.ID, "https://issuer.example", c.sub)
			if got := acct != nil; got != c.account {
				t.Errorf("%s: account returned = %v, want %v", c.sub, got, c.account)
			}
			switch {
			case c.role == "" && !errors.Is(err, ErrNotFound):
				t.Errorf("%s: error = %v, want ErrNotFound", c.sub, err)
			case c.role != "" && (err != nil || m.Role != c.role):
				t.Errorf("%s: membership %+v, %v; want role %s", c.sub, m, err, c.role)
			}
			return nil
		})
	}
	// Another issuer's subject of the same name is someone else.
	e.view(t, func(tx Tx) error {
		if _, _, err := Member(tx, r.ID, "https://other.example", "alice"); !errors.Is(err, ErrNotFound) {
			t.Errorf("alice at another issuer: %v, want ErrNotFound", err)
		}
		return nil
	})
}
