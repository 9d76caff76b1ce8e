package tenancy

import (
	"context"
	"testing"
	"time"
)

func TestMembershipsAndLastOwner(t *testing.T) {
	e := newTestEnv(t)
	alice, bob, carol := e.account(t, "alice"), e.account(t, "bob"), e.account(t, "carol")
	r := e.recordOwnedBy(t, "john", alice)
	created := e.clock.Now()

	update := func(fn func(Tx) error) error { return e.store.Update(context.Background(), fn) }

	// The only owner can neither leave nor be demoted.
	wantErr(t, update(func(tx Tx) error { return tx.DeleteMembership(r.ID, alice.ID) }), ErrLastOwner)
	wantErr(t, update(func(tx Tx) error {
		return tx.SetMembership(Membership{RecordID: r.ID, AccountID: alice.ID, Role: RoleManager})
	}), ErrLastOwner)

	e.clock.Advance(time.Minute)
	e.update(t, func(tx Tx) error {
		if err := tx.SetMembership(Membership{RecordID: r.ID, AccountID: bob.ID, Role: RoleViewer}); err != nil {
			return err
		}
		return tx.SetMembership(Membership{RecordID: r.ID, AccountID: carol.ID, Role: RoleOwner})
	})
	// Two owners: one may now step down, keeping the original Created.
	e.clock.Advance(time.Minute)
	e.update(t, func(tx Tx) error {
		return tx.SetMembership(Membership{RecordID: r.ID, AccountID: alice.ID, Role: RoleManager})
	})
	e.view(t, func(tx Tx) error {
		m, err := tx.Membership(r.ID, alice.ID)
		if err != nil {
			return err
		}
		if m.Role != RoleManager || !m.Created.Equal(created) {
			t.Errorf("alice's membership = %+v, want manager created at %v", m, created)
		}
		all, err := tx.Memberships(r.ID)
		if err != nil {
			return err
		}
		roles := map[string]Role{}
		for _, m := range all {
			roles[m.AccountID] = m.Role
		}
		if len(all) != 3 || roles[alice.ID] != RoleManager || roles[bob.ID] != RoleViewer || roles[carol.ID] != RoleOwner {
			t.Errorf("Memberships = %+v", all)
		}
		return nil
	})
	// Carol is the last owner again.
	wantErr(t, update(func(tx Tx) error { return tx.DeleteMembership(r.ID, carol.ID) }), ErrLastOwner)
	e.update(t, func(tx Tx) error { return tx.DeleteMembership(r.ID, bob.ID) })
	wantErr(t, update(func(tx Tx) error { return tx.DeleteMembership(r.ID, bob.ID) }), ErrNotFound)

	// Bad input.
	wantErr(t, update(func(tx Tx) error {
		return tx.SetMembership(Membership{RecordID: r.ID, AccountID: bob.ID, Role: "admin"})
	}), ErrInvalidRole)
	wantErr(t, update(func(tx Tx) error {
		return tx.SetMembership(Membership{RecordID: NewID(), AccountID: bob.ID, Role: RoleViewer})
	}), ErrNotFound)
	wantErr(t, update(func(tx Tx) error {
		return tx.SetMembership(Membership{RecordID: r.ID, AccountID: NewID(), Role: RoleViewer})
	}), ErrNotFound)
	e.view(t, func(tx Tx) error {
		_, err := tx.Memberships(NewID())
		wantErr(t, err, ErrNotFound)
		// Forged ids cannot reach another key through the '/' separator.
		_, err = tx.Membership(r.ID+"/"+carol.ID, "")
		wantErr(t, err, ErrNotFound)
		_, err = tx.Membership(r.ID, carol.ID+"/x")
		wantErr(t, err, ErrNotFound)
		return nil
	})
}
