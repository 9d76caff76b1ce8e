package tenancy

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// invite creates an invitation and fails the test on error.
func (e *testEnv) invite(t *testing.T, r *Record, role Role, by *Account, ttl time.Duration) string {
	t.Helper()
	var code string
	e.update(t, func(tx Tx) (err error) {
		code, err = tx.CreateInvitation(r.ID, role, by.ID, ttl)
		return err
	})
	return code
}

func (e *testEnv) accept(code string, a *Account) (*Membership, error) {
	var m *Membership
	err := e.store.Update(context.Background(), func(tx Tx) (err error) {
		m, err = tx.AcceptInvitation(code, a.ID)
		return err
	})
	return m, err
}

func (e *testEnv) role(t *testing.T, r *Record, a *Account) Role {
	t.Helper()
	var role Role
	err := e.store.View(context.Background(), func(tx Tx) error {
		m, err := tx.Membership(r.ID, a.ID)
		if err != nil {
			return err
		}
		role = m.Role
		return nil
	})
	if err != nil {
		return ""
	}
	return role
}

func TestInvitationIsSingleUse(t *testing.T) {
	e := newTestEnv(t)
	alice, bob, carol := e.account(t, "alice"), e.account(t, "bob"), e.account(t, "carol")
	r := e.recordOwnedBy(t, "john", alice)

	code := e.invite(t, r, RoleViewer, alice, time.Hour)
	if err := ValidateID(code); err != nil {
		t.Fatalf("code %q is not 128 bits of URL-safe base32: %v", code, err)
	}
	m, err := e.accept(code, bob)
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	if m.RecordID != r.ID || m.AccountID != bob.ID || m.Role != RoleViewer {
		t.Fatalf("membership = %+v, want bob as viewer", m)
	}
	_, err = e.accept(code, carol)
	wantErr(t, err, ErrInvitationUsed)
	_, err = e.accept(code, bob)
	wantErr(t, err, ErrInvitationUsed)
	if role := e.role(t, r, carol); role != "" {
		t.Fatalf("carol got %q from a used invitation", role)
	}

	e.view(t, func(tx Tx) error {
		inv, err := tx.Invitation(strings.ToUpper(code)) // retyped codes still match
		if err != nil {
			return err
		}
		if inv.UsedBy != bob.ID || !inv.Used.Equal(e.clock.Now()) || inv.Pending(e.clock.Now()) {
			t.Errorf("invitation after use = %+v", inv)
		}
		return nil
	})
}

func TestInvitationExpires(t *testing.T) {
	e := newTestEnv(t)
	alice, bob := e.account(t, "alice"), e.account(t, "bob")
	r := e.recordOwnedBy(t, "john", alice)
	code := e.invite(t, r, RoleManager, alice, time.Hour)

	e.clock.Advance(time.Hour) // expiry is exclusive: at Expires it is over
	_, err := e.accept(code, bob)
	wantErr(t, err, ErrInvitationExpired)
	if role := e.role(t, r, bob); role != "" {
		t.Fatalf("bob got %q from an expired invitation", role)
	}
}

func TestInvitationRefusals(t *testing.T) {
	e := newTestEnv(t)
	alice, bob, carol := e.account(t, "alice"), e.account(t, "bob"), e.account(t, "carol")
	r := e.recordOwnedBy(t, "john", alice)
	e.update(t, func(tx Tx) error {
		return tx.SetMembership(Membership{RecordID: r.ID, AccountID: bob.ID, Role: RoleManager})
	})
	create := func(role Role, by *Account, ttl time.Duration) error {
		return e.store.Update(context.Background(), func(tx Tx) error {
			_, err := tx.CreateInvitation(r.ID, role, by.ID, ttl)
			return err
		})
	}
	wantErr(t, create(RoleOwner, bob, time.Hour), ErrNotPermitted)    // a manager cannot transfer
	wantErr(t, create(RoleViewer, carol, time.Hour), ErrNotPermitted) // a stranger cannot invite
	wantErr(t, create("admin", alice, time.Hour), ErrInvalidRole)     // no such role
	wantErr(t, create(RoleViewer, alice, 0), ErrInvalid)              // no time to live
	wantErr(t, create(RoleViewer, alice, -time.Hour), ErrInvalid)     // already over
	wantErr(t, create(RoleViewer, alice, MaxInvitationTTL+1), ErrInvalid)
	wantErr(t, e.store.Update(context.Background(), func(tx Tx) error {
		_, err := tx.CreateInvitation(NewID(), RoleViewer, alice.ID, time.Hour)
		return err
	}), ErrNotFound)

	// Unknown and malformed codes.
	for _, code := range []string{NewID(), "", "not-a-code", strings.Repeat("a", 200)} {
		_, err := e.accept(code, carol)
		wantErr(t, err, ErrNotFound)
	}

	// The creator cannot accept their own invitation.
	code := e.invite(t, r, RoleViewer, alice, time.Hour)
	_, err := e.accept(code, alice)
	wantErr(t, err, ErrNotPermitted)

	// An unknown account cannot accept, and the code stays usable.
	_, err = e.accept(code, &Account{ID: NewID()})
	wantErr(t, err, ErrNotFound)
	if _, err := e.accept(code, carol); err != nil {
		t.Fatalf("a refused acceptance consumed the invitation: %v", err)
	}
}

func TestInvitationNeverDemotes(t *testing.T) {
	e := newTestEnv(t)
	alice, bob := e.account(t, "alice"), e.account(t, "bob")
	r := e.recordOwnedBy(t, "john", alice)
	e.update(t, func(tx Tx) error {
		return tx.SetMembership(Membership{RecordID: r.ID, AccountID: bob.ID, Role: RoleManager})
	})
	m, err := e.accept(e.invite(t, r, RoleViewer, alice, time.Hour), bob)
	if err != nil {
		t.Fatal(err)
	}
	if m.Role != RoleManager {
		t.Fatalf("a viewer invitation turned a manager into %q", m.Role)
	}
}

func TestTransferOwnership(t *testing.T) {
	e := newTestEnv(t)
	alice, bob := e.account(t, "alice"), e.account(t, "bob")
	r := e.recordOwnedBy(t, "john", alice)

	code := e.invite(t, r, RoleOwner, alice, time.Hour)
	m, err := e.accept(code, bob)
	if err != nil {
		t.Fatalf("accepting a transfer: %v", err)
	}
	if m.Role != RoleOwner || e.role(t, r, bob) != RoleOwner {
		t.Fatalf("bob is %q after the transfer, want owner", m.Role)
	}
	if got := e.role(t, r, alice); got != RoleManager {
		t.Fatalf("alice is %q after the transfer, want manager", got)
	}
	// Bob is now the only owner and protected as such.
	wantErr(t, e.store.Update(context.Background(), func(tx Tx) error { return tx.DeleteMembership(r.ID, bob.ID) }), ErrLastOwner)
}

func TestTransferRefusedWhenInviterLostOwnership(t *testing.T) {
	e := newTestEnv(t)
	alice, bob, carol := e.account(t, "alice"), e.account(t, "bob"), e.account(t, "carol")
	r := e.recordOwnedBy(t, "john", alice)
	e.update(t, func(tx Tx) error {
		return tx.SetMembership(Membership{RecordID: r.ID, AccountID: carol.ID, Role: RoleOwner})
	})
	code := e.invite(t, r, RoleOwner, alice, time.Hour)
	// Carol demotes Alice before Bob accepts Alice's transfer.
	e.update(t, func(tx Tx) error {
		return tx.SetMembership(Membership{RecordID: r.ID, AccountID: alice.ID, Role: RoleViewer})
	})
	_, err := e.accept(code, bob)
	wantErr(t, err, ErrNotPermitted)
	if role := e.role(t, r, bob); role != "" {
		t.Fatalf("bob got %q from a stale transfer", role)
	}
}

func TestInvitationCodesAreNotStoredInClear(t *testing.T) {
	e := newTestEnv(t)
	alice := e.account(t, "alice")
	r := e.recordOwnedBy(t, "john", alice)
	var codes []string
	for _, role := range []Role{RoleViewer, RoleManager, RoleOwner} {
		codes = append(codes, e.invite(t, r, role, alice, time.Hour))
	}
	e.view(t, func(tx Tx) error {
		invs, err := tx.Invitations(r.ID)
		if err != nil {
			return err
		}
		if len(invs) != 3 {
			t.Fatalf("Invitations = %d, want 3", len(invs))
		}
		// Same creation time: the order is by hash, so compare as a set.
		want := map[string]Role{}
		for i, code := range codes {
			want[HashInvitationCode(code)] = []Role{RoleViewer, RoleManager, RoleOwner}[i]
		}
		for _, inv := range invs {
			if want[inv.CodeHash] != inv.Role || inv.CreatedBy != alice.ID {
				t.Errorf("unexpected invitation %+v", inv)
			}
		}
		return nil
	})
	data := e.dump(t)
	for _, code := range codes {
		for _, form := range []string{code, strings.ToUpper(code)} {
			if bytes.Contains(data, []byte(form)) {
				t.Fatalf("the database file holds invitation code %q in clear", form)
			}
		}
		// Make sure the scan would have found it: the hash is in the file.
		if !bytes.Contains(data, []byte(HashInvitationCode(code))) {
			t.Fatalf("hash of %q not found in the file: the scan proves nothing", code)
		}
	}
}

func TestRevokeInvitation(t *testing.T) {
	e := newTestEnv(t)
	alice, bob := e.account(t, "alice"), e.account(t, "bob")
	john := e.recordOwnedBy(t, "john", alice)
	anna := e.recordOwnedBy(t, "anna", bob)
	code := e.invite(t, john, RoleViewer, alice, time.Hour)
	hash := HashInvitationCode(code)

	// Bob, owner of another record, cannot revoke John's invitation through it.
	err := e.store.Update(context.Background(), func(tx Tx) error { return tx.RevokeInvitation(anna.ID, hash) })
	wantErr(t, err, ErrNotFound)

	e.update(t, func(tx Tx) error { return tx.RevokeInvitation(john.ID, hash) })
	_, err = e.accept(code, bob)
	wantErr(t, err, ErrNotFound)
	e.view(t, func(tx Tx) error {
		invs, err := tx.Invitations(john.ID)
		if err != nil || len(invs) != 0 {
			t.Errorf("Invitations after revoke = %v, %v", invs, err)
		}
		return nil
	})
}

func TestDeleteRecordRemovesInvitations(t *testing.T) {
	e := newTestEnv(t)
	alice, bob := e.account(t, "alice"), e.account(t, "bob")
	r := e.recordOwnedBy(t, "john", alice)
	code := e.invite(t, r, RoleManager, alice, time.Hour)
	e.update(t, func(tx Tx) error { return tx.DeleteRecord(r.ID) })
	_, err := e.accept(code, bob)
	wantErr(t, err, ErrNotFound)
	// A new record under the same slug does not inherit the old invitation.
	e.recordOwnedBy(t, "john", alice)
	_, err = e.accept(code, bob)
	wantErr(t, err, ErrNotFound)
}
