package store

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/pfrgateway/caddy-pfr/fhir"
)

// rewriteReferences calls fn on every Reference.reference string anywhere
// in v (decoded JSON) and stores what fn returns.
func rewriteReferences(v any, fn func(ref string) (string, error)) error {
	switch x := v.(type) {
	case map[string]any:
		for k, child := range x {
			if s, ok := child.(string); ok && k == "reference" {
				out, err := fn(s)
				if err != nil {
					return err
				}
				x[k] = out
				continue
			}
			if err := rewriteReferences(child, fn); err != nil {
				return err
			}
		}
	case []any:
		for _, child := range x {
			if err := rewriteReferences(child, fn); err != nil {
				return err
			}
		}
	}
	return nil
}

// isPlaceholder reports whether ref is a transaction placeholder id.
func isPlaceholder(ref string) bool {
	return strings.HasPrefix(ref, "urn:uuid:") || strings.HasPrefix(ref, "urn:oid:")
}

// conditionalReference splits "Patient?identifier=a|b" into type and query.
func conditionalReference(ref string) (typ, query string, ok bool) {
	typ, query, ok = strings.Cut(ref, "?")
	if !ok || !fhir.IsResourceType(typ) {
		return "", "", false
	}
	return typ, query, true
}

// resolveReferences rewrites references to entry fullUrls via ids and conditional
// references via a search in the partition: exactly one match, or the
// write fails (404 none, 412 several), as HAPI does.
func (h *handler) resolveReferences(p *ptx, res resource, ids map[string]string) error {
	return rewriteReferences(map[string]any(res), func(ref string) (string, error) {
		// Any entry's fullUrl (placeholder or absolute URL) resolves to
		// where that entry was written.
		if target, ok := ids[ref]; ok {
			return target, nil
		}
		if isPlaceholder(ref) {
			return "", fhir.Errorf(http.StatusBadRequest, fhir.CodeNotFound,
				"reference %q in %s does not match the fullUrl of any entry of the transaction", ref, res.Type())
		}
		typ, query, ok := conditionalReference(ref)
		if !ok {
			return ref, nil
		}
		params, err := url.ParseQuery(query)
		if err != nil || len(params) == 0 {
			return "", fhir.Errorf(http.StatusBadRequest, fhir.CodeInvalid, "invalid conditional reference %q", ref)
		}
		matches, err := h.matchIDs(p, typ, params)
		if err != nil {
			return "", err
		}
		switch len(matches) {
		case 1:
			return typ + "/" + matches[0], nil
		case 0:
			return "", fhir.Errorf(http.StatusNotFound, fhir.CodeNotFound,
				"Invalid match URL %q - No resources match this search", ref)
		default:
			return "", fhir.Errorf(http.StatusPreconditionFailed, fhir.CodeDuplicate,
				"Invalid match URL %q - Multiple resources match this search", ref)
		}
	})
}
