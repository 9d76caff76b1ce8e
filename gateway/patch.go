package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"go.uber.org/zap"

	"github.com/pfrgateway/caddy-pfr/fhir"
)

// PATCH, direct or inside a batch or transaction, in either format (JSON
// Patch, FHIRPath Patch), is never sent upstream as a patch: the gateway
// reads the current resource, applies the patch itself, judges the result
// like any update (ownership, the record's Patient's identity) and sends
// the PUT of exactly that result with If-Match naming the version it
// patched. Whatever the upstream (the embedded store, HAPI, one that keeps
// no partitions), what is stored is what was judged, and a write that
// slipped in between makes the PUT fail (412) instead of being overwritten
// by a result judged on an older version.

// patchToUpdate turns a direct PATCH (Type/id, or Type?criteria matching
// one resource of the record) into the checked PUT of its result, which it
// returns.
func (g *Gateway) patchToUpdate(w http.ResponseWriter, rq *request, target string) (map[string]any, error) {
	r := rq.r
	body, err := g.readBody(w, r)
	if err != nil {
		return nil, err
	}
	// The door first: a patch that cannot round-trip, or is no patch, is
	// refused before anything is read upstream.
	patch, err := fhir.ParsePatch(r.Header.Get("Content-Type"), body)
	if err != nil {
		return nil, err
	}
	typ, id := rq.in.typ, rq.in.id
	if rq.in.conditional {
		if id, err = g.conditionalPatchTarget(rq, typ, target); err != nil {
			return nil, err
		}
	}
	patched, version, err := g.judgePatch(rq, typ, id, patch, r.Header.Get("If-Match"))
	if err != nil {
		return nil, err
	}
	if err := fhir.OwnershipError(rq.owner().CheckWrite(http.MethodPatch, target, "", patched, g.cfg.Ownership)); err != nil {
		return nil, err
	}
	out, err := json.Marshal(patched)
	if err != nil {
		return nil, fhir.Errorf(http.StatusInternalServerError, fhir.CodeException, "encoding the patched resource").WithCause(err)
	}
	if rq.in.conditional {
		// From here on it is the update of the one resource found.
		rq.rest = "/" + typ + "/" + id
		r.URL.Path, r.URL.RawPath, r.URL.RawQuery = g.cfg.FHIRPath+rq.rest, "", ""
		rq.in.id, rq.in.conditional, rq.in.query = id, false, url.Values{}
	}
	r.Method = http.MethodPut
	r.Header.Set("Content-Type", "application/fhir+json")
	r.Header.Set("If-Match", `W/"`+version+`"`)
	setBody(r, out)
	return patched, nil
}

// conditionalPatchTarget finds the one resource of the record that a
// conditional patch's criteria (target is "Type?criteria") match. The
// criteria pass the same rules as a conditional delete's; the search is the
// gateway's own, confined to the record (searchRecord), so no other
// record's resource can be matched, patched or counted.
func (g *Gateway) conditionalPatchTarget(rq *request, typ, target string) (string, error) {
	if typ == "Patient" {
		return "", fhir.Errorf(http.StatusUnprocessableEntity, fhir.CodeBusinessRule,
			"a conditional patch of a Patient may match another person: patch Patient/%s by id", rq.rec.PatientID)
	}
	if err := fhir.OwnershipError(rq.owner().CheckWrite(http.MethodDelete, target, "", nil, g.cfg.Ownership)); err != nil {
		return "", err
	}
	_, rawQuery, _ := strings.Cut(target, "?")
	query, err := url.ParseQuery(rawQuery)
	if err != nil || len(query) == 0 {
		return "", fhir.Errorf(http.StatusBadRequest, fhir.CodeInvalid, "a conditional patch needs search criteria (%s?…)", typ)
	}
	own, foreign, err := g.searchRecord(rq, typ, query, maxCountPages)
	if err != nil {
		return "", err
	}
	if foreign > 0 {
		g.log.Warn("security: a conditional patch's criteria match resources of other records; confined to this one",
			zap.String("record", rq.rec.ID), zap.String("type", typ), zap.Int("foreign", foreign))
	}
	switch len(own) {
	case 0:
		return "", fhir.Errorf(http.StatusNotFound, fhir.CodeNotFound, "the conditional patch %s matches no resource of this record", target)
	case 1:
		id, _ := own[0]["id"].(string)
		if !fhir.IsID(id) {
			return "", fhir.Errorf(http.StatusBadGateway, fhir.CodeException, "the upstream sent a %s without a valid id", typ)
		}
		return id, nil
	}
	return "", fhir.Errorf(http.StatusPreconditionFailed, fhir.CodeDuplicate,
		"the conditional patch %s matches %d resources of this record; exactly one may match", target, len(own))
}

// judgePatch reads typ/id from the upstream and applies patch: the
// resource read must be the record's (404 otherwise, telling nothing of
// others), ifMatch (the client's, "" for none) must name its version (412),
// and the result must keep its type and id and pass the identity rule for
// the record's Patient. It returns the result and the version it was made
// from; the caller judges the result's ownership as the update it becomes
// (CheckWrite for a direct patch, CheckBundle with the Bundle's aliases for
// an entry).
func (g *Gateway) judgePatch(rq *request, typ, id string, patch *fhir.Patch, ifMatch string) (map[string]any, string, error) {
	current, version, err := g.fetch(rq, typ, id)
	if err != nil {
		return nil, "", err
	}
	if !g.keeper(rq)(current) {
		g.log.Warn("security: patch aimed at another person's resource", zap.String("record", rq.rec.ID),
			zap.String("type", typ), zap.String("id", id))
		return nil, "", fhir.Errorf(http.StatusNotFound, fhir.CodeNotFound, "%s/%s does not exist in this record", typ, id)
	}
	if version == "" {
		return nil, "", fhir.Errorf(http.StatusBadGateway, fhir.CodeException,
			"the upstream sent %s/%s without meta.versionId: a patch cannot be applied safely", typ, id)
	}
	if !versionMatches(ifMatch, version) {
		return nil, "", fhir.Errorf(http.StatusPreconditionFailed, fhir.CodeConflict,
			"If-Match %s: %s/%s is at version %s", ifMatch, typ, id, version)
	}
	patched, err := patch.Apply(current)
	if err != nil {
		return nil, "", err
	}
	if typ == "Patient" && id == rq.rec.PatientID {
		if err := g.checkIdentityChange(rq, patched); err != nil {
			return nil, "", err
		}
	}
	return patched, version, nil
}

// versionMatches reports whether an If-Match value (W/"3", "3", *, or ""
// for none) allows writing over version.
func versionMatches(ifMatch, version string) bool {
	v := strings.TrimSpace(ifMatch)
	if v == "" || v == "*" {
		return true
	}
	v = strings.Trim(strings.TrimPrefix(v, "W/"), `"`)
	return v == version
}

// patchEntriesToUpdates turns every PATCH entry of a batch or transaction
// into the PUT of its result (see judgePatch), with request.ifMatch naming
// the version it was made from; the caller then judges the Bundle with
// CheckBundle, which sees these PUTs with the Bundle's urn:uuid aliases, and
// the upstream applies it as it is (atomically, for a transaction), storing
// what was judged. The
// entry's resource is a Binary holding a JSON Patch or a FHIRPath Patch
// Parameters; request.url is Type/id or Type?criteria (one match in the
// record). An error names the entry; nothing is written.
func (g *Gateway) patchEntriesToUpdates(rq *request, bundle map[string]any) error {
	entries, _ := bundle["entry"].([]any)
	for i, e := range entries {
		entry, _ := e.(map[string]any)
		req, _ := entry["request"].(map[string]any)
		if method, _ := req["method"].(string); !strings.EqualFold(method, http.MethodPatch) {
			continue
		}
		if err := g.patchEntry(rq, entry, req); err != nil {
			fe := fhir.AsError(err)
			out := *fe
			out.Issues = append([]fhir.Issue(nil), fe.Issues...)
			for j := range out.Issues {
				out.Issues[j].Diagnostics = fmt.Sprintf("Bundle.entry[%d] (PATCH %v): %s", i, req["url"], out.Issues[j].Diagnostics)
				out.Issues[j].Expression = append(out.Issues[j].Expression, fmt.Sprintf("Bundle.entry[%d]", i))
			}
			return &out
		}
	}
	return nil
}

// patchEntry rewrites one PATCH entry as the PUT of its judged result.
func (g *Gateway) patchEntry(rq *request, entry, req map[string]any) error {
	rawURL, _ := req["url"].(string)
	in, err := classifyEntry(http.MethodPatch, rawURL)
	if err != nil {
		return err
	}
	res, ok := entry["resource"].(map[string]any)
	if !ok {
		return fhir.Errorf(http.StatusBadRequest, fhir.CodeRequired,
			"a PATCH entry carries its patch as resource: a Binary (JSON Patch) or a Parameters (FHIRPath Patch)")
	}
	patch, err := fhir.PatchFromResource(res)
	if err != nil {
		return err
	}
	target := strings.TrimPrefix(rawURL, "/")
	id := in.id
	if in.conditional {
		if id, err = g.conditionalPatchTarget(rq, in.typ, target); err != nil {
			return err
		}
	}
	ifMatch, _ := req["ifMatch"].(string)
	patched, version, err := g.judgePatch(rq, in.typ, id, patch, ifMatch)
	if err != nil {
		return err
	}
	entry["resource"] = patched
	req["method"] = http.MethodPut
	req["url"] = in.typ + "/" + id
	req["ifMatch"] = `W/"` + version + `"`
	return nil
}
