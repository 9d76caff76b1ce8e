package api

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/tenancy"
)

// defaultInvitationTTL is how long an invitation code works unless the
// request says otherwise.
const defaultInvitationTTL = 7 * 24 * time.Hour

// MemberView is a membership as the management API shows it.
type MemberView struct {
	AccountID string       `json:"accountId"`
	Issuer    string       `json:"issuer"`
	Subject   string       `json:"subject"`
	Role      tenancy.Role `json:"role"`
	Created   time.Time    `json:"created"`
}

// withMembership runs fn in a transaction with the record at {slug} and the
// caller's account and membership. Callers that are not members get the
// same 404 as for a slug that does not exist.
func (a *API) withMembership(r *http.Request, c *Call, write bool,
	fn func(tx tenancy.Tx, rec *tenancy.Record, acct *tenancy.Account, m *tenancy.Membership) error) error {
	slug, id := r.PathValue("slug"), c.ID
	run := a.cfg.Tenancy.View
	if write {
		run = a.cfg.Tenancy.Update
	}
	err := run(r.Context(), func(tx tenancy.Tx) error {
		rec, err := tx.RecordBySlug(slug)
		if err != nil {
			return err
		}
		acct, m, err := tenancy.Member(tx, rec.ID, id.Issuer, id.Subject)
		if err != nil {
			return err
		}
		if rec.Status != tenancy.StatusActive {
			return tenancy.ErrNotFound
		}
		return fn(tx, rec, acct, m)
	})
	return managementError(err, slug)
}

// managementError maps tenancy errors onto OperationOutcomes.
func managementError(err error, slug string) error {
	var fe *fhir.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &fe):
		return fe
	case errors.Is(err, tenancy.ErrNotFound):
		return fhir.Errorf(http.StatusNotFound, fhir.CodeNotFound, "no record %q that you can access, or no such member or invitation", slug)
	case errors.Is(err, tenancy.ErrLastOwner):
		return fhir.Errorf(http.StatusConflict, fhir.CodeBusinessRule, "a record must keep at least one owner")
	case errors.Is(err, tenancy.ErrInvitationExpired):
		return fhir.Errorf(http.StatusGone, fhir.CodeDeleted, "the invitation has expired")
	case errors.Is(err, tenancy.ErrInvitationUsed):
		return fhir.Errorf(http.StatusConflict, fhir.CodeConflict, "the invitation was already used")
	case errors.Is(err, tenancy.ErrNotPermitted):
		return fhir.Errorf(http.StatusForbidden, fhir.CodeForbidden, "not permitted: %v", err)
	case errors.Is(err, tenancy.ErrInvalid):
		return fhir.Errorf(http.StatusBadRequest, fhir.CodeValue, "%v", err)
	}
	return fhir.Errorf(http.StatusServiceUnavailable, fhir.CodeTransient, "the record store failed").WithCause(err)
}

// managedRecord returns the record at {slug} when the caller is one of its
// owners or managers; viewers get a 403 saying refused, strangers the 404
// of withMembership.
func (a *API) managedRecord(r *http.Request, c *Call, refused string) (*tenancy.Record, error) {
	var rec *tenancy.Record
	err := a.withMembership(r, c, false, func(_ tenancy.Tx, rr *tenancy.Record, _ *tenancy.Account, m *tenancy.Membership) error {
		if !m.Role.CanWrite() {
			return fhir.Errorf(http.StatusForbidden, fhir.CodeForbidden, "%s", refused)
		}
		rec = rr
		return nil
	})
	return rec, err
}

var errOwnerOnly = fhir.Errorf(http.StatusForbidden, fhir.CodeForbidden, "only an owner of the record may do this")

// listMembers answers GET /pfr/v1/records/{slug}/members (owners and managers).
func (a *API) listMembers(w http.ResponseWriter, r *http.Request, c *Call) error {
	var out []MemberView
	err := a.withMembership(r, c, false, func(tx tenancy.Tx, rec *tenancy.Record, _ *tenancy.Account, m *tenancy.Membership) error {
		if !m.Role.CanWrite() {
			return fhir.Errorf(http.StatusForbidden, fhir.CodeForbidden, "viewers may not list members")
		}
		ms, err := tx.Memberships(rec.ID)
		if err != nil {
			return err
		}
		for _, mm := range ms {
			acct, err := tx.Account(mm.AccountID)
			if err != nil {
				return err
			}
			out = append(out, MemberView{AccountID: acct.ID, Issuer: acct.Issuer, Subject: acct.Subject, Role: mm.Role, Created: mm.Created})
		}
		return nil
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"members": out})
}

// putMember changes the role of an existing member (owner only). New
// members join through invitations, which prove the invitee's identity.
func (a *API) putMember(w http.ResponseWriter, r *http.Request, c *Call) error {
	accountID := r.PathValue("account")
	var body struct {
		Role string `json:"role"`
	}
	if err := decodeSmallJSON(w, r, &body); err != nil {
		return err
	}
	role, perr := tenancy.ParseRole(body.Role)
	if perr != nil {
		return fhir.Errorf(http.StatusBadRequest, fhir.CodeValue, "role must be owner, manager or viewer").WithExpression("role")
	}
	var out MemberView
	var changed *tenancy.Record
	err := a.withMembership(r, c, true, func(tx tenancy.Tx, rec *tenancy.Record, _ *tenancy.Account, m *tenancy.Membership) error {
		if !m.Role.CanManage() {
			return errOwnerOnly
		}
		changed = rec
		cur, err := tx.Membership(rec.ID, accountID)
		if err != nil {
			return err
		}
		cur.Role = role
		if err := tx.SetMembership(*cur); err != nil {
			return err
		}
		acct, err := tx.Account(accountID)
		if err != nil {
			return err
		}
		out = MemberView{AccountID: acct.ID, Issuer: acct.Issuer, Subject: acct.Subject, Role: role, Created: cur.Created}
		return nil
	})
	if err != nil {
		return err
	}
	a.gw.AuditAction(r, changed, c.ID, http.StatusOK, "U", "member-change", "", fmt.Sprintf("account %s is now %s", out.AccountID, out.Role))
	return writeJSON(w, http.StatusOK, out)
}

// deleteMember removes a member: owners remove anyone, anyone removes
// themselves; the last owner stays.
func (a *API) deleteMember(w http.ResponseWriter, r *http.Request, c *Call) error {
	accountID := r.PathValue("account")
	var changed *tenancy.Record
	err := a.withMembership(r, c, true, func(tx tenancy.Tx, rec *tenancy.Record, acct *tenancy.Account, m *tenancy.Membership) error {
		if !m.Role.CanManage() && acct.ID != accountID {
			return errOwnerOnly
		}
		changed = rec
		return tx.DeleteMembership(rec.ID, accountID)
	})
	if err != nil {
		return err
	}
	a.gw.AuditAction(r, changed, c.ID, http.StatusNoContent, "D", "member-change", "", "account "+accountID+" removed")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// createInvitation makes a single-use code that gives its acceptor a role
// in the record; role owner transfers the record (owner only).
func (a *API) createInvitation(w http.ResponseWriter, r *http.Request, c *Call) error {
	var body struct {
		Role string `json:"role"`
		TTL  string `json:"ttl"`
	}
	if err := decodeSmallJSON(w, r, &body); err != nil {
		return err
	}
	role, perr := tenancy.ParseRole(body.Role)
	if perr != nil {
		return fhir.Errorf(http.StatusBadRequest, fhir.CodeValue, "role must be owner, manager or viewer").WithExpression("role")
	}
	ttl := defaultInvitationTTL
	if body.TTL != "" {
		d, err := time.ParseDuration(body.TTL)
		if err != nil || d <= 0 {
			return fhir.Errorf(http.StatusBadRequest, fhir.CodeValue, "ttl must be a positive Go duration such as 72h").WithExpression("ttl")
		}
		ttl = d
	}
	var code string
	err := a.withMembership(r, c, true, func(tx tenancy.Tx, rec *tenancy.Record, acct *tenancy.Account, m *tenancy.Membership) error {
		if !m.Role.CanManage() {
			return errOwnerOnly
		}
		var err error
		code, err = tx.CreateInvitation(rec.ID, role, acct.ID, ttl)
		return err
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, map[string]any{
		"code": code, "role": role, "expires": time.Now().Add(ttl).UTC(),
		"accept": Prefix + "invitations/" + code + "/accept",
	})
}

// acceptInvitation answers POST /pfr/v1/invitations/{code}/accept.
func (a *API) acceptInvitation(w http.ResponseWriter, r *http.Request, c *Call) error {
	code, id := r.PathValue("code"), c.ID
	var out RecordView
	var joined *tenancy.Record
	err := a.cfg.Tenancy.Update(r.Context(), func(tx tenancy.Tx) error {
		acct, err := tx.EnsureAccount(id.Issuer, id.Subject)
		if err != nil {
			return err
		}
		m, err := tx.AcceptInvitation(code, acct.ID)
		if err != nil {
			return err
		}
		rec, err := tx.Record(m.RecordID)
		if err != nil {
			return err
		}
		out = a.view(r, rec, m.Role)
		joined = rec
		return nil
	})
	if err != nil {
		return managementError(err, "")
	}
	a.gw.AuditAction(r, joined, id, http.StatusOK, "U", "member-change", "", "joined as "+string(out.Role)+" by invitation")
	return writeJSON(w, http.StatusOK, out)
}
