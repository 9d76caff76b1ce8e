package gateway

import (
	"net/http"
	"time"

	"github.com/pfrgateway/caddy-pfr/audit"
	"github.com/pfrgateway/caddy-pfr/auth"
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
