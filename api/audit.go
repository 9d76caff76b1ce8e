package api

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/pfrgateway/caddy-pfr/fhir"
)

// serveAudit answers GET /pfr/v1/records/{slug}/audit: the record's access
// log as a Bundle of AuditEvent, newest first (owners and managers).
func (a *API) serveAudit(w http.ResponseWriter, r *http.Request, c *Call) error {
	if a.cfg.Audit == nil {
		return fhir.Errorf(http.StatusNotFound, fhir.CodeNotFound, "the access log is not enabled on this gateway")
	}
	rec, err := a.managedRecord(r, c, "only owners and managers read the access log")
	if err != nil {
		return err
	}
	q := r.URL.Query()
	count := 100
	if c := q.Get("_count"); c != "" {
		n, err := strconv.Atoi(c)
		if err != nil || n < 1 || n > 1000 {
			return fhir.Errorf(http.StatusBadRequest, fhir.CodeValue, "_count must be 1 to 1000")
		}
		count = n
	}
	var since time.Time
	if s := q.Get("_since"); s != "" {
		t, err := time.Parse(time.RFC3339, strings.ReplaceAll(s, " ", "+"))
		if err != nil {
			return fhir.Errorf(http.StatusBadRequest, fhir.CodeValue, "_since must be an instant such as 2026-01-31T12:00:00Z")
		}
		since = t
	}
	bundle, err := a.cfg.Audit.Bundle(r.Context(), rec.ID, since, count)
	if err != nil {
		return fhir.Errorf(http.StatusServiceUnavailable, fhir.CodeTransient, "reading the access log failed").WithCause(err)
	}
	fhir.WriteJSON(w, http.StatusOK, bundle)
	return nil
}
