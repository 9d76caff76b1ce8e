package gateway

import (
	"context"
	"net/http"

	"go.uber.org/zap"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/tenancy"
)

// DeleteConfirmHeader must carry the record's slug on a delete: deleting a
// record deletes the person's data upstream, and a typo must not do that.
const DeleteConfirmHeader = "X-PFR-Confirm-Delete"

// deleteRecord deletes a record (owner only): it is taken offline at once
// (status deleting: no certificate, no requests), its partition and data
// are removed upstream, its drop-offs deleted, and then the record itself.
// If the upstream fails, the record stays in the deleting state and the
// owner may try again.
func (g *Gateway) deleteRecord(w http.ResponseWriter, r *http.Request, up Upstream, id *auth.Identity, slug string) {
	var rec *tenancy.Record
	err := g.cfg.Tenancy.Update(r.Context(), func(tx tenancy.Tx) error {
		cur, err := tx.RecordBySlug(slug)
		if err != nil {
			return err
		}
		acct, err := tx.AccountByIdentity(id.Issuer, id.Subject)
		if err != nil {
			return err
		}
		m, err := tx.Membership(cur.ID, acct.ID)
		if err != nil {
			return err
		}
		if cur.Status != tenancy.StatusActive && cur.Status != tenancy.StatusDeleting {
			return tenancy.ErrNotFound
		}
		if !m.Role.CanManage() {
			return errOwnerOnly
		}
		if r.Header.Get(DeleteConfirmHeader) != slug {
			return fhir.Errorf(http.StatusPreconditionRequired, fhir.CodeBusinessRule,
				"deleting a record deletes its data: send the header %s: %s to confirm", DeleteConfirmHeader, slug)
		}
		cur.Status = tenancy.StatusDeleting
		rec = cur
		return tx.PutRecord(cur)
	})
	if err != nil {
		fhir.WriteError(w, managementError(err, slug))
		return
	}
	// The removal must finish even if the client goes away.
	ctx := context.WithoutCancel(r.Context())
	bounded, cancel := g.ownCallsDeadline(r.WithContext(ctx))
	err = g.cfg.Backend.Deprovision(bounded.Context(), adopting(bounded, up), target(rec))
	cancel()
	if err != nil {
		g.log.Error("deleting a record's partition upstream", zap.String("record", rec.ID), zap.Error(err))
		fhir.WriteError(w, upstreamStepError("the upstream could not delete the record's data; the record is offline, try again", err))
		return
	}
	if g.cfg.Audit != nil {
		if err := g.cfg.Audit.DeleteRecord(ctx, rec.ID); err != nil {
			fhir.WriteError(w, fhir.Errorf(http.StatusServiceUnavailable, fhir.CodeTransient, "deleting the access log failed; try again").WithCause(err))
			return
		}
	}
	if g.cfg.DOPU != nil {
		if _, err := g.cfg.DOPU.DeleteRecord(ctx, rec.ID); err != nil {
			fhir.WriteError(w, fhir.Errorf(http.StatusServiceUnavailable, fhir.CodeTransient, "deleting the drop-offs failed; try again").WithCause(err))
			return
		}
	}
	if g.cfg.Authz != nil {
		if err := g.cfg.Authz.DeleteRecord(ctx, rec.ID); err != nil {
			fhir.WriteError(w, fhir.Errorf(http.StatusServiceUnavailable, fhir.CodeTransient, "deleting the connected apps failed; try again").WithCause(err))
			return
		}
	}
	if err := g.cfg.Tenancy.Update(ctx, func(tx tenancy.Tx) error { return tx.DeleteRecord(rec.ID) }); err != nil {
		fhir.WriteError(w, fhir.Errorf(http.StatusServiceUnavailable, fhir.CodeTransient, "removing the record failed; try again").WithCause(err))
		return
	}
	g.log.Info("record deleted", zap.String("slug", slug), zap.String("record", rec.ID), zap.String("iss", id.Issuer), zap.String("sub", id.Subject))
	w.WriteHeader(http.StatusNoContent)
}
