package store

import (
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/fhir/fhirjson"
)

// readPatch reads a PATCH body: a JSON Patch (application/json-patch+json)
// or a FHIRPath Patch Parameters (any FHIR JSON media type).
func (q *request) readPatch() (*fhir.Patch, error) {
	ct := q.r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err == nil && jsonFormats[strings.ToLower(mt)] {
		ct = "application/fhir+json"
	}
	if err != nil || !strings.EqualFold(mt, fhir.MediaTypeJSONPatch) && ct != "application/fhir+json" {
		return nil, fhir.Errorf(http.StatusUnsupportedMediaType, fhir.CodeNotSupported,
			"Content-Type %q is not supported for PATCH: send a JSON Patch (%s) or a FHIRPath Patch Parameters (application/fhir+json)",
			q.r.Header.Get("Content-Type"), fhir.MediaTypeJSONPatch)
	}
	body, err := readLimited(q.w, q.r)
	if err != nil {
		return nil, err
	}
	return fhir.ParsePatch(ct, body)
}

// patch answers PATCH Type/id.
func (q *request) patch(typ, id string) error {
	patch, err := q.readPatch()
	if err != nil {
		return err
	}
	var out *writeResult
	err = q.h.db.update(q.part, func(p *ptx) error {
		out, err = q.h.patchResource(p, typ, id, patch, q.r.Header.Get("If-Match"), nil)
		return err
	})
	if err != nil {
		return err
	}
	q.writeResult(out, true)
	return nil
}

// conditionalPatch answers PATCH Type?criteria: the one match is patched;
// none is a 404, several a 412.
func (q *request) conditionalPatch(typ string) error {
	patch, err := q.readPatch()
	if err != nil {
		return err
	}
	var out *writeResult
	err = q.h.db.update(q.part, func(p *ptx) error {
		id, err := q.h.conditionalPatchID(p, typ, q.r.URL.RawQuery)
		if err != nil {
			return err
		}
		out, err = q.h.patchResource(p, typ, id, patch, q.r.Header.Get("If-Match"), nil)
		return err
	})
	if err != nil {
		return err
	}
	q.writeResult(out, true)
	return nil
}

// conditionalPatchID is the id of the one resource of typ that query
// matches.
func (h *handler) conditionalPatchID(p *ptx, typ, query string) (string, error) {
	params, err := url.ParseQuery(query)
	if err != nil || len(params) == 0 {
		return "", fhir.Errorf(http.StatusBadRequest, fhir.CodeInvalid, "conditional patch needs search criteria in the URL (%s?…)", typ)
	}
	ids, err := h.matchIDs(p, typ, params)
	if err != nil {
		return "", err
	}
	switch len(ids) {
	case 0:
		return "", fhir.Errorf(http.StatusNotFound, fhir.CodeNotFound, "conditional patch %s?%s matches no resource", typ, query)
	case 1:
		return ids[0], nil
	}
	return "", fhir.Errorf(http.StatusPreconditionFailed, fhir.CodeDuplicate,
		"conditional patch %s?%s matches %d resources; exactly one may match", typ, query, len(ids))
}

// patchResource applies patch to the current version of typ/id inside p
// and writes the result as a new version (the history keeps the old one).
// ifMatch, when set, must name the current version (412). The stored JSON
// is decoded with its numbers as written, so every value the patch does not
// touch is written back as it was. ids maps a transaction's placeholders
// (urn:uuid fullUrls) to what they became, for references the patch adds.
func (h *handler) patchResource(p *ptx, typ, id string, patch *fhir.Patch, ifMatch string, ids map[string]string) (*writeResult, error) {
	rec, err := p.live(typ, id)
	if err != nil {
		return nil, err
	}
	if ifMatch != "" {
		want, err := parseIfMatch(ifMatch)
		if err != nil {
			return nil, err
		}
		if rec.Version != want {
			return nil, fhir.Errorf(http.StatusPreconditionFailed, fhir.CodeConflict,
				"If-Match %s: %s/%s is at version %d", ifMatch, typ, id, rec.Version)
		}
	}
	current, err := fhirjson.DecodeObject(rec.Body)
	if err != nil {
		// Stored before the door (or damaged): nothing to patch safely.
		return nil, fhir.Errorf(http.StatusConflict, fhir.CodeConflict,
			"%s/%s is stored in a form that does not read back as FHIR JSON (%v): replace it with PUT instead of patching it", typ, id, err)
	}
	patched, err := patch.Apply(current)
	if err != nil {
		return nil, err
	}
	res, err := asResource(patched)
	if err != nil {
		fe := fhir.AsError(err)
		return nil, fhir.Errorf(http.StatusUnprocessableEntity, fhir.CodeProcessing, "the patched resource is not valid: %s", fe.Error())
	}
	if err := h.resolveReferences(p, res, ids); err != nil {
		return nil, err
	}
	out, err := update(p, typ, id, res, "")
	if err != nil {
		return nil, err
	}
	out.Message = fmt.Sprintf("Successfully patched resource %s/%s/_history/%d (%s)", typ, id, out.Rec.Version, patch.Kind())
	return out, nil
}
