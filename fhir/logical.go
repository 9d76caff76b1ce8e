package fhir

import (
	"net/url"
	"strings"
)

// EachReference calls fn with every Reference object (an object with a
// string "reference") anywhere in v, decoded JSON: contained resources,
// extensions and nested Bundles included. fn may change the object.
func EachReference(v any, fn func(ref map[string]any, reference string)) {
	switch v := v.(type) {
	case map[string]any:
		if s, ok := v["reference"].(string); ok {
			fn(v, s)
		}
		for _, child := range v {
			switch child.(type) {
			case map[string]any, []any:
				EachReference(child, fn)
			}
		}
	case []any:
		for _, child := range v {
			EachReference(child, fn)
		}
	}
}

// ParseConditionalReference splits a conditional reference
// "Type?criteria" (R4 3.1.0.2.3) into its R4 resource type and search
// parameters. ok is false for anything else, and for criteria that do not
// parse or are empty.
func ParseConditionalReference(ref string) (typ string, params url.Values, ok bool) {
	typ, query, found := strings.Cut(strings.TrimSpace(ref), "?")
	if !found || !IsResourceType(typ) {
		return "", nil, false
	}
	params, err := url.ParseQuery(query)
	if err != nil || len(params) == 0 {
		return "", nil, false
	}
	return typ, params, true
}

// URIIdentifierSystem is the Identifier.system of an identifier that is a
// URI (RFC 3986): a reference to another server kept as a logical one.
const URIIdentifierSystem = "urn:ietf:rfc:3986"

// IdentifierFromQuery returns the Identifier that conditional criteria
// name, when they name exactly one with "identifier=system|value" or
// "identifier=value"; nil otherwise.
func IdentifierFromQuery(params url.Values) map[string]any {
	ids := params["identifier"]
	if len(ids) != 1 || strings.Contains(ids[0], ",") {
		return nil
	}
	system, value, hasSystem := strings.Cut(ids[0], "|")
	if !hasSystem {
		system, value = "", ids[0]
	}
	if value == "" {
		return nil
	}
	id := map[string]any{"value": value}
	if system != "" {
		id["system"] = system
	}
	return id
}

// MakeLogical turns ref, a Reference object, into a logical reference:
// "reference" goes, "type" becomes typ (when known), "identifier" becomes
// identifier (when not nil) and "display" is kept. A Reference left with
// none of identifier and display gets display, so that it is never empty.
func MakeLogical(ref map[string]any, typ string, identifier map[string]any, display string) {
	delete(ref, "reference")
	if typ != "" && IsResourceType(typ) {
		ref["type"] = typ
	}
	if identifier != nil {
		ref["identifier"] = identifier
	}
	if _, hasID := ref["identifier"]; !hasID {
		if d, _ := ref["display"].(string); d == "" {
			ref["display"] = display
		}
	}
}
