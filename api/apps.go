package api

import (
	"errors"
	"net/http"
	"strings"

	"github.com/pfrgateway/caddy-pfr/authz"
	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/tenancy"
)

// appsRecord resolves the record of a connected-apps request: owners and
// managers only.
func (a *API) appsRecord(r *http.Request, c *Call) (*tenancy.Record, error) {
	if a.cfg.Authz == nil {
		return nil, fhir.Errorf(http.StatusNotFound, fhir.CodeNotFound, "the built-in authorization server is not enabled on this gateway")
	}
	return a.managedRecord(r, c, "only owners and managers see and disconnect apps")
}

// listApps answers GET /pfr/v1/records/{slug}/apps: the apps connected to
// the record, one entry per approval.
func (a *API) listApps(w http.ResponseWriter, r *http.Request, c *Call) error {
	rec, err := a.appsRecord(r, c)
	if err != nil {
		return err
	}
	apps, err := a.cfg.Authz.Apps(r.Context(), rec.ID)
	if err != nil {
		return fhir.Errorf(http.StatusServiceUnavailable, fhir.CodeTransient, "the connected apps could not be read").WithCause(err)
	}
	return writeJSON(w, http.StatusOK, map[string]any{"apps": apps})
}

// revokeApp answers DELETE /pfr/v1/records/{slug}/apps/{client}: every
// approval of the app for the record ends; its refresh tokens stop at once
// and its access tokens at their next use.
func (a *API) revokeApp(w http.ResponseWriter, r *http.Request, c *Call) error {
	clientID := r.PathValue("client")
	rec, err := a.appsRecord(r, c)
	if err != nil {
		return err
	}
	err = a.cfg.Authz.RevokeApp(r.Context(), rec.ID, clientID)
	if errors.Is(err, authz.ErrNotFound) {
		return fhir.Errorf(http.StatusNotFound, fhir.CodeNotFound, "no app %q is connected to this record", clientID)
	}
	if err != nil {
		return fhir.Errorf(http.StatusServiceUnavailable, fhir.CodeTransient, "the app could not be disconnected").WithCause(err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// grantBackend answers PUT /pfr/v1/records/{slug}/apps/{client} with
// {"scope": "system/Observation.rs …"}: the record's owner lets a backend
// service (SMART Backend Services, a registered private_key_jwt client)
// use the record with those system/ scopes, acting as that owner.
func (a *API) grantBackend(w http.ResponseWriter, r *http.Request, c *Call) error {
	clientID, id := r.PathValue("client"), c.ID
	if a.cfg.Authz == nil {
		return fhir.Errorf(http.StatusNotFound, fhir.CodeNotFound, "the built-in authorization server is not enabled on this gateway")
	}
	var body struct {
		Scope string `json:"scope"`
	}
	if err := decodeSmallJSON(w, r, &body); err != nil {
		return err
	}
	var rec *tenancy.Record
	var acct *tenancy.Account
	err := a.withMembership(r, c, false, func(_ tenancy.Tx, rr *tenancy.Record, a *tenancy.Account, m *tenancy.Membership) error {
		if !m.Role.CanManage() {
			return errOwnerOnly
		}
		rec, acct = rr, a
		return nil
	})
	if err != nil {
		return err
	}
	grant, err := a.cfg.Authz.GrantBackend(r.Context(), rec.ID, acct.ID, id.Issuer, id.Subject, clientID, strings.Fields(body.Scope))
	switch {
	case errors.Is(err, authz.ErrNotBackendClient):
		return fhir.Errorf(http.StatusUnprocessableEntity, fhir.CodeBusinessRule, "%v", err)
	case errors.Is(err, authz.ErrScope):
		return fhir.Errorf(http.StatusBadRequest, fhir.CodeValue, "%v", err).WithExpression("scope")
	case err != nil:
		return fhir.Errorf(http.StatusServiceUnavailable, fhir.CodeTransient, "the grant could not be saved").WithCause(err)
	}
	return writeJSON(w, http.StatusOK, map[string]any{"clientId": clientID, "scope": grant.Scope, "approved": grant.Created})
}
