package gateway

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/authz"
	"github.com/pfrgateway/caddy-pfr/dopu"
	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/tenancy"
)

// serveAuthz hands the built-in authorization server its requests on the
// apex, with what its consent page needs to name the person: the
// request's upstream, through the context.
func (g *Gateway) serveAuthz(w http.ResponseWriter, r *http.Request, up Upstream) {
	ctx := context.WithValue(r.Context(), authzRequestKey{}, authzRequest{r: r, up: up})
	g.cfg.Authz.ServeHTTP(w, r.WithContext(ctx))
}

type authzRequestKey struct{}

type authzRequest struct {
	r  *http.Request
	up Upstream
}

// patientName reads the record's Patient for the consent page and returns
// its name ("" when it cannot be read in a second: the page names the
// record's address anyway).
func (g *Gateway) patientName(ctx context.Context, rec *tenancy.Record) string {
	ar, ok := ctx.Value(authzRequestKey{}).(authzRequest)
	if !ok || rec.PatientID == "" {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	patient, _, err := g.recordPatient(ar.r.WithContext(ctx), ar.up, rec)
	if err != nil {
		return ""
	}
	sum := dopu.SummarizePatient(patient)
	if sum == nil || len(sum.Names) == 0 {
		return ""
	}
	n := sum.Names[0]
	if n.Text != "" {
		return n.Text
	}
	return strings.TrimSpace(strings.Join(n.Given, " ") + " " + n.Family)
}

// appsRecord resolves the record of a connected-apps request: owners and
// managers only.
func (g *Gateway) appsRecord(r *http.Request, id *auth.Identity, slug string) (*tenancy.Record, error) {
	if g.cfg.Authz == nil {
		return nil, fhir.Errorf(http.StatusNotFound, fhir.CodeNotFound, "the built-in authorization server is not enabled on this gateway")
	}
	var rec *tenancy.Record
	err := g.withMembership(r, id, slug, false, func(_ tenancy.Tx, rr *tenancy.Record, _ *tenancy.Account, m *tenancy.Membership) error {
		if !m.Role.CanWrite() {
			return fhir.Errorf(http.StatusForbidden, fhir.CodeForbidden, "only owners and managers see and disconnect apps")
		}
		rec = rr
		return nil
	})
	return rec, err
}

// listApps answers GET /pfr/v1/records/{slug}/apps: the apps connected to
// the record, one entry per approval.
func (g *Gateway) listApps(w http.ResponseWriter, r *http.Request, id *auth.Identity, slug string) {
	rec, err := g.appsRecord(r, id, slug)
	if err != nil {
		fhir.WriteError(w, err)
		return
	}
	apps, err := g.cfg.Authz.Apps(r.Context(), rec.ID)
	if err != nil {
		fhir.WriteError(w, fhir.Errorf(http.StatusServiceUnavailable, fhir.CodeTransient, "the connected apps could not be read").WithCause(err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"apps": apps})
}

// revokeApp answers DELETE /pfr/v1/records/{slug}/apps/{client}: every
// approval of the app for the record ends; its refresh tokens stop at once
// and its access tokens at their next use.
func (g *Gateway) revokeApp(w http.ResponseWriter, r *http.Request, id *auth.Identity, slug, clientID string) {
	rec, err := g.appsRecord(r, id, slug)
	if err != nil {
		fhir.WriteError(w, err)
		return
	}
	err = g.cfg.Authz.RevokeApp(r.Context(), rec.ID, clientID)
	if errors.Is(err, authz.ErrNotFound) {
		fhir.WriteError(w, fhir.Errorf(http.StatusNotFound, fhir.CodeNotFound, "no app %q is connected to this record", clientID))
		return
	}
	if err != nil {
		fhir.WriteError(w, fhir.Errorf(http.StatusServiceUnavailable, fhir.CodeTransient, "the app could not be disconnected").WithCause(err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// grantBackend answers PUT /pfr/v1/records/{slug}/apps/{client} with
// {"scope": "system/Observation.rs …"}: the record's owner lets a backend
// service (SMART Backend Services, a registered private_key_jwt client)
// use the record with those system/ scopes, acting as that owner.
func (g *Gateway) grantBackend(w http.ResponseWriter, r *http.Request, id *auth.Identity, slug, clientID string) {
	if g.cfg.Authz == nil {
		fhir.WriteError(w, fhir.Errorf(http.StatusNotFound, fhir.CodeNotFound, "the built-in authorization server is not enabled on this gateway"))
		return
	}
	var body struct {
		Scope string `json:"scope"`
	}
	if err := decodeSmallJSON(w, r, &body); err != nil {
		fhir.WriteError(w, err)
		return
	}
	var rec *tenancy.Record
	var acct *tenancy.Account
	err := g.withMembership(r, id, slug, false, func(_ tenancy.Tx, rr *tenancy.Record, a *tenancy.Account, m *tenancy.Membership) error {
		if !m.Role.CanManage() {
			return errOwnerOnly
		}
		rec, acct = rr, a
		return nil
	})
	if err != nil {
		fhir.WriteError(w, err)
		return
	}
	grant, err := g.cfg.Authz.GrantBackend(r.Context(), rec.ID, acct.ID, id.Issuer, id.Subject, clientID, strings.Fields(body.Scope))
	switch {
	case errors.Is(err, authz.ErrNotBackendClient):
		fhir.WriteError(w, fhir.Errorf(http.StatusUnprocessableEntity, fhir.CodeBusinessRule, "%v", err))
		return
	case errors.Is(err, authz.ErrScope):
		fhir.WriteError(w, fhir.Errorf(http.StatusBadRequest, fhir.CodeValue, "%v", err).WithExpression("scope"))
		return
	case err != nil:
		fhir.WriteError(w, fhir.Errorf(http.StatusServiceUnavailable, fhir.CodeTransient, "the grant could not be saved").WithCause(err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"clientId": clientID, "scope": grant.Scope, "approved": grant.Created})
}
