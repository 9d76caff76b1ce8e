package gateway

import (
	"net/url"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/fhir/search"
)

// The scope rule (one for every answer): SMART scopes are applied by
// filtering, not by refusing. A request is authorized on what it names (the
// type it reads or searches, the operation it calls); then every resource
// of the answer (search matches and what _include, _revinclude,
// $everything, history, batch and transaction answers and operations add) is
// shown only when the token's scopes let it see that resource: an r or s
// scope on its type, and for a v2 query-restricted scope
// (patient/Observation.rs?category=laboratory) only when the resource
// matches the restriction, evaluated by the search engine. Everything else
// is removed, like another person's resource, and logged.

// scopeKeeper returns the keep function of the scope filter, or nil when
// the grants see every resource (no filter needed).
func scopeKeeper(grants auth.Grants) func(map[string]any) bool {
	if grants.SeesEverything() {
		return nil
	}
	return func(res map[string]any) bool {
		typ, _ := res["resourceType"].(string)
		if typ == "OperationOutcome" {
			return true
		}
		switch grants.Visible(typ) {
		case auth.SeeAll:
			return true
		case auth.SeeNone:
			return false
		}
		return grants.VisibleWith(typ, func(restriction url.Values) bool {
			q, err := search.Parse(typ, restriction, true)
			return err == nil && q.Match(res)
		})
	}
}

// scopeQuick is scopeKeeper's fast path on a resource type read from the
// raw entry: decided when the type is fully visible or not at all.
func scopeQuick(grants auth.Grants) func(typ string) (keep, decided bool) {
	if grants.SeesEverything() {
		return nil
	}
	return func(typ string) (bool, bool) {
		if typ == "OperationOutcome" {
			return true, true
		}
		switch grants.Visible(typ) {
		case auth.SeeAll:
			return true, true
		case auth.SeeNone:
			return false, true
		}
		return false, false
	}
}

// both keeps what every non-nil keep function keeps.
func both(keeps ...func(map[string]any) bool) func(map[string]any) bool {
	var only func(map[string]any) bool
	n := 0
	for _, k := range keeps {
		if k != nil {
			only, n = k, n+1
		}
	}
	if n <= 1 {
		return only // nil or the one rule: nothing to combine (the usual request)
	}
	set := make([]func(map[string]any) bool, 0, n)
	for _, k := range keeps {
		if k != nil {
			set = append(set, k)
		}
	}
	return func(res map[string]any) bool {
		for _, k := range set {
			if !k(res) {
				return false
			}
		}
		return true
	}
}
