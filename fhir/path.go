package fhir

import (
	"errors"
	"fmt"
	"strings"

	"github.com/pfrgateway/caddy-pfr/fhir/internal/ident"
	"github.com/pfrgateway/caddy-pfr/fhir/searchparam"
)

// IsID reports whether s is a valid FHIR id that is also safe as a URL
// path segment: FHIR's [A-Za-z0-9\-\.]{1,64}, except ids made only of
// dots ("." and ".." are dot-segments in a URL: "Patient/.." is the base
// itself). This is the one id rule of the module: the gateway, the store,
// the drop-off service, tenancy and audit all call it.
func IsID(s string) bool { return ident.IsID(s) }

// IsResourceType reports whether t is a FHIR R4 resource type, exactly
// (case-sensitive, from the official definitions).
func IsResourceType(t string) bool { return searchparam.IsResourceType(t) }

// The errors of ParsePath, for errors.Is: each caller answers them with
// its own status (FHIR's RESTful API says 404 for an unknown type).
var (
	// ErrUnknownType: a segment in a type's place is not an R4 resource type.
	ErrUnknownType = errors.New("unknown resource type")
	// ErrInvalidID: a segment in an id's or version id's place is not an id.
	ErrInvalidID = errors.New("invalid resource id")
	// ErrNoInteraction: the path has no shape of the RESTful API.
	ErrNoInteraction = errors.New("not a FHIR RESTful path")
)

// Path is a path of FHIR's RESTful API, relative to the FHIR base,
// parsed. The shapes, and the fields they set:
//
//	""                          system level: nothing set
//	metadata                    Capabilities
//	_history, _search, $op      History, Search, Operation (system level)
//	Type                        Type
//	Type/_history, _search, $op Type and History, Search or Operation
//	Type/id                     Type, ID
//	Type/id/_history[/vid]      Type, ID, History [, VersionID]
//	Type/id/$op                 Type, ID, Operation
//	Type/id/Type2               Type, ID, Compartment (a compartment search)
type Path struct {
	Type         string
	ID           string
	History      bool
	VersionID    string
	Search       bool
	Operation    string // "$name"
	Compartment  string
	Capabilities bool
}

// Instance reports whether p names one resource (Type/id) and nothing more.
func (p Path) Instance() bool {
	return p.ID != "" && !p.History && p.Operation == "" && p.Compartment == ""
}

// String is the path, relative to the base, without a leading "/".
func (p Path) String() string {
	var segs []string
	switch {
	case p.Capabilities:
		return "metadata"
	case p.Type != "":
		segs = append(segs, p.Type)
	}
	if p.ID != "" {
		segs = append(segs, p.ID)
	}
	switch {
	case p.History:
		segs = append(segs, "_history")
		if p.VersionID != "" {
			segs = append(segs, p.VersionID)
		}
	case p.Search:
		segs = append(segs, "_search")
	case p.Operation != "":
		segs = append(segs, p.Operation)
	case p.Compartment != "":
		segs = append(segs, p.Compartment)
	}
	return strings.Join(segs, "/")
}

// isOperation reports whether s names an operation ("$name").
func isOperation(s string) bool { return len(s) > 1 && s[0] == '$' }

// ParsePath parses p, a path below the FHIR base without its query ("" for
// the base itself, "Type/id" or "/Type/id"; "/" alone is an empty
// segment), strictly: every segment is checked (types against the R4
// list, ids with IsID), and empty, "." and ".." segments are refused. It is the one parser of FHIR REST paths: the
// gateway classifies requests and Bundle entries with it, the embedded
// store routes with it, and ParseReference reads references with it.
// Percent-decoding is the caller's business (a URL's Path is decoded).
func ParsePath(p string) (Path, error) {
	var out Path
	if p == "" {
		return out, nil
	}
	p = strings.TrimPrefix(p, "/")
	segs := strings.Split(p, "/")
	for _, s := range segs {
		if s == "" {
			return out, fmt.Errorf("%w: empty path segment in %q", ErrNoInteraction, p)
		}
	}
	typeAt := func(s string) (string, error) {
		if !IsResourceType(s) {
			return "", fmt.Errorf("%w %q", ErrUnknownType, s)
		}
		return s, nil
	}
	idAt := func(s string) (string, error) {
		if !IsID(s) {
			return "", fmt.Errorf("%w %q: ids match [A-Za-z0-9-.]{1,64} and are not only dots", ErrInvalidID, s)
		}
		return s, nil
	}
	if len(segs) == 1 {
		s := segs[0]
		var err error
		switch {
		case s == "metadata":
			out.Capabilities = true
		case s == "_history":
			out.History = true
		case s == "_search":
			out.Search = true
		case isOperation(s):
			out.Operation = s
		default:
			out.Type, err = typeAt(s)
		}
		return out, err
	}
	var err error
	if out.Type, err = typeAt(segs[0]); err != nil {
		return out, err
	}
	second := segs[1]
	switch {
	case len(segs) == 2 && second == "_history":
		out.History = true
		return out, nil
	case len(segs) == 2 && second == "_search":
		out.Search = true
		return out, nil
	case len(segs) == 2 && isOperation(second):
		out.Operation = second
		return out, nil
	case strings.HasPrefix(second, "_") || strings.HasPrefix(second, "$"):
		return out, fmt.Errorf("%w: %q", ErrNoInteraction, p)
	}
	if out.ID, err = idAt(second); err != nil {
		return out, err
	}
	switch {
	case len(segs) == 2:
		return out, nil
	case len(segs) == 3 && segs[2] == "_history":
		out.History = true
		return out, nil
	case len(segs) == 3 && isOperation(segs[2]):
		out.Operation = segs[2]
		return out, nil
	case len(segs) == 3 && !strings.HasPrefix(segs[2], "_") && !strings.HasPrefix(segs[2], "$"):
		out.Compartment, err = typeAt(segs[2])
		return out, err
	case len(segs) == 4 && segs[2] == "_history":
		out.History = true
		out.VersionID, err = idAt(segs[3])
		return out, err
	}
	return out, fmt.Errorf("%w: %q", ErrNoInteraction, p)
}

// ParseReference parses a relative literal reference, strictly: an R4
// resource type, a valid id, an optional /_history/{vid}, and nothing else
// (no leading "/", no query). It is ParsePath restricted to that shape.
func ParseReference(ref string) (typ, id, vid string, ok bool) {
	if ref == "" || ref[0] == '/' {
		return "", "", "", false
	}
	p, err := ParsePath(ref)
	if err != nil || p.ID == "" || p.Operation != "" || p.Compartment != "" || p.History && p.VersionID == "" {
		return "", "", "", false
	}
	return p.Type, p.ID, p.VersionID, true
}

// ParseLocation parses the resource a URL names, absolute or relative to a
// base, as in a Location header or a Bundle entry's response.location:
// [base/]Type/id[/_history/vid], a query and a trailing "/" tolerated. The
// base is not checked: callers that care compare it themselves.
func ParseLocation(loc string) (typ, id, vid string, ok bool) {
	loc, _, _ = strings.Cut(loc, "?")
	segs := strings.Split(strings.TrimSuffix(loc, "/"), "/")
	for _, n := range []int{4, 2} {
		if len(segs) < n {
			continue
		}
		if typ, id, vid, ok = ParseReference(strings.Join(segs[len(segs)-n:], "/")); ok {
			return typ, id, vid, true
		}
	}
	return "", "", "", false
}
