package dopu

import (
	"errors"
	"fmt"
	"net/http"

	"go.uber.org/zap"

	"github.com/pfrgateway/caddy-pfr/fhir"
)

// HTTPError turns an error of the Service into a *fhir.Error with the
// status a client should see: ErrNotFound 404; ErrNotPending,
// ErrPickupInProgress and ErrLeaseLost 409. A *fhir.Error is returned as
// it is, anything else becomes a 500 that does not leak its cause.
func HTTPError(err error) *fhir.Error {
	var fe *fhir.Error
	switch {
	case errors.As(err, &fe):
		return fe
	case errors.Is(err, ErrNotFound):
		return fhir.Errorf(http.StatusNotFound, fhir.CodeNotFound, "no such drop-off").WithCause(err)
	case errors.Is(err, ErrNotPending):
		return fhir.Errorf(http.StatusConflict, fhir.CodeConflict, "the drop-off was already picked up, rejected or has expired").WithCause(err)
	case errors.Is(err, ErrPickupInProgress), errors.Is(err, ErrLeaseLost):
		return fhir.Errorf(http.StatusConflict, fhir.CodeConflict, "a pick-up of this drop-off is in progress").WithCause(err)
	}
	return fhir.AsError(err)
}

// ReceiptOutcome is the OperationOutcome of a 202 Accepted drop-off: it
// tells the sender the Bundle was dropped off (not written to the record),
// gives the receipt and where to follow its status.
func ReceiptOutcome(r *Receipt, statusURL string) *fhir.OperationOutcome {
	msg := fmt.Sprintf("The Bundle was dropped off for the owner of this record to review; it is not in the record yet. Receipt %s; status %s", r.ID, r.Status)
	if r.Duplicate {
		msg = fmt.Sprintf("The same Bundle was already dropped off for this record. Receipt %s; status %s", r.ID, r.Status)
	}
	if statusURL != "" {
		msg += "; follow it at " + statusURL
	}
	return fhir.NewOutcome(fhir.SeverityInformation, fhir.CodeInformational, msg)
}

// StatusParameters is the sender's view of a receipt, as a FHIR
// Parameters resource: the receipt id, its status and, when there is one,
// the reason the sender may see (see Service.StatusWithReason), nothing
// else.
func StatusParameters(receiptID string, status Status, reason string) map[string]any {
	params := []any{
		map[string]any{"name": "receipt", "valueString": receiptID},
		map[string]any{"name": "status", "valueCode": string(status)},
	}
	if reason != "" {
		params = append(params, map[string]any{"name": "reason", "valueString": reason})
	}
	return map[string]any{"resourceType": "Parameters", "parameter": params}
}

// StatusHandler serves the sender's status page: GET answers
// StatusParameters for the receipt that receiptID reads from the request,
// 404 for unknown receipts. It reveals nothing but the status and its
// reason.
func (s *Service) StatusHandler(receiptID func(*http.Request) string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			fhir.WriteError(w, fhir.Errorf(http.StatusMethodNotAllowed, fhir.CodeNotSupported, "use GET"))
			return
		}
		id := receiptID(r)
		st, reason, err := s.StatusWithReason(r.Context(), id)
		if err != nil {
			if !errors.Is(err, ErrNotFound) {
				s.opts.Logger.Error("reading a drop-off status", zap.Error(err))
			}
			fhir.WriteError(w, HTTPError(err))
			return
		}
		fhir.WriteJSON(w, http.StatusOK, StatusParameters(id, st, reason))
	})
}
