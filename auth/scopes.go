package auth

import (
	"github.com/pfrgateway/caddy-pfr/fhir"
	"net/url"
	"strings"
)

// Scope syntax accepted by ParseScopes (SMART App Launch 1.0 and 2.x):
//
//	context "/" type "." permissions [ "?" query ]
//
// context is patient, user or system; type is a FHIR resource type or "*";
// permissions is a v1 word (read, write, *) or v2 letters from "cruds" in
// that order, each at most once. A query (v2 only) restricts the scope to
// resources matching those search parameters.
//
// The three contexts mean the same thing here: a PFR holds the records of
// one person, so "the current patient" (patient/), "what the user may see"
// (user/, bounded by the caller's membership) and a backend service
// (system/, bounded by the client's membership) all reach exactly that one
// PFR. The gateway's membership check decides whether the caller may touch
// the PFR at all; scopes only narrow what it may do there.
//
// v1 words map onto v2 letters as SMART 2.x describes them:
// read = "rs", write = "cud", * = "cruds".

// perm is a set of SMART v2 permission letters.
type perm uint8

const (
	permCreate perm = 1 << iota // c
	permRead                    // r
	permUpdate                  // u
	permDelete                  // d
	permSearch                  // s
)

const permLetters = "cruds"

// String renders the set in canonical "cruds" order.
func (p perm) String() string {
	var b strings.Builder
	for i := range len(permLetters) {
		if p&(1<<i) != 0 {
			b.WriteByte(permLetters[i])
		}
	}
	return b.String()
}

// parsePerm reads v2 letters ("rs", "cruds") or a v1 word.
func parsePerm(s string) (p perm, v2 bool, ok bool) {
	switch s {
	case "read":
		return permRead | permSearch, false, true
	case "write":
		return permCreate | permUpdate | permDelete, false, true
	case "*":
		return permCreate | permRead | permUpdate | permDelete | permSearch, false, true
	case "":
		return 0, false, false
	}
	next := 0 // letters must appear in "cruds" order, each once
	for i := range len(s) {
		idx := strings.IndexByte(permLetters[next:], s[i])
		if idx < 0 {
			return 0, false, false
		}
		next += idx
		p |= 1 << next
		next++
	}
	return p, true, true
}

// rule is one parsed SMART resource scope.
type rule struct {
	scope        string // as granted
	context      string // patient, user or system
	resourceType string // a FHIR type, or "*"
	perms        perm
	// restriction holds the v2 query; nil when the scope is unrestricted.
	restriction url.Values
}

// Grants is the set of permissions a token's scopes give. The zero value
// grants nothing.
type Grants struct {
	rules []rule
	// Unrecognized lists scopes that are neither SMART resource scopes nor
	// known identity/launch scopes; they grant nothing.
	Unrecognized []string
}

// nonResourceScopes grant identity or launch context, never FHIR data.
var nonResourceScopes = map[string]bool{
	"openid": true, "profile": true, "fhirUser": true, "email": true,
	"launch": true, "offline_access": true, "online_access": true,
}

// ParseScopes reads SMART v1 and v2 scopes. Identity and launch scopes
// (openid, profile, fhirUser, launch, launch/*, offline_access,
// online_access) are ignored; anything else that is not a valid resource
// scope is listed in Grants.Unrecognized and grants nothing.
func ParseScopes(scopes []string) Grants {
	var g Grants
	for _, s := range scopes {
		if nonResourceScopes[s] || strings.HasPrefix(s, "launch/") {
			continue
		}
		r, ok := parseRule(s)
		if !ok {
			g.Unrecognized = append(g.Unrecognized, s)
			continue
		}
		g.rules = append(g.rules, r)
	}
	return g
}

func parseRule(s string) (rule, bool) {
	context, rest, ok := strings.Cut(s, "/")
	if !ok || (context != "patient" && context != "user" && context != "system") {
		return rule{}, false
	}
	rest, query, hasQuery := strings.Cut(rest, "?")
	// The permission follows the last dot: resource types contain none.
	dot := strings.LastIndexByte(rest, '.')
	if dot < 0 {
		return rule{}, false
	}
	resourceType, permText := rest[:dot], rest[dot+1:]
	if resourceType != "*" && !fhir.IsResourceType(resourceType) {
		return rule{}, false
	}
	p, v2, ok := parsePerm(permText)
	if !ok {
		return rule{}, false
	}
	r := rule{scope: s, context: context, resourceType: resourceType, perms: p}
	if hasQuery {
		values, err := url.ParseQuery(query)
		if err != nil || len(values) == 0 || !v2 {
			// Query restrictions exist only in v2 syntax.
			return rule{}, false
		}
		for k, vs := range values {
			if k == "" {
				return rule{}, false
			}
			for _, v := range vs {
				if v == "" {
					return rule{}, false
				}
			}
		}
		r.restriction = values
	}
	return r, true
}

// HasResourceScopes reports whether any SMART resource scope was granted. A
// token without one gets only what the gateway's configuration allows.
func (g Grants) HasResourceScopes() bool { return len(g.rules) > 0 }

// Scopes returns the recognized resource scopes as granted.
func (g Grants) Scopes() []string {
	out := make([]string, len(g.rules))
	for i, r := range g.rules {
		out[i] = r.scope
	}
	return out
}

// ResourceScope is one SMART resource scope, parsed.
type ResourceScope struct {
	// Context is patient, user or system.
	Context string
	// ResourceType is a FHIR resource type, or "*".
	ResourceType string
	// Permissions are the v2 letters it grants, in "cruds" order (a v1
	// "read" is "rs").
	Permissions string
	// Restricted says a v2 query narrows it to matching resources.
	Restricted bool
}

// Writes reports whether the scope lets its holder create, update or
// delete.
func (s ResourceScope) Writes() bool { return strings.ContainsAny(s.Permissions, "cud") }

// ParseResourceScope parses one SMART v1 or v2 resource scope, with the
// grammar ParseScopes uses; ok is false for anything else (identity and
// launch scopes included).
func ParseResourceScope(scope string) (s ResourceScope, ok bool) {
	r, ok := parseRule(scope)
	if !ok {
		return ResourceScope{}, false
	}
	return ResourceScope{Context: r.context, ResourceType: r.resourceType, Permissions: r.perms.String(), Restricted: r.restriction != nil}, true
}
