package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/pfrgateway/caddy-pfr/auth"
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

// withMembership runs fn in a transaction with the record at slug and the
// caller's account and membership. Callers that are not members get the
// same 404 as for a slug that does not exist.
func (g *Gateway) withMembership(r *http.Request, id *auth.Identity, slug string, write bool,
	fn func(tx tenancy.Tx, rec *tenancy.Record, acct *tenancy.Account, m *tenancy.Membership) error) error {
	run := g.cfg.Tenancy.View
	if write {
		run = g.cfg.Tenancy.Update
	}
	err := run(r.Context(), func(tx tenancy.Tx) error {
		rec, err := tx.RecordBySlug(slug)
		if err != nil {
			return err
		}
		acct, err := tx.AccountByIdentity(id.Issuer, id.Subject)
		if err != nil {
			return err
		}
		m, err := tx.Membership(rec.ID, acct.ID)
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

var errOwnerOnly = fhir.Errorf(http.StatusForbidden, fhir.CodeForbidden, "only an owner of the record may do this")

func (g *Gateway) listMembers(w http.ResponseWriter, r *http.Request, id *auth.Identity, slug string) {
	var out []MemberView
	err := g.withMembership(r, id, slug, false, func(tx tenancy.Tx, rec *tenancy.Record, _ *tenancy.Account, m *tenancy.Membership) error {
		if !m.Role.CanWrite() {
			return fhir.Errorf(http.StatusForbidden, fhir.CodeForbidden, "viewers may not list members")
		}
		ms, err := tx.Memberships(rec.ID)
		if err != nil {
			return err
		}
		for _, mm := range ms {
			a, err := tx.Account(mm.AccountID)
			if err != nil {
				return err
			}
			out = append(out, MemberView{AccountID: a.ID, Issuer: a.Issuer, Subject: a.Subject, Role: mm.Role, Created: mm.Created})
		}
		return nil
	})
	if err != nil {
		fhir.WriteError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"members": out})
}

// putMember changes the role of an existing member (owner only). New
// members join through invitations, which prove the invitee's identity.
func (g *Gateway) putMember(w http.ResponseWriter, r *http.Request, id *auth.Identity, slug, accountID string) {
	var body struct {
		Role string `json:"role"`
	}
	if err := decodeSmallJSON(w, r, &body); err != nil {
		fhir.WriteError(w, err)
		return
	}
	role, perr := tenancy.ParseRole(body.Role)
	if perr != nil {
		fhir.WriteError(w, fhir.Errorf(http.StatusBadRequest, fhir.CodeValue, "role must be owner, manager or viewer").WithExpression("role"))
		return
	}
	var out MemberView
	var changed *tenancy.Record
	err := g.withMembership(r, id, slug, true, func(tx tenancy.Tx, rec *tenancy.Record, _ *tenancy.Account, m *tenancy.Membership) error {
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
		a, err := tx.Account(accountID)
		if err != nil {
			return err
		}
		out = MemberView{AccountID: a.ID, Issuer: a.Issuer, Subject: a.Subject, Role: role, Created: cur.Created}
		return nil
	})
	if err != nil {
		fhir.WriteError(w, err)
		return
	}
	g.auditAction(r, changed, id, http.StatusOK, "U", "member-change", "", fmt.Sprintf("account %s is now %s", out.AccountID, out.Role))
	writeJSON(w, http.StatusOK, out)
}

// deleteMember removes a member: owners remove anyone, anyone removes
// themselves; the last owner stays.
func (g *Gateway) deleteMember(w http.ResponseWriter, r *http.Request, id *auth.Identity, slug, accountID string) {
	var changed *tenancy.Record
	err := g.withMembership(r, id, slug, true, func(tx tenancy.Tx, rec *tenancy.Record, acct *tenancy.Account, m *tenancy.Membership) error {
		if !m.Role.CanManage() && acct.ID != accountID {
			return errOwnerOnly
		}
		changed = rec
		return tx.DeleteMembership(rec.ID, accountID)
	})
	if err != nil {
		fhir.WriteError(w, err)
		return
	}
	g.auditAction(r, changed, id, http.StatusNoContent, "D", "member-change", "", "account "+accountID+" removed")
	w.WriteHeader(http.StatusNoContent)
}

// createInvitation makes a single-use code that gives its acceptor a role
// in the record; role owner transfers the record (owner only).
func (g *Gateway) createInvitation(w http.ResponseWriter, r *http.Request, id *auth.Identity, slug string) {
	var body struct {
		Role string `json:"role"`
		TTL  string `json:"ttl"`
	}
	if err := decodeSmallJSON(w, r, &body); err != nil {
		fhir.WriteError(w, err)
		return
	}
	role, perr := tenancy.ParseRole(body.Role)
	if perr != nil {
		fhir.WriteError(w, fhir.Errorf(http.StatusBadRequest, fhir.CodeValue, "role must be owner, manager or viewer").WithExpression("role"))
		return
	}
	ttl := defaultInvitationTTL
	if body.TTL != "" {
		d, err := time.ParseDuration(body.TTL)
		if err != nil || d <= 0 {
			fhir.WriteError(w, fhir.Errorf(http.StatusBadRequest, fhir.CodeValue, "ttl must be a positive Go duration such as 72h").WithExpression("ttl"))
			return
		}
		ttl = d
	}
	var code string
	err := g.withMembership(r, id, slug, true, func(tx tenancy.Tx, rec *tenancy.Record, acct *tenancy.Account, m *tenancy.Membership) error {
		if !m.Role.CanManage() {
			return errOwnerOnly
		}
		var err error
		code, err = tx.CreateInvitation(rec.ID, role, acct.ID, ttl)
		return err
	})
	if err != nil {
		fhir.WriteError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{
		"code": code, "role": role, "expires": time.Now().Add(ttl).UTC(),
		"accept": apiPrefix + "invitations/" + code + "/accept",
	})
}

func (g *Gateway) acceptInvitation(w http.ResponseWriter, r *http.Request, id *auth.Identity, code string) {
	var out RecordView
	var joined *tenancy.Record
	err := g.cfg.Tenancy.Update(r.Context(), func(tx tenancy.Tx) error {
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
		out = g.view(r, rec, m.Role)
		joined = rec
		return nil
	})
	if err != nil {
		fhir.WriteError(w, managementError(err, ""))
		return
	}
	g.auditAction(r, joined, id, http.StatusOK, "U", "member-change", "", "joined as "+string(out.Role)+" by invitation")
	writeJSON(w, http.StatusOK, out)
}

// decodeSmallJSON decodes a small management request body into v.
func decodeSmallJSON(w http.ResponseWriter, r *http.Request, v any) error {
	return decodeJSONBody(w, r, 64<<10, v)
}

// decodeJSONBody decodes a management request body of at most limit bytes
// into v, refusing unknown fields.
func decodeJSONBody(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		return fhir.Errorf(http.StatusRequestEntityTooLarge, fhir.CodeTooCostly, "request body too large (max %d bytes)", limit)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fhir.Errorf(http.StatusBadRequest, fhir.CodeStructure, "invalid JSON body: %v", err)
	}
	return nil
}
