package fhirpath

import (
	"strings"

	"github.com/pfrgateway/caddy-pfr/fhir/internal/ident"
)

// SplitReference returns the resource type and id of a literal reference
// "Type/id", "Type/id/_history/v" or an absolute URL ending in one of them.
// It returns ok false for "urn:uuid:…", "#id", and anything else.
func SplitReference(ref string) (resourceType, id string, ok bool) {
	if i := strings.IndexAny(ref, "?#"); i >= 0 {
		return "", "", false
	}
	parts := strings.Split(ref, "/")
	if n := len(parts); n >= 4 && parts[n-2] == "_history" {
		parts = parts[:n-2]
	}
	n := len(parts)
	if n < 2 {
		return "", "", false
	}
	typ, id := parts[n-2], parts[n-1]
	if !startsUpper(typ) || !isTypeName(typ) || !ident.IsID(id) {
		return "", "", false
	}
	if n > 2 && !strings.Contains(ref, "://") {
		return "", "", false
	}
	return typ, id, true
}

func isTypeName(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return s != ""
}
