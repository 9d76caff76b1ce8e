package auth

import (
	"net/url"
	"slices"
	"strings"
)

// Interaction is a FHIR RESTful interaction, as far as scopes care.
type Interaction string

// The interactions, and the SMART v2 letter each needs (SMART App Launch
// 2.x, "Scopes for requesting FHIR resources"):
//
//	read, vread, history-instance   r   (instance-level reads)
//	search, history-type            s   (type- or system-level queries)
//	create                          c
//	update, patch                   u
//	delete                          d
//	operation                       r and s
//
// history-instance reads versions of one known resource, so it goes with
// r like vread; history-type lists resources of a type like a search, so it
// goes with s. Operations ($everything, $document, $lastn, $validate …)
// return data found by the server rather than one named resource, so they
// need both r and s; an operation that writes should be checked by the
// caller as the write interaction it performs. A system-level search or
// history (ResourceType "") needs a wildcard-type scope, because it can
// return every type.
const (
	InteractionRead            Interaction = "read"
	InteractionVRead           Interaction = "vread"
	InteractionHistoryInstance Interaction = "history-instance"
	InteractionHistoryType     Interaction = "history-type"
	InteractionSearch          Interaction = "search"
	InteractionCreate          Interaction = "create"
	InteractionUpdate          Interaction = "update"
	InteractionPatch           Interaction = "patch"
	InteractionDelete          Interaction = "delete"
	InteractionOperation       Interaction = "operation"
)

// Interactions lists every Interaction, in a stable order.
var Interactions = []Interaction{
	InteractionRead, InteractionVRead, InteractionHistoryInstance,
	InteractionHistoryType, InteractionSearch, InteractionCreate,
	InteractionUpdate, InteractionPatch, InteractionDelete, InteractionOperation,
}

// needs returns the letters an interaction requires; 0 for an unknown one.
func (i Interaction) needs() perm {
	switch i {
	case InteractionRead, InteractionVRead, InteractionHistoryInstance:
		return permRead
	case InteractionSearch, InteractionHistoryType:
		return permSearch
	case InteractionCreate:
		return permCreate
	case InteractionUpdate, InteractionPatch:
		return permUpdate
	case InteractionDelete:
		return permDelete
	case InteractionOperation:
		return permRead | permSearch
	}
	return 0
}

// Request is one FHIR interaction to authorize.
type Request struct {
	Interaction Interaction
	// ResourceType is the type addressed; "" for a system-level interaction.
	ResourceType string
	// Query is, for a search, its parameters; for an interaction on one
	// resource, the resource's own values for the restricted parameters
	// (e.g. category=laboratory), used by Allows to match v2 query
	// restrictions. Nil is fine for unrestricted scopes.
	Query url.Values
}

// Matcher reports whether the resource an interaction touches satisfies a
// v2 scope's query restriction (its search parameters, ANDed).
type Matcher func(restriction url.Values) bool

// Allows reports whether the grants permit req. When they do not, missing
// names a scope that would have, e.g. "patient/Observation.r". For a read
// or write of one resource, v2 query restrictions are matched against
// req.Query taken as the resource's own values; use AllowsWith to match the
// resource itself.
func (g Grants) Allows(req Request) (ok bool, missing string) {
	return g.AllowsWith(req, ValuesMatcher(req.Query))
}

// AllowsWith is Allows with the caller's matcher for v2 query restrictions
// on interactions that touch one resource (read, vread, history-instance,
// create, update, patch, delete). A search is matched on its own
// parameters: a restricted scope allows it only when the search carries
// every restriction parameter with values within the restriction, so its
// results are a subset of what the scope allows. history-type and
// operations carry no search parameters the server filters on, so only
// unrestricted scopes allow them. match may be nil: restricted scopes then
// never allow single-resource interactions.
func (g Grants) AllowsWith(req Request, match Matcher) (ok bool, missing string) {
	need := req.Interaction.needs()
	if need == 0 {
		return false, ""
	}
	for letter := permCreate; letter <= permSearch; letter <<= 1 {
		if need&letter != 0 && !g.allowsLetter(req, letter, match) {
			return false, g.missingScope(req.ResourceType, need)
		}
	}
	return true, ""
}

func (g Grants) allowsLetter(req Request, letter perm, match Matcher) bool {
	for _, r := range g.rules {
		if r.perms&letter == 0 {
			continue
		}
		if r.resourceType != "*" && (req.ResourceType == "" || r.resourceType != req.ResourceType) {
			continue
		}
		if r.restriction == nil {
			return true
		}
		switch req.Interaction {
		case InteractionSearch:
			if searchWithin(req.Query, r.restriction) {
				return true
			}
		case InteractionHistoryType, InteractionOperation:
			// The server does not filter these by search parameters.
		default:
			if match != nil && match(r.restriction) {
				return true
			}
		}
	}
	return false
}

// missingScope names the smallest scope that would allow the interaction,
// in the context the token already uses (patient by default).
func (g Grants) missingScope(resourceType string, need perm) string {
	context := "patient"
	if len(g.rules) > 0 {
		context = g.rules[0].context
	}
	if resourceType == "" {
		resourceType = "*"
	}
	return context + "/" + resourceType + "." + need.String()
}

// searchWithin reports whether a search with params returns only resources
// a scope restricted by restriction may see: for every restriction
// parameter, some search parameter of the same name (no modifier) must
// have all its comma-separated alternatives among the restriction's.
// Parameters are ANDed in FHIR search, so extra ones only narrow further.
func searchWithin(params, restriction url.Values) bool {
	for name, wanted := range restriction {
		for _, want := range wanted {
			allowed := splitAlternatives(want)
			found := false
			for _, got := range params[name] {
				alternatives := splitAlternatives(got)
				if len(alternatives) > 0 && allSubset(alternatives, allowed) {
					found = true
					break
				}
			}
			if !found {
				return false
			}
		}
	}
	return true
}

// ValuesMatcher returns a Matcher that takes values as a resource's own
// search-parameter values: a restriction matches when, for each parameter,
// one of the resource's values is among the restriction's alternatives.
func ValuesMatcher(values url.Values) Matcher {
	return func(restriction url.Values) bool {
		for name, wanted := range restriction {
			for _, want := range wanted {
				allowed := splitAlternatives(want)
				if !slices.ContainsFunc(values[name], func(v string) bool {
					return slices.Contains(allowed, v)
				}) {
					return false
				}
			}
		}
		return true
	}
}

func allSubset(items, set []string) bool {
	for _, it := range items {
		if !slices.Contains(set, it) {
			return false
		}
	}
	return true
}

// splitAlternatives splits a FHIR search value on the commas that separate
// alternatives (OR), keeping escaped commas ("\,") inside a value.
func splitAlternatives(s string) []string {
	var out []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && i+1 < len(s):
			cur.WriteByte(s[i])
			cur.WriteByte(s[i+1])
			i++
		case s[i] == ',':
			out = append(out, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(s[i])
		}
	}
	out = append(out, cur.String())
	return slices.DeleteFunc(out, func(v string) bool { return v == "" })
}

// Visibility says, for the resources of one type, whether a token may see
// them in an answer: every one (an unrestricted r or s scope covers the
// type), some (only v2 query-restricted scopes cover it: those matching
// one of the restrictions), or none.
type Visibility int

// The Visibility values.
const (
	SeeNone Visibility = iota
	SeeSome
	SeeAll
)

// Visible says which resources of resourceType a token may see returned,
// by any interaction: the rule the gateway applies to every resource of
// every answer (searches, includes, $everything, history, batch answers,
// operations). A scope with r or s on the type (or on "*") counts.
func (g Grants) Visible(resourceType string) Visibility {
	v := SeeNone
	for _, r := range g.rules {
		if r.perms&(permRead|permSearch) == 0 || r.resourceType != "*" && r.resourceType != resourceType {
			continue
		}
		if r.restriction == nil {
			return SeeAll
		}
		v = SeeSome
	}
	return v
}

// SeesEverything reports whether the token may see every resource of every
// type: an unrestricted r or s scope on "*". Then no answer needs the
// scope filter.
func (g Grants) SeesEverything() bool { return g.Visible("\x00any") == SeeAll }

// VisibleWith reports whether one resource of resourceType may be shown:
// its type is fully visible, or match accepts one of the query
// restrictions of the scopes that cover it.
func (g Grants) VisibleWith(resourceType string, match Matcher) bool {
	for _, r := range g.rules {
		if r.perms&(permRead|permSearch) == 0 || r.resourceType != "*" && r.resourceType != resourceType {
			continue
		}
		if r.restriction == nil || match != nil && match(r.restriction) {
			return true
		}
	}
	return false
}
