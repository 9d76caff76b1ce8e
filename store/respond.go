package store

import (
	"net/http"
	"strconv"

	"github.com/pfrgateway/caddy-pfr/fhir"
)

// setVersionHeaders sets ETag and Last-Modified for rec.
func setVersionHeaders(h http.Header, rec *record) {
	h.Set("ETag", rec.etag())
	h.Set("Last-Modified", rec.LastUpdated.Format(http.TimeFormat))
}

// versionURL is the absolute URL of one version.
func (q *request) versionURL(rec *record) string {
	return q.base + "/" + rec.Type + "/" + rec.ID + "/_history/" + rec.versionID()
}

// writeRecord answers with a stored resource version.
func (q *request) writeRecord(status int, rec *record) {
	h := q.w.Header()
	setVersionHeaders(h, rec)
	h.Set("Content-Type", fhir.ContentType)
	h.Set("Content-Length", strconv.Itoa(len(rec.Body)))
	q.w.WriteHeader(status)
	if q.r.Method != http.MethodHead {
		_, _ = q.w.Write(rec.Body)
	}
}

// writeResult answers a write interaction per Prefer: return.
func (q *request) writeResult(res *writeResult, location bool) {
	h := q.w.Header()
	if res.Rec != nil {
		setVersionHeaders(h, res.Rec)
		if location && !res.Rec.Deleted {
			h.Set("Location", q.versionURL(res.Rec))
		}
	}
	switch {
	case res.Rec == nil || res.Rec.Deleted:
		// Deletes answer an OperationOutcome unless minimal was asked for.
		if preferReturn(q.r) == returnMinimal {
			q.w.WriteHeader(http.StatusNoContent)
			return
		}
		fhir.WriteJSON(q.w, res.Status, fhir.NewOutcome(fhir.SeverityInformation, fhir.CodeInformational, res.Message))
	case preferReturn(q.r) == returnMinimal:
		q.w.WriteHeader(res.Status)
	case preferReturn(q.r) == returnOperationOutcome:
		fhir.WriteJSON(q.w, res.Status, fhir.NewOutcome(fhir.SeverityInformation, fhir.CodeInformational, res.Message))
	default:
		q.writeRecord(res.Status, res.Rec)
	}
}
