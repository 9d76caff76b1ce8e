package gateway

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/pfrgateway/caddy-pfr/audit"
	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/tenancy"
)

// auditEntry collects, while a request is served, what its audit event
// says; the event is recorded when the request ends, with the status sent.
type auditEntry struct {
	rec         *tenancy.Record
	id          *auth.Identity
	action      string
	interaction string
	target      string
	detail      string
}

// fromInteraction fills the entry from a classified FHIR request.
func (a *auditEntry) fromInteraction(in interaction) {
	switch in.kind {
	case auth.InteractionCreate:
		a.action = "C"
	case auth.InteractionUpdate, auth.InteractionPatch:
		a.action = "U"
	case auth.InteractionDelete:
		a.action = "D"
	case auth.InteractionOperation:
		a.action = "E"
	default:
		a.action = "R"
	}
	a.interaction = string(in.kind)
	switch in.kind {
	case auth.InteractionSearch:
		a.interaction = "search-type"
	case auth.InteractionOperation:
		a.interaction = "operation"
		a.detail = in.opName
	}
	a.target = in.typ
	if in.id != "" {
		a.target += "/" + in.id
	}
	if in.bundle {
		a.action, a.interaction, a.target = "E", "transaction", ""
	}
}

// statusRecorder remembers the status a response was sent with.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Flush passes flushes through for streamed responses.
func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// audit records a when the request touched a record.
func (g *Gateway) audit(r *http.Request, status int, a *auditEntry) {
	if g.cfg.Audit == nil || a.rec == nil || a.interaction == "" {
		return
	}
	e := audit.Event{
		Time: time.Now(), RecordID: a.rec.ID, SourceIP: g.clientIP(r),
		Action: a.action, Interaction: a.interaction, Target: a.target, Status: status, Detail: a.detail,
	}
	if a.id != nil {
		e.Issuer, e.Subject, e.ClientID = a.id.Issuer, a.id.Subject, a.id.ClientID
	}
	g.cfg.Audit.Record(e)
}

// auditAction records a management action on rec, done by id.
func (g *Gateway) auditAction(r *http.Request, rec *tenancy.Record, id *auth.Identity, status int, action, interaction, target, detail string) {
	g.audit(r, status, &auditEntry{rec: rec, id: id, action: action, interaction: interaction, target: target, detail: detail})
}

// serveAudit answers GET /pfr/v1/records/{slug}/audit: the record's access
// log as a Bundle of AuditEvent, newest first (owners and managers).
func (g *Gateway) serveAudit(w http.ResponseWriter, r *http.Request, id *auth.Identity, slug string) {
	if g.cfg.Audit == nil {
		fhir.WriteError(w, fhir.Errorf(http.StatusNotFound, fhir.CodeNotFound, "the access log is not enabled on this gateway"))
		return
	}
	var rec *tenancy.Record
	err := g.withMembership(r, id, slug, false, func(_ tenancy.Tx, rr *tenancy.Record, _ *tenancy.Account, m *tenancy.Membership) error {
		if !m.Role.CanWrite() {
			return fhir.Errorf(http.StatusForbidden, fhir.CodeForbidden, "only owners and managers read the access log")
		}
		rec = rr
		return nil
	})
	if err != nil {
		fhir.WriteError(w, err)
		return
	}
	q := r.URL.Query()
	count := 100
	if c := q.Get("_count"); c != "" {
		n, err := strconv.Atoi(c)
		if err != nil || n < 1 || n > 1000 {
			fhir.WriteError(w, fhir.Errorf(http.StatusBadRequest, fhir.CodeValue, "_count must be 1 to 1000"))
			return
		}
		count = n
	}
	var since time.Time
	if s := q.Get("_since"); s != "" {
		t, err := time.Parse(time.RFC3339, strings.ReplaceAll(s, " ", "+"))
		if err != nil {
			fhir.WriteError(w, fhir.Errorf(http.StatusBadRequest, fhir.CodeValue, "_since must be an instant such as 2026-01-31T12:00:00Z"))
			return
		}
		since = t
	}
	bundle, err := g.cfg.Audit.Bundle(r.Context(), rec.ID, since, count)
	if err != nil {
		fhir.WriteError(w, fhir.Errorf(http.StatusServiceUnavailable, fhir.CodeTransient, "reading the access log failed").WithCause(err))
		return
	}
	fhir.WriteJSON(w, http.StatusOK, bundle)
}
