package gateway

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/store/search"
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

var (
	resourceTypeRE = regexp.MustCompile(`^[A-Z][A-Za-z]{1,63}$`)
	resourceIDRE   = regexp.MustCompile(`^[A-Za-z0-9\-.]{1,64}$`)
)

// classify maps a request below the FHIR base (rest is "" or starts with
// "/") to the interaction it performs, following the FHIR RESTful API.
func classify(method, rest string, query url.Values) (interaction, error) {
	in := interaction{query: query}
	var segs []string
	if rest != "" {
		segs = strings.Split(strings.TrimPrefix(rest, "/"), "/")
	}
	get := method == http.MethodGet || method == http.MethodHead
	bad := func() (interaction, error) {
		return interaction{}, fhir.Errorf(http.StatusBadRequest, fhir.CodeNotSupported,
			"%s %s is not a FHIR interaction this server supports", method, "/"+strings.Join(segs, "/"))
	}
	isOp := func(s string) bool { return strings.HasPrefix(s, "$") && len(s) > 1 }

	switch len(segs) {
	case 0:
		switch {
		case method == http.MethodPost:
			in.bundle = true
		case get:
			in.kind = auth.InteractionSearch
		default:
			return bad()
		}
		return in, nil
	case 1:
		s := segs[0]
		switch {
		case s == "_history" && get:
			in.kind = auth.InteractionHistoryType
		case s == "_search" && (get || method == http.MethodPost):
			in.kind = auth.InteractionSearch
		case isOp(s):
			in.kind, in.opName = auth.InteractionOperation, s
		case resourceTypeRE.MatchString(s):
			in.typ = s
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
		default:
			return bad()
		}
		return in, nil
	}

	if !resourceTypeRE.MatchString(segs[0]) {
		return bad()
	}
	in.typ = segs[0]
	second := segs[1]
	switch {
	case len(segs) == 2 && second == "_search" && (get || method == http.MethodPost):
		in.kind = auth.InteractionSearch
	case len(segs) == 2 && second == "_history" && get:
		in.kind = auth.InteractionHistoryType
	case len(segs) == 2 && isOp(second):
		in.kind, in.opName = auth.InteractionOperation, second
	case !resourceIDRE.MatchString(second):
		return bad()
	case len(segs) == 2:
		in.id = second
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
	case len(segs) == 3 && segs[2] == "_history" && get:
		in.id, in.kind = second, auth.InteractionHistoryInstance
	case len(segs) == 4 && segs[2] == "_history" && get && resourceIDRE.MatchString(segs[3]):
		in.id, in.kind = second, auth.InteractionVRead
	case len(segs) == 3 && isOp(segs[2]):
		in.id, in.kind, in.opName = second, auth.InteractionOperation, segs[2]
	case len(segs) == 3 && get && resourceTypeRE.MatchString(segs[2]):
		// A compartment search, e.g. Patient/123/Observation: a search of
		// the inner type.
		in.typ, in.kind = segs[2], auth.InteractionSearch
	default:
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
