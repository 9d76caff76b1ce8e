package gateway

import (
	"net/http"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/backend"
	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/tenancy"
)

// request is one request to a record as the pipeline knows it. It is built
// once, at the top of the FHIR pipeline (serveFHIR fills it in as it
// learns: the record and the caller's role, the identity and its grants,
// the interaction), and every step takes it instead of a list of what it
// holds. The gateway's own work on a record (a pick-up, an import, an
// export page, the consent page's Patient) builds one with own.
type request struct {
	// r is the client's request, or the request whose context, host and
	// address the gateway's own calls upstream carry.
	r *http.Request
	// up reaches the upstream (guarded: see upstream_guard.go).
	up Upstream
	// rec is the record; base its public FHIR base URL as the client
	// reached it (scheme, host, port, FHIR path): answers are rewritten
	// to it, and the record's own absolute references start with it.
	rec  *tenancy.Record
	base string
	// rest is the request's path below the FHIR base ("" for the base).
	rest string
	// id is the caller: nil for an anonymous caller and for the gateway's
	// own work. role is its role in the record ("" for none), grants what
	// its token's scopes (or Config.ScopesWhenAbsent) allow.
	id     *auth.Identity
	role   tenancy.Role
	grants auth.Grants
	// in is what the request asks for, once classified.
	in interaction
	// bases is owner's Bases, made once a request.
	bases []string
}

// own is the request of the gateway's own work on rec, on behalf of the
// request r (whose context the calls upstream carry), answering to base.
func own(r *http.Request, up Upstream, rec *tenancy.Record, base string) *request {
	return &request{r: r, up: up, rec: rec, base: base}
}

// owner is who the record's writes must belong to.
func (rq *request) owner() fhir.Owner {
	if rq.bases == nil {
		rq.bases = []string{rq.base}
	}
	return fhir.Owner{PatientID: rq.rec.PatientID, Bases: rq.bases}
}

// target is the record's partition, as the backend maps it upstream.
func (rq *request) target() backend.Target { return target(rq.rec) }
