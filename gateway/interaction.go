package gateway

import (
	"errors"
	"net/http"
	"net/url"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/fhir/search"
)

// interaction is what one FHIR request (or one Bundle entry) asks for.
type interaction struct {
	kind auth.Interaction
	typ  string // "" for system level
	id   string
	// opName is the operation's name ("$everything") for operations.
	opName string
	query  url.Values
	// conditional marks a conditional update, patch or delete, which
	// searches before it writes.
	conditional bool
	// bundle marks a POST of a Bundle to the base (batch or transaction).
	bundle bool
	// bundleType and entries are the posted Bundle's type and number of
	// entries, for checking the upstream's answer (verify.go).
	bundleType string
	entries    int
	// keepDeletions keeps the deletion entries of a history answer, which
	// a client of an untrusted upstream never sees: set only for the
	// gateway's own reads (bulk export).
	keepDeletions bool
}

// classify maps a request below the FHIR base (rest is "" or starts with
// "/") to the interaction it performs, following the FHIR RESTful API. The
// path is parsed by fhir.ParsePath: an unknown resource type is a 404
// (FHIR's "resource type not supported"), any other path or method the API
// does not define a 400.
func classify(method, rest string, query url.Values) (interaction, error) {
	in := interaction{query: query}
	get := method == http.MethodGet || method == http.MethodHead
	bad := func() (interaction, error) {
		return interaction{}, fhir.Errorf(http.StatusBadRequest, fhir.CodeNotSupported,
			"%s %s is not a FHIR interaction this server supports", method, rest)
	}
	p, err := fhir.ParsePath(rest)
	switch {
	case errors.Is(err, fhir.ErrUnknownType):
		return interaction{}, fhir.Errorf(http.StatusNotFound, fhir.CodeNotSupported, "%v", err)
	case err != nil || p.Capabilities:
		return bad()
	}
	in.typ, in.id = p.Type, p.ID
	switch {
	case p.Search:
		if !get && method != http.MethodPost {
			return bad()
		}
		in.kind = auth.InteractionSearch
	case p.History && p.VersionID != "":
		in.kind = auth.InteractionVRead
	case p.History && p.ID != "":
		in.kind = auth.InteractionHistoryInstance
	case p.History:
		in.kind = auth.InteractionHistoryType
	case p.Operation != "":
		in.kind, in.opName = auth.InteractionOperation, p.Operation
		return in, nil
	case p.Compartment != "":
		// A compartment search, e.g. Patient/123/Observation: a search of
		// the inner type.
		in.typ, in.id, in.kind = p.Compartment, "", auth.InteractionSearch
	case p.Type == "":
		switch {
		case method == http.MethodPost:
			in.bundle = true
			return in, nil
		case get:
			in.kind = auth.InteractionSearch
			return in, nil
		}
		return bad()
	case p.ID == "":
		switch method {
		case http.MethodGet, http.MethodHead:
			in.kind = auth.InteractionSearch
		case http.MethodPost:
			in.kind = auth.InteractionCreate
		case http.MethodPut:
			in.kind, in.conditional = auth.InteractionUpdate, true
		case http.MethodPatch:
			in.kind, in.conditional = auth.InteractionPatch, true
		case http.MethodDelete:
			in.kind, in.conditional = auth.InteractionDelete, true
		default:
			return bad()
		}
		return in, nil
	default:
		switch method {
		case http.MethodGet, http.MethodHead:
			in.kind = auth.InteractionRead
		case http.MethodPut:
			in.kind = auth.InteractionUpdate
		case http.MethodPatch:
			in.kind = auth.InteractionPatch
		case http.MethodDelete:
			in.kind = auth.InteractionDelete
		default:
			return bad()
		}
		return in, nil
	}
	// Searches (but _search by POST) and histories are read by GET.
	if !get && !(p.Search && method == http.MethodPost) {
		return bad()
	}
	return in, nil
}

// isWrite reports whether the interaction may change data.
func (in interaction) isWrite() bool {
	switch in.kind {
	case auth.InteractionCreate, auth.InteractionUpdate, auth.InteractionPatch, auth.InteractionDelete:
		return true
	case auth.InteractionOperation:
		// Operations are reads unless sent by POST with a body that may
		// write; the store's operations ($everything, partition
		// management) are reads or refused.
		return false
	}
	return in.bundle
}

// scopeRequests returns the scope checks the interaction needs: a
// conditional write also searches.
func (in interaction) scopeRequests() []auth.Request {
	reqs := []auth.Request{{Interaction: in.kind, ResourceType: in.typ, Query: in.query}}
	if in.conditional {
		reqs = append(reqs, auth.Request{Interaction: auth.InteractionSearch, ResourceType: in.typ, Query: in.query})
	}
	if in.kind == auth.InteractionSearch || in.conditional {
		// A chained parameter or _has reads other types: the caller must
		// be allowed to search them too, or the answer would tell about
		// resources it may not see (Patient?_has:Condition:patient:code=…).
		for _, t := range search.JoinedTypes(in.typ, in.query) {
			reqs = append(reqs, auth.Request{Interaction: auth.InteractionSearch, ResourceType: t})
		}
	}
	return reqs
}

// parseQuery parses a query string strictly: a malformed one is a 400.
func parseQuery(raw string) (url.Values, error) {
	q, err := url.ParseQuery(raw)
	if err != nil {
		return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeInvalid, "malformed query string: %v", err)
	}
	return q, nil
}
