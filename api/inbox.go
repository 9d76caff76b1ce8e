package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"go.uber.org/zap"

	"github.com/pfrgateway/caddy-pfr/dopu"
	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/tenancy"
)

// InboxItem is a drop-off as the inbox shows it: its summary and how well
// its patient matches the record's.
type InboxItem struct {
	dopu.Summary
	Match *dopu.Match `json:"match,omitempty"`
}

// inboxRecord resolves the record of an inbox request; only owners and
// managers see the inbox.
func (a *API) inboxRecord(r *http.Request, c *Call) (*tenancy.Record, error) {
	if a.cfg.DOPU == nil {
		return nil, fhir.Errorf(http.StatusNotFound, fhir.CodeNotFound, "drop-offs are not enabled on this gateway")
	}
	return a.managedRecord(r, c, "only owners and managers see the drop-off inbox")
}

// listDropOffs answers GET /pfr/v1/records/{slug}/dropoffs.
func (a *API) listDropOffs(w http.ResponseWriter, r *http.Request, c *Call) error {
	rec, err := a.inboxRecord(r, c)
	if err != nil {
		return err
	}
	list, err := a.cfg.DOPU.List(r.Context(), rec.ID)
	if err != nil {
		return dopu.HTTPError(err)
	}
	patient, perr := a.inboxPatient(r, c, rec)
	items := make([]InboxItem, 0, len(list))
	for _, s := range list {
		item := InboxItem{Summary: s}
		if s.Status == dopu.StatusPending && perr == nil {
			m := s.MatchAgainst(dopu.SummarizePatient(patient))
			item.Match = &m
		}
		items = append(items, item)
	}
	out := map[string]any{"dropoffs": items}
	if perr != nil {
		out["matchUnavailable"] = perr.Error()
	}
	return writeJSON(w, http.StatusOK, out)
}

// inboxPatient reads the record's Patient for the inbox's match scores,
// waiting at most Config.InboxTimeout: the inbox is the gateway's own
// state and answers, without the scores, while the upstream is down or
// hung. The error says why the scores are missing.
func (a *API) inboxPatient(r *http.Request, c *Call, rec *tenancy.Record) (map[string]any, error) {
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.InboxTimeout)
	defer cancel()
	patient, _, err := a.gw.RecordPatient(r.WithContext(ctx), c.Up, rec)
	if err != nil {
		a.log.Warn("inbox without match scores", zap.String("record", rec.ID), zap.Error(err))
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, fmt.Errorf("the record's Patient could not be read from the upstream FHIR server within %s; match scores are missing", a.cfg.InboxTimeout)
		}
		return nil, fmt.Errorf("the record's Patient could not be read from the upstream FHIR server (%s); match scores are missing", fhir.AsError(err).Issues[0].Diagnostics)
	}
	return patient, nil
}

// getDropOff answers GET /pfr/v1/records/{slug}/dropoffs/{dropoff}.
func (a *API) getDropOff(w http.ResponseWriter, r *http.Request, c *Call) error {
	rec, err := a.inboxRecord(r, c)
	if err != nil {
		return err
	}
	sum, bundle, err := a.cfg.DOPU.Get(r.Context(), rec.ID, r.PathValue("dropoff"))
	if err != nil {
		return dopu.HTTPError(err)
	}
	out := map[string]any{"summary": sum}
	if bundle != nil {
		out["bundle"] = json.RawMessage(bundle)
		if patient, err := a.inboxPatient(r, c, rec); err == nil {
			out["match"] = sum.MatchAgainst(dopu.SummarizePatient(patient))
		} else {
			out["matchUnavailable"] = err.Error()
		}
	}
	return writeJSON(w, http.StatusOK, out)
}

// rejectDropOff answers POST /pfr/v1/records/{slug}/dropoffs/{dropoff}/reject.
func (a *API) rejectDropOff(w http.ResponseWriter, r *http.Request, c *Call) error {
	dropID := r.PathValue("dropoff")
	var body struct {
		Reason       string `json:"reason"`
		SenderReason string `json:"senderReason"`
	}
	if err := decodeOptionalJSON(w, r, &body); err != nil {
		return err
	}
	rec, err := a.inboxRecord(r, c)
	if err != nil {
		return err
	}
	if err := a.gw.UndoInterruptedImport(r, c.Up, rec, dropID); err != nil {
		return err
	}
	if err := a.cfg.DOPU.RejectTelling(r.Context(), rec.ID, dropID, body.Reason, body.SenderReason); err != nil {
		return dopu.HTTPError(err)
	}
	a.gw.AuditAction(r, rec, c.ID, http.StatusOK, "E", "reject", "", "dropoff "+dropID)
	a.log.Info("drop-off rejected", zap.String("record", rec.ID), zap.String("dropoff", dropID), zap.String("sub", c.ID.Subject))
	return writeJSON(w, http.StatusOK, map[string]any{"dropoff": dropID, "status": dopu.StatusRejected})
}

// pickUp answers POST /pfr/v1/records/{slug}/dropoffs/{dropoff}/pickup: the
// pipeline imports the drop-off into the record (gateway.Gateway.PickUp).
func (a *API) pickUp(w http.ResponseWriter, r *http.Request, c *Call) error {
	dropID := r.PathValue("dropoff")
	var body struct {
		Force         bool               `json:"force"`
		OtherPatients dopu.OtherPatients `json:"otherPatients"`
	}
	if err := decodeOptionalJSON(w, r, &body); err != nil {
		return err
	}
	switch body.OtherPatients {
	case "", dopu.OtherPatientsSkip, dopu.OtherPatientsRefuse:
	default:
		return fhir.Errorf(http.StatusBadRequest, fhir.CodeValue, "otherPatients must be skip or refuse").WithExpression("otherPatients")
	}
	rec, err := a.inboxRecord(r, c)
	if err != nil {
		return err
	}
	res, err := a.gw.PickUp(r, c.Up, rec, dropID, dopu.PrepareOptions{Force: body.Force, OtherPatients: body.OtherPatients})
	if err != nil {
		return err
	}
	a.gw.AuditAction(r, rec, c.ID, http.StatusOK, "C", "pickup", "", fmt.Sprintf("dropoff %s: %d resources", dropID, res.Imported))
	a.log.Info("drop-off picked up", zap.String("record", rec.ID), zap.String("dropoff", dropID),
		zap.Int("imported", res.Imported), zap.Bool("resumed", res.Resumed), zap.String("sub", c.ID.Subject))
	return writeJSON(w, http.StatusOK, res)
}

// receipt answers /pfr/v1/receipts/{receipt}, the sender's status
// question: pending, picked-up, rejected or expired, nothing else. It
// needs no token: the receipt id is the secret.
func (a *API) receipt(w http.ResponseWriter, r *http.Request, _ *Call) error {
	if a.cfg.DOPU == nil {
		return fhir.Errorf(http.StatusNotFound, fhir.CodeNotFound, "drop-offs are not enabled on this gateway")
	}
	a.cfg.DOPU.StatusHandler(func(r *http.Request) string { return r.PathValue("receipt") }).ServeHTTP(w, r)
	return nil
}
