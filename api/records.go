package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/tenancy"
)

// maxCreateBody bounds a record-creation request (a Patient resource).
const maxCreateBody = 1 << 20

// DeleteConfirmHeader must carry the record's slug on a delete: deleting a
// record deletes the person's data upstream, and a typo must not do that.
const DeleteConfirmHeader = "X-PFR-Confirm-Delete"

// RecordView is a record as the management API shows it.
type RecordView struct {
	Slug         string       `json:"slug"`
	FHIRBase     string       `json:"fhirBase"`
	PatientID    string       `json:"patientId"`
	Role         tenancy.Role `json:"role"`
	Relationship string       `json:"relationship,omitempty"`
	Status       string       `json:"status"`
	Created      time.Time    `json:"created"`
}

func (a *API) view(r *http.Request, rec *tenancy.Record, role tenancy.Role) RecordView {
	return RecordView{
		Slug: rec.Slug, FHIRBase: a.gw.RecordBase(r, rec.Slug), PatientID: rec.PatientID, Role: role,
		Relationship: string(rec.Relationship), Status: string(rec.Status), Created: rec.Created,
	}
}

// listRecords answers GET /pfr/v1/records: the caller's active records.
func (a *API) listRecords(w http.ResponseWriter, r *http.Request, c *Call) error {
	views := []RecordView{}
	err := a.cfg.Tenancy.View(r.Context(), func(tx tenancy.Tx) error {
		acct, err := tx.AccountByIdentity(c.ID.Issuer, c.ID.Subject)
		if errors.Is(err, tenancy.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		list, err := tx.RecordsForAccount(acct.ID)
		if err != nil {
			return err
		}
		for _, rr := range list {
			if rr.Record.Status == tenancy.StatusActive {
				views = append(views, a.view(r, &rr.Record, rr.Role))
			}
		}
		return nil
	})
	if err != nil {
		return fhir.Errorf(http.StatusServiceUnavailable, fhir.CodeTransient, "listing records failed").WithCause(err)
	}
	return writeJSON(w, http.StatusOK, map[string]any{"records": views})
}

// getRecord answers GET /pfr/v1/records/{slug}. Not found and not a member
// look the same: slugs are not an oracle.
func (a *API) getRecord(w http.ResponseWriter, r *http.Request, c *Call) error {
	var out RecordView
	err := a.withMembership(r, c, false, func(_ tenancy.Tx, rec *tenancy.Record, _ *tenancy.Account, m *tenancy.Membership) error {
		out = a.view(r, rec, m.Role)
		return nil
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, out)
}

// createRequest is the body of POST /pfr/v1/records.
type createRequest struct {
	Slug         string          `json:"slug"`
	Relationship string          `json:"relationship"`
	Patient      json.RawMessage `json:"patient"`
}

// createRecord answers POST /pfr/v1/records: the pipeline provisions the
// partition and the Patient upstream, and the caller becomes the owner.
func (a *API) createRecord(w http.ResponseWriter, r *http.Request, c *Call) error {
	var req createRequest
	if err := decodeJSONBody(w, r, maxCreateBody, &req); err != nil {
		return err
	}
	if err := tenancy.ValidateSlug(req.Slug); err != nil {
		return fhir.Errorf(http.StatusBadRequest, fhir.CodeValue, "invalid slug: %v", err).WithExpression("slug")
	}
	if req.Relationship == "" {
		req.Relationship = string(tenancy.RelationshipSelf)
	}
	if !tenancy.Relationship(req.Relationship).Valid() {
		return fhir.Errorf(http.StatusBadRequest, fhir.CodeValue,
			"relationship must be one of self, parent, child, spouse, caregiver, other").WithExpression("relationship")
	}
	patient, ferr := a.gw.NewPatient(r, req.Slug, req.Patient)
	if ferr != nil {
		return ferr
	}
	rec, role, err := a.gw.Provision(r, c.Up, c.ID, req.Slug, req.Relationship, patient)
	if err != nil {
		return err
	}
	a.gw.AuditAction(r, rec, c.ID, http.StatusCreated, "C", "record-create", "Patient/"+rec.PatientID, "slug "+rec.Slug)
	w.Header().Set("Location", Prefix+"records/"+rec.Slug)
	return writeJSON(w, http.StatusCreated, a.view(r, rec, role))
}

// deleteRecord answers DELETE /pfr/v1/records/{slug} (owner only): the
// record is taken offline at once (status deleting: no certificate, no
// requests), its partition and data are removed upstream, its access log
// drop-offs and connected apps deleted, and then the record itself. If the upstream
// fails, the record stays in the deleting state and the owner may try
// again.
func (a *API) deleteRecord(w http.ResponseWriter, r *http.Request, c *Call) error {
	slug := r.PathValue("slug")
	var rec *tenancy.Record
	err := a.cfg.Tenancy.Update(r.Context(), func(tx tenancy.Tx) error {
		cur, err := tx.RecordBySlug(slug)
		if err != nil {
			return err
		}
		_, m, err := tenancy.Member(tx, cur.ID, c.ID.Issuer, c.ID.Subject)
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
		return managementError(err, slug)
	}
	// The removal must finish even if the client goes away.
	ctx := context.WithoutCancel(r.Context())
	if err := a.gw.Deprovision(r.WithContext(ctx), c.Up, rec); err != nil {
		return err
	}
	if a.cfg.Audit != nil {
		if err := a.cfg.Audit.DeleteRecord(ctx, rec.ID); err != nil {
			return fhir.Errorf(http.StatusServiceUnavailable, fhir.CodeTransient, "deleting the access log failed; try again").WithCause(err)
		}
	}
	if a.cfg.DOPU != nil {
		if _, err := a.cfg.DOPU.DeleteRecord(ctx, rec.ID); err != nil {
			return fhir.Errorf(http.StatusServiceUnavailable, fhir.CodeTransient, "deleting the drop-offs failed; try again").WithCause(err)
		}
	}
	if a.cfg.Authz != nil {
		if err := a.cfg.Authz.DeleteRecord(ctx, rec.ID); err != nil {
			return fhir.Errorf(http.StatusServiceUnavailable, fhir.CodeTransient, "deleting the connected apps failed; try again").WithCause(err)
		}
	}
	if err := a.cfg.Tenancy.Update(ctx, func(tx tenancy.Tx) error { return tx.DeleteRecord(rec.ID) }); err != nil {
		return fhir.Errorf(http.StatusServiceUnavailable, fhir.CodeTransient, "removing the record failed; try again").WithCause(err)
	}
	a.log.Info("record deleted", zap.String("slug", slug), zap.String("record", rec.ID),
		zap.String("iss", c.ID.Issuer), zap.String("sub", c.ID.Subject))
	w.WriteHeader(http.StatusNoContent)
	return nil
}
