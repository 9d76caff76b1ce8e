package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/tenancy"
)

// apiPrefix is where the management API lives on the apex host.
const apiPrefix = "/pfr/v1/"

// maxCreateBody bounds a record-creation request (a Patient resource).
const maxCreateBody = 1 << 20

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

// serveApex serves the management API. Its errors are OperationOutcomes, like
// everywhere else in the gateway.
func (g *Gateway) serveApex(w http.ResponseWriter, r *http.Request, up Upstream) {
	rest, ok := strings.CutPrefix(r.URL.Path, apiPrefix)
	if !ok {
		fhir.WriteError(w, fhir.Errorf(http.StatusNotFound, fhir.CodeNotFound,
			"not found; the management API is under %s", apiPrefix))
		return
	}
	if rest == "health" {
		g.serveHealth(w, r)
		return
	}
	// The drop-off receipt status is public: the receipt id is the secret.
	if rid, ok := strings.CutPrefix(rest, "receipts/"); ok && rid != "" && !strings.Contains(rid, "/") {
		g.serveReceipt(w, r, rid)
		return
	}
	id, err := g.authenticate(r, []string{origin(r)})
	if err != nil {
		fhir.WriteError(w, err)
		return
	}
	if id == nil {
		fhir.WriteError(w, fhir.Errorf(http.StatusUnauthorized, fhir.CodeLogin, "a bearer token is required").
			WithHeader("WWW-Authenticate", auth.WWWAuthenticate(origin(r), nil)))
		return
	}
	parts := strings.Split(strings.TrimSuffix(rest, "/"), "/")
	route := func(method string, allow string, handlers map[string]func()) {
		if h, ok := handlers[method]; ok {
			h()
			return
		}
		methodNotAllowed(w, allow)
	}
	switch {
	case len(parts) == 1 && parts[0] == "records":
		route(r.Method, "GET, POST", map[string]func(){
			http.MethodGet:  func() { g.listRecords(w, r, id) },
			http.MethodPost: func() { g.createRecord(w, r, up, id) },
		})
	case len(parts) == 2 && parts[0] == "records":
		route(r.Method, "GET, DELETE", map[string]func(){
			http.MethodGet:    func() { g.getRecord(w, r, id, parts[1]) },
			http.MethodDelete: func() { g.deleteRecord(w, r, up, id, parts[1]) },
		})
	case len(parts) == 3 && parts[0] == "records" && parts[2] == "members":
		route(r.Method, "GET", map[string]func(){
			http.MethodGet: func() { g.listMembers(w, r, id, parts[1]) },
		})
	case len(parts) == 4 && parts[0] == "records" && parts[2] == "members":
		route(r.Method, "PUT, DELETE", map[string]func(){
			http.MethodPut:    func() { g.putMember(w, r, id, parts[1], parts[3]) },
			http.MethodDelete: func() { g.deleteMember(w, r, id, parts[1], parts[3]) },
		})
	case len(parts) == 3 && parts[0] == "records" && parts[2] == "dropoffs":
		route(r.Method, "GET", map[string]func(){
			http.MethodGet: func() { g.listDropOffs(w, r, up, id, parts[1]) },
		})
	case len(parts) == 4 && parts[0] == "records" && parts[2] == "dropoffs":
		route(r.Method, "GET", map[string]func(){
			http.MethodGet: func() { g.getDropOff(w, r, up, id, parts[1], parts[3]) },
		})
	case len(parts) == 5 && parts[0] == "records" && parts[2] == "dropoffs" && parts[4] == "pickup":
		route(r.Method, "POST", map[string]func(){
			http.MethodPost: func() { g.pickUp(w, r, up, id, parts[1], parts[3]) },
		})
	case len(parts) == 5 && parts[0] == "records" && parts[2] == "dropoffs" && parts[4] == "reject":
		route(r.Method, "POST", map[string]func(){
			http.MethodPost: func() { g.rejectDropOff(w, r, up, id, parts[1], parts[3]) },
		})
	case len(parts) == 3 && parts[0] == "records" && parts[2] == "import":
		route(r.Method, "POST", map[string]func(){
			http.MethodPost: func() { g.startImport(w, r, id, parts[1]) },
		})
	case len(parts) == 4 && parts[0] == "records" && parts[2] == "import":
		route(r.Method, "GET", map[string]func(){
			http.MethodGet: func() { g.importStatus(w, r, id, parts[1], parts[3]) },
		})
	case len(parts) == 3 && parts[0] == "records" && parts[2] == "audit":
		route(r.Method, "GET", map[string]func(){
			http.MethodGet: func() { g.serveAudit(w, r, id, parts[1]) },
		})
	case len(parts) == 3 && parts[0] == "records" && parts[2] == "webhook":
		route(r.Method, "GET, PUT", map[string]func(){
			http.MethodGet: func() { g.getWebhook(w, r, id, parts[1]) },
			http.MethodPut: func() { g.putWebhook(w, r, id, parts[1]) },
		})
	case len(parts) == 3 && parts[0] == "records" && parts[2] == "apps":
		route(r.Method, "GET", map[string]func(){
			http.MethodGet: func() { g.listApps(w, r, id, parts[1]) },
		})
	case len(parts) == 4 && parts[0] == "records" && parts[2] == "apps":
		route(r.Method, "PUT, DELETE", map[string]func(){
			http.MethodPut:    func() { g.grantBackend(w, r, id, parts[1], parts[3]) },
			http.MethodDelete: func() { g.revokeApp(w, r, id, parts[1], parts[3]) },
		})
	case len(parts) == 3 && parts[0] == "records" && parts[2] == "invitations":
		route(r.Method, "POST", map[string]func(){
			http.MethodPost: func() { g.createInvitation(w, r, id, parts[1]) },
		})
	case len(parts) == 3 && parts[0] == "invitations" && parts[2] == "accept":
		route(r.Method, "POST", map[string]func(){
			http.MethodPost: func() { g.acceptInvitation(w, r, id, parts[1]) },
		})
	default:
		fhir.WriteError(w, fhir.Errorf(http.StatusNotFound, fhir.CodeNotFound, "no such management resource: %s", r.URL.Path))
	}
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	fhir.WriteError(w, fhir.Errorf(http.StatusMethodNotAllowed, fhir.CodeNotSupported, "method not allowed; use %s", allow).
		WithHeader("Allow", allow))
}

// recordBase is the FHIR base URL of the record at slug, on the scheme and
// port the client used to reach the gateway.
func (g *Gateway) recordBase(r *http.Request, slug string) string {
	return scheme(r) + "://" + slug + "." + g.cfg.BaseDomain + portOf(r.Host) + g.cfg.FHIRPath
}

// apexOrigin is the apex's origin, on the scheme and port the client used.
func (g *Gateway) apexOrigin(r *http.Request) string {
	return scheme(r) + "://" + g.cfg.BaseDomain + portOf(r.Host)
}

// portOf returns ":port" of a Host header, or "".
func portOf(hostport string) string {
	if _, port, err := net.SplitHostPort(hostport); err == nil && port != "" {
		return ":" + port
	}
	return ""
}

func (g *Gateway) view(r *http.Request, rec *tenancy.Record, role tenancy.Role) RecordView {
	return RecordView{
		Slug: rec.Slug, FHIRBase: g.recordBase(r, rec.Slug), PatientID: rec.PatientID, Role: role,
		Relationship: string(rec.Relationship), Status: string(rec.Status), Created: rec.Created,
	}
}

func (g *Gateway) listRecords(w http.ResponseWriter, r *http.Request, id *auth.Identity) {
	views := []RecordView{}
	err := g.cfg.Tenancy.View(r.Context(), func(tx tenancy.Tx) error {
		acct, err := tx.AccountByIdentity(id.Issuer, id.Subject)
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
				views = append(views, g.view(r, &rr.Record, rr.Role))
			}
		}
		return nil
	})
	if err != nil {
		fhir.WriteError(w, fhir.Errorf(http.StatusServiceUnavailable, fhir.CodeTransient, "listing records failed").WithCause(err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"records": views})
}

func (g *Gateway) getRecord(w http.ResponseWriter, r *http.Request, id *auth.Identity, slug string) {
	var out RecordView
	err := g.withMembership(r, id, slug, false, func(_ tenancy.Tx, rec *tenancy.Record, _ *tenancy.Account, m *tenancy.Membership) error {
		out = g.view(r, rec, m.Role)
		return nil
	})
	if err != nil {
		// Not found and not a member look the same: slugs are not an oracle.
		fhir.WriteError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// createRequest is the body of POST /pfr/v1/records.
type createRequest struct {
	Slug         string          `json:"slug"`
	Relationship string          `json:"relationship"`
	Patient      json.RawMessage `json:"patient"`
}

func (g *Gateway) createRecord(w http.ResponseWriter, r *http.Request, up Upstream, id *auth.Identity) {
	var req createRequest
	if err := decodeJSONBody(w, r, maxCreateBody, &req); err != nil {
		fhir.WriteError(w, err)
		return
	}
	if err := tenancy.ValidateSlug(req.Slug); err != nil {
		fhir.WriteError(w, fhir.Errorf(http.StatusBadRequest, fhir.CodeValue, "invalid slug: %v", err).WithExpression("slug"))
		return
	}
	if req.Relationship == "" {
		req.Relationship = string(tenancy.RelationshipSelf)
	}
	if !tenancy.Relationship(req.Relationship).Valid() {
		fhir.WriteError(w, fhir.Errorf(http.StatusBadRequest, fhir.CodeValue,
			"relationship must be one of self, parent, child, spouse, caregiver, other").WithExpression("relationship"))
		return
	}
	patient, ferr := g.newPatientBody(r, req.Slug, req.Patient)
	if ferr != nil {
		fhir.WriteError(w, ferr)
		return
	}
	rec, role, err := g.provision(r, up, id, req.Slug, req.Relationship, patient)
	if err != nil {
		fhir.WriteError(w, err)
		return
	}
	g.auditAction(r, rec, id, http.StatusCreated, "C", "record-create", "Patient/"+rec.PatientID, "slug "+rec.Slug)
	w.Header().Set("Location", apiPrefix+"records/"+rec.Slug)
	writeJSON(w, http.StatusCreated, g.view(r, rec, role))
}

// newPatientBody checks the Patient a record is created for and strips what
// the server assigns (id, meta). It is decoded at the same door as every
// write (fhir.DecodeResource) and judged by the same ownership rules
// (fhir.Owner.CheckNewPatient): no link to another Patient, no contained
// Patient, no reference into a record that holds nothing yet. On an
// upstream that is not trusted to isolate partitions it carries the
// record's stamp like every write (the record id is not known yet: the
// caller stamps it).
func (g *Gateway) newPatientBody(r *http.Request, slug string, raw json.RawMessage) (map[string]any, *fhir.Error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeRequired, "a Patient resource is required").WithExpression("patient")
	}
	p, err := fhir.DecodeResource(raw)
	if err != nil {
		fe := fhir.AsError(err)
		for i := range fe.Issues {
			for j, e := range fe.Issues[i].Expression {
				fe.Issues[i].Expression[j] = "patient." + strings.TrimPrefix(strings.TrimPrefix(e, "Patient"), ".")
			}
		}
		return nil, fe
	}
	if p["resourceType"] != "Patient" {
		return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeInvalid, "patient.resourceType must be \"Patient\"").WithExpression("patient.resourceType")
	}
	delete(p, "id")
	delete(p, "meta")
	o := fhir.Owner{Bases: []string{g.recordBase(r, slug)}}
	if err := fhir.OwnershipError(o.CheckNewPatient(p, "patient", g.cfg.Ownership)); err != nil {
		return nil, fhir.AsError(err)
	}
	return p, nil
}

// writeJSON writes a management API body.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		fhir.WriteError(w, fhir.Errorf(http.StatusInternalServerError, fhir.CodeException, "cannot encode response").WithCause(err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// healthTimeout bounds the health check's read of the state.
const healthTimeout = 2 * time.Second

// serveHealth answers GET /pfr/v1/health for load balancers: public, 200
// while this node can read its state (the bbolt file or PostgreSQL), 503
// otherwise. It says nothing else.
func (g *Gateway) serveHealth(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, "GET, HEAD")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
	defer cancel()
	if err := g.cfg.Tenancy.View(ctx, func(tenancy.Tx) error { return nil }); err != nil {
		g.log.Warn("health check: state unavailable", zap.Error(err))
		fhir.WriteError(w, fhir.Errorf(http.StatusServiceUnavailable, fhir.CodeTransient, "this node cannot reach its state"))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
}
