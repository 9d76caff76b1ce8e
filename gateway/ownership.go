package gateway

import (
	"encoding/json"
	"mime"
	"net/http"
	"strings"

	"go.uber.org/zap"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/backend"
	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/fhir/fhirjson"
	"github.com/pfrgateway/caddy-pfr/tenancy"
)

// IdentityChangeHeader must be "confirm" on an update of the record's own
// Patient that changes the person's identity (names, birth date, gender):
// only an owner may send it.
const IdentityChangeHeader = "X-PFR-Identity-Change"

// owner is who a record's writes must belong to.
func owner(rec *tenancy.Record, publicBase string) fhir.Owner {
	return fhir.Owner{PatientID: rec.PatientID, Bases: []string{publicBase}}
}

// checkWrite validates a direct write (create, update, patch, delete and
// their conditional forms) before anything reaches the upstream (DESIGN.md
// step 6). A PATCH becomes the PUT of the patched resource, so the upstream
// stores exactly what was checked.
func (g *Gateway) checkWrite(w http.ResponseWriter, r *http.Request, up Upstream, rec *tenancy.Record, role tenancy.Role,
	in interaction, rest, publicBase string) error {
	o := owner(rec, publicBase)
	target := strings.TrimPrefix(strings.TrimPrefix(r.URL.EscapedPath(), g.cfg.FHIRPath), "/")
	if r.URL.RawQuery != "" {
		target += "?" + r.URL.RawQuery
	}
	switch in.kind {
	case auth.InteractionDelete:
		return fhir.OwnershipError(o.CheckWrite(http.MethodDelete, target, "", nil, g.cfg.Ownership))
	case auth.InteractionPatch:
		return g.patchToUpdate(w, r, up, rec, role, in, target, publicBase)
	}
	_, res, err := g.readJSONResource(w, r)
	if err != nil {
		return err
	}
	if err := fhir.OwnershipError(o.CheckWrite(r.Method, target, r.Header.Get("If-None-Exist"), res, g.cfg.Ownership)); err != nil {
		return err
	}
	if in.typ == "Patient" && in.id == rec.PatientID && in.kind == auth.InteractionUpdate {
		if err := g.checkIdentityChange(r, up, rec, role, res); err != nil {
			return err
		}
	}
	if !g.cfg.TrustUpstreamIsolation {
		stamp(res, rec.ID)
		return setJSONBody(r, res)
	}
	return nil
}

// checkIdentityChange refuses an update of the record's Patient that
// changes who the person is, unless an owner confirms it.
func (g *Gateway) checkIdentityChange(r *http.Request, up Upstream, rec *tenancy.Record, role tenancy.Role, proposed map[string]any) error {
	stored, _, err := g.fetch(r, up, rec, "Patient", rec.PatientID)
	if err != nil {
		return err
	}
	changes := fhir.IdentityChange(stored, proposed)
	if len(changes) == 0 {
		return nil
	}
	if role == tenancy.RoleOwner && strings.EqualFold(r.Header.Get(IdentityChangeHeader), "confirm") {
		g.log.Info("identity change confirmed by owner", zap.String("record", rec.ID), zap.Strings("changes", changes))
		return nil
	}
	issues := make([]fhir.Issue, 0, len(changes))
	for _, c := range changes {
		issues = append(issues, fhir.Issue{Severity: fhir.SeverityError, Code: fhir.CodeBusinessRule, Expression: []string{"Patient"},
			Diagnostics: "this update changes who the record is about (" + c + "); an owner may confirm it with the header " +
				IdentityChangeHeader + ": confirm"})
	}
	return &fhir.Error{Status: http.StatusUnprocessableEntity, Issues: issues}
}

// patchToUpdate applies a JSON Patch to the current resource, checks the
// result, and turns the request into the conditional PUT of that result.
func (g *Gateway) patchToUpdate(w http.ResponseWriter, r *http.Request, up Upstream, rec *tenancy.Record, role tenancy.Role,
	in interaction, target, publicBase string) error {
	if in.id == "" {
		return fhir.Errorf(http.StatusBadRequest, fhir.CodeNotSupported, "conditional PATCH is not supported; PATCH a resource by its id")
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/json-patch+json" {
		return fhir.Errorf(http.StatusUnsupportedMediaType, fhir.CodeNotSupported,
			"PATCH takes a JSON Patch document (application/json-patch+json)")
	}
	patch, err := g.readBody(w, r)
	if err != nil {
		return err
	}
	// The door first: a patch that cannot round-trip is refused before
	// anything is read upstream.
	if err := fhirjson.Check(patch); err != nil {
		return fhir.JSONError(err)
	}
	current, version, err := g.fetch(r, up, rec, in.typ, in.id)
	if err != nil {
		return err
	}
	if want := r.Header.Get("If-Match"); want != "" && want != "*" && want != `W/"`+version+`"` {
		return fhir.Errorf(http.StatusPreconditionFailed, fhir.CodeConflict, "version conflict: the resource is at version %s", version)
	}
	patched, err := fhir.ApplyJSONPatch(current, patch)
	if err != nil {
		return err
	}
	if patched["resourceType"] != in.typ || patched["id"] != in.id {
		return fhir.Errorf(http.StatusUnprocessableEntity, fhir.CodeBusinessRule, "a patch may not change resourceType or id")
	}
	if err := fhir.OwnershipError(owner(rec, publicBase).CheckWrite(http.MethodPatch, target, "", patched, g.cfg.Ownership)); err != nil {
		return err
	}
	if in.typ == "Patient" && in.id == rec.PatientID {
		if err := g.checkIdentityChange(r, up, rec, role, patched); err != nil {
			return err
		}
	}
	if !g.cfg.TrustUpstreamIsolation {
		stamp(patched, rec.ID)
	}
	body, err := json.Marshal(patched)
	if err != nil {
		return fhir.Errorf(http.StatusInternalServerError, fhir.CodeException, "encoding the patched resource").WithCause(err)
	}
	r.Method = http.MethodPut
	r.Header.Set("Content-Type", "application/fhir+json")
	r.Header.Set("If-Match", `W/"`+version+`"`)
	setBody(r, body)
	return nil
}

// fetch reads the current version of a resource of rec from the upstream.
func (g *Gateway) fetch(r *http.Request, up Upstream, rec *tenancy.Record, typ, id string) (map[string]any, string, error) {
	req, _, err := g.upstreamRequest(r, rec, http.MethodGet, "/"+typ+"/"+id, nil)
	if err != nil {
		return nil, "", err
	}
	res, err := call(up, req)
	if err != nil {
		return nil, "", upstreamError(err)
	}
	if res.status == http.StatusNotFound || res.status == http.StatusGone {
		return nil, "", fhir.Errorf(res.status, fhir.CodeNotFound, "%s/%s does not exist in this record", typ, id)
	}
	if ferr := verifyAnswer(interaction{kind: auth.InteractionRead, typ: typ, id: id}, req, res); ferr != nil {
		return nil, "", ferr
	}
	if res.status != http.StatusOK {
		return nil, "", fhir.Errorf(http.StatusBadGateway, fhir.CodeTransient, "the upstream could not read %s/%s (HTTP %d)", typ, id, res.status)
	}
	resource, err := fhir.DecodeResource(res.body.Bytes())
	if err != nil {
		return nil, "", fhir.Errorf(http.StatusBadGateway, fhir.CodeException, "the upstream sent an unreadable %s", typ).WithCause(err)
	}
	meta, _ := resource["meta"].(map[string]any)
	version, _ := meta["versionId"].(string)
	return resource, version, nil
}

// upstreamRequest builds a request of the gateway's own (not a client's)
// for the upstream, in rec's partition; rest is below the FHIR base.
func (g *Gateway) upstreamRequest(parent *http.Request, rec *tenancy.Record, method, rest string, body []byte) (*http.Request, *backend.Route, error) {
	req := newInternalRequest(parent, method, g.cfg.UpstreamFHIRPath+rest, body)
	route, err := g.cfg.Backend.Outbound(req, target(rec))
	if err != nil {
		return nil, nil, fhir.AsError(err)
	}
	if route.Upstream != nil && g.cfg.SetUpstream != nil {
		g.cfg.SetUpstream(req, route.DialAddress())
	}
	return req, route, nil
}
