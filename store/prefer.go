package store

import (
	"net/http"
	"strings"
)

// Prefer return values (FHIR RESTful API, "Prefer" header).
const (
	returnMinimal          = "minimal"
	returnRepresentation   = "representation"
	returnOperationOutcome = "OperationOutcome"
)

// preference reads one token of the Prefer header, e.g. "return" or
// "handling"; "" when absent.
func preference(r *http.Request, name string) string {
	for _, h := range r.Header.Values("Prefer") {
		for _, part := range strings.Split(h, ";") {
			for _, kv := range strings.Split(part, ",") {
				k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
				if ok && strings.EqualFold(strings.TrimSpace(k), name) {
					return strings.Trim(strings.TrimSpace(v), `"`)
				}
			}
		}
	}
	return ""
}

// preferReturn is the Prefer return value; representation when absent or
// unknown.
func preferReturn(r *http.Request) string {
	switch v := preference(r, "return"); {
	case strings.EqualFold(v, returnMinimal):
		return returnMinimal
	case strings.EqualFold(v, returnOperationOutcome):
		return returnOperationOutcome
	default:
		return returnRepresentation
	}
}

// preferStrict reports whether the client asked for Prefer: handling=strict.
func preferStrict(r *http.Request) bool {
	return strings.EqualFold(preference(r, "handling"), "strict")
}
