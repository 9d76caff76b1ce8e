package gateway

import (
	"net/http"
	"strings"

	"go.uber.org/zap"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/backend"
	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/tenancy"
)

// IdentityChangeHeader must be "confirm" on an update of the record's own
// Patient that changes the person's identity (names, birth date, gender):
// only an owner may send it.
const IdentityChangeHeader = "X-PFR-Identity-Change"

// checkWrite validates a direct write (create, update, patch, delete and
// their conditional forms) before anything reaches the upstream (DESIGN.md
// step 6). A PATCH becomes the PUT of the patched resource (patch.go), so
// the upstream stores exactly what was checked. It returns the resource written (nil for
// a delete), which is the request's body.
func (g *Gateway) checkWrite(w http.ResponseWriter, rq *request) (map[string]any, error) {
	r, in, rec := rq.r, rq.in, rq.rec
	o := rq.owner()
	target := strings.TrimPrefix(strings.TrimPrefix(r.URL.EscapedPath(), g.cfg.FHIRPath), "/")
	if r.URL.RawQuery != "" {
		target += "?" + r.URL.RawQuery
	}
	switch in.kind {
	case auth.InteractionDelete:
		return nil, fhir.OwnershipError(o.CheckWrite(http.MethodDelete, target, "", nil, g.cfg.Ownership))
	case auth.InteractionPatch:
		return g.patchToUpdate(w, rq, target)
	}
	_, res, err := g.readJSONResource(w, r)
	if err != nil {
		return nil, err
	}
	if err := fhir.OwnershipError(o.CheckWrite(r.Method, target, r.Header.Get("If-None-Exist"), res, g.cfg.Ownership)); err != nil {
		return nil, err
	}
	if in.typ == "Patient" && in.id == rec.PatientID && in.kind == auth.InteractionUpdate {
		if err := g.checkIdentityChange(rq, res); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// checkIdentityChange refuses an update of the record's Patient that
// changes who the person is, unless an owner confirms it.
func (g *Gateway) checkIdentityChange(rq *request, proposed map[string]any) error {
	r, rec := rq.r, rq.rec
	stored, _, err := g.fetch(rq, "Patient", rec.PatientID)
	if err != nil {
		return err
	}
	changes := fhir.IdentityChange(stored, proposed)
	if len(changes) == 0 {
		return nil
	}
	if rq.role == tenancy.RoleOwner && strings.EqualFold(r.Header.Get(IdentityChangeHeader), "confirm") {
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

// fetch reads the current version of a resource of the record from the
// upstream.
func (g *Gateway) fetch(rq *request, typ, id string) (map[string]any, string, error) {
	req, _, err := g.upstreamRequest(rq, http.MethodGet, "/"+typ+"/"+id, nil)
	if err != nil {
		return nil, "", err
	}
	res, err := call(rq.up, req)
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
// for the upstream, in the record's partition, carrying rq's context; rest
// is below the FHIR base.
func (g *Gateway) upstreamRequest(rq *request, method, rest string, body []byte) (*http.Request, *backend.Route, error) {
	req := newInternalRequest(rq.r, method, g.cfg.UpstreamFHIRPath+rest, body)
	route, err := g.cfg.Backend.Outbound(req, rq.target())
	if err != nil {
		return nil, nil, fhir.AsError(err)
	}
	if route.Upstream != nil && g.cfg.SetUpstream != nil {
		g.cfg.SetUpstream(req, route.DialAddress())
	}
	return req, route, nil
}
