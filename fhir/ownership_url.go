package fhir

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/pfrgateway/caddy-pfr/fhir/searchparam"
)

// maxRequestTarget bounds the length of a request URL a write or a Bundle
// entry may name.
const maxRequestTarget = 4096

// requestTarget is a request URL relative to the FHIR base, parsed
// strictly: Type, Type/id, Type/_history, Type/id/_history[/vid], each
// optionally followed by ?query.
type requestTarget struct {
	typ      string
	id       string
	history  bool // a _history segment is present
	query    string
	hasQuery bool
}

// instance reports whether t names one resource by id, without history
// or query.
func (t requestTarget) instance() bool { return t.id != "" && !t.history && !t.hasQuery }

// conditional reports whether t is a type-level URL with a query: the form
// conditional updates and deletes use.
func (t requestTarget) conditional() bool { return t.id == "" && !t.history && t.hasQuery }

// parseRequestTarget parses raw, the url of a Bundle entry's request or
// the path and query of a direct request relative to the FHIR base. It
// refuses absolute URLs, other hosts, "." and ".." segments, any
// percent-encoding in the path (encoded slashes or dots), empty segments,
// control characters, backslashes and fragments, unknown resource types,
// and operations ($name), which are not handled inside Bundles. One
// leading "/" is tolerated: the official batch examples use it.
func parseRequestTarget(raw string) (requestTarget, error) {
	var t requestTarget
	if len(raw) > maxRequestTarget {
		return t, fmt.Errorf("longer than %d bytes", maxRequestTarget)
	}
	for i := 0; i < len(raw); i++ {
		if c := raw[i]; c <= ' ' || c == 0x7f || c == '\\' || c == '#' || c >= 0x80 {
			return t, fmt.Errorf("contains a space, a control, non-ASCII, backslash or '#' character")
		}
	}
	path, query, hasQuery := strings.Cut(raw, "?")
	t.query, t.hasQuery = query, hasQuery
	path = strings.TrimPrefix(path, "/")
	switch {
	case path == "":
		return t, fmt.Errorf("names no resource type")
	case strings.HasPrefix(path, "/") || strings.Contains(path, ":"):
		return t, fmt.Errorf("must be relative to this record's FHIR base, not an absolute URL or another host")
	case strings.Contains(path, "%"):
		return t, fmt.Errorf("percent-encoding (such as an encoded slash) is not allowed in the path")
	}
	for _, s := range strings.Split(path, "/") {
		switch {
		case s == "":
			return t, fmt.Errorf("empty path segment")
		case strings.Trim(s, ".") == "":
			return t, fmt.Errorf("'.' and '..' segments are not allowed")
		case strings.HasPrefix(s, "$"):
			return t, fmt.Errorf("operations are not allowed here")
		}
	}
	if typ, _, _ := strings.Cut(path, "/"); !IsResourceType(typ) {
		return t, fmt.Errorf("%q is not a FHIR R4 resource type", typ)
	}
	p, err := ParsePath(path)
	switch {
	case err != nil:
		return t, err
	case p.Type == "" || p.Search || p.Compartment != "":
		return t, fmt.Errorf("%q is not a resource type, an instance or its history", path)
	}
	t.typ, t.id, t.history = p.Type, p.ID, p.History
	if t.hasQuery && (t.id != "" || t.history) {
		return t, fmt.Errorf("a query is allowed only on a type")
	}
	return t, nil
}

// refusedSearchParams reach outside the resources a query names: other
// resource types, or resources pointing back (_has), so that their result
// cannot be bounded to this record by looking at the query alone.
var refusedSearchParams = map[string]bool{
	"_contained": true, "_containedType": true,
	"_type": true, "_query": true, "_filter": true,
}

// includeParams add other resources to a search's answer. One rule for
// plain searches and searches inside a batch or transaction: allowed, and
// what they add passes the response filter (ownership and scopes, entry by
// entry, nested Bundles included). A condition (conditional create, update
// or delete) has no answer to add to: there they are refused.
var includeParams = map[string]bool{"_include": true, "_revinclude": true}

// checkQuery returns why the query of t is refused, or nil. A conditional
// query (conditional update, delete or create) must also use only search
// parameters the type defines and must not be empty, because a server may
// ignore what it does not know and then match every resource of the type.
func (o Owner) checkQuery(t requestTarget, conditional bool) error {
	if conditional && strings.Trim(t.query, "&") == "" {
		return fmt.Errorf("an empty conditional query matches every %s", t.typ)
	}
	values, err := url.ParseQuery(t.query)
	if err != nil {
		return fmt.Errorf("malformed query: %w", err)
	}
	for name, vals := range values {
		code, modifier, _ := strings.Cut(name, ":")
		switch {
		case strings.HasPrefix(code, "_has") || strings.Contains(name, "."):
			return fmt.Errorf("parameter %q: chained and reverse-chained parameters are not allowed here", name)
		case refusedSearchParams[code], conditional && includeParams[code]:
			return fmt.Errorf("parameter %q is not allowed here", name)
		}
		param, known := searchparam.Lookup(t.typ, code)
		if conditional && !known {
			return fmt.Errorf("parameter %q is not a search parameter of %s", name, t.typ)
		}
		if known && param.Type == searchparam.TypeReference {
			if err := o.checkReferenceParam(param, modifier, vals); err != nil {
				return fmt.Errorf("parameter %q: %w", name, err)
			}
		}
	}
	return nil
}

// checkReferenceParam refuses values of a reference search parameter that
// can name a Patient other than the PFR's: "Patient/x", a bare id where
// the parameter may target a Patient, or a Patient found by identifier.
func (o Owner) checkReferenceParam(p *searchparam.Param, modifier string, vals []string) error {
	mayBePatient := modifier == "Patient" || modifier == "" && targetsPatient(p)
	if modifier == "identifier" && targetsPatient(p) {
		return fmt.Errorf("a Patient found by identifier may be another person")
	}
	for _, v := range vals {
		for _, part := range strings.Split(v, ",") {
			var t refTarget
			switch {
			case strings.Contains(part, "/"):
				t = (&refChecker{owner: o}).classify(part)
			case mayBePatient:
				t = o.classifyTyped("Patient", part)
			default:
				continue
			}
			if t.kind == refInvalid {
				return fmt.Errorf("%q: %s", part, t.why)
			}
		}
	}
	return nil
}

// targetsPatient reports whether a reference parameter may point to a
// Patient.
func targetsPatient(p *searchparam.Param) bool {
	for _, t := range p.Target {
		if t == "Patient" {
			return true
		}
	}
	return len(p.Target) == 0
}
