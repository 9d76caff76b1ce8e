package store

import (
	"net/url"

	"github.com/pfrgateway/caddy-pfr/fhir/search"
)

// searchEngine is what the store needs from a search implementation: turn
// query parameters into a plan it can run over decoded resources. The store
// owns storage, paging and Bundle assembly; the engine owns FHIR search
// semantics. engine_search.go adapts package fhir/search.
type searchEngine interface {
	// plan validates a search on resourceType. strict rejects unknown
	// parameters; otherwise they are reported in plan.unknown. Errors are
	// *fhir.Error (400).
	plan(resourceType string, params url.Values, strict bool) (*searchPlan, error)
	// params lists the search parameters of resourceType for the
	// CapabilityStatement.
	params(resourceType string) []searchParamInfo
	// includes and revIncludes list the _include and _revinclude values
	// resourceType supports, for the CapabilityStatement.
	includes(resourceType string) []string
	revIncludes(resourceType string) []string
}

// searchParamInfo describes one search parameter in the CapabilityStatement.
type searchParamInfo struct {
	Name          string
	Definition    string
	Type          string
	Documentation string
}

// searchPlan is a parsed search.
type searchPlan struct {
	// bind returns the matcher of the criteria over the partition src
	// reads (chained and _has parameters read other resources), with the
	// index filters of the criteria (joins included once resolved) and
	// whether they cover every criterion (search.Bound).
	bind func(src includeSource) (search.Bound, error)
	// sort orders matches in place per _sort (or the engine's default
	// order); nil keeps id order.
	sort func(matches []map[string]any)
	// around are alternatives (any of them) that every resource the
	// search may find has a key in (a compartment's reference
	// parameters): the candidates when the criteria have no index filter.
	around []search.IndexFilter
	// readPage makes every entry of a page be read before it is sent
	// (pages of $everything, whose references were followed, not all
	// read); a search's matches were read or vouched for by the index.
	readPage bool
	// lastUpdatedOrder is true when sort is the default order:
	// meta.lastUpdated ascending, then id (what the record headers give
	// without reading the resources).
	lastUpdatedOrder bool
	// count is _count (0 when absent); countSet tells _count=0 from absent.
	count    int
	countSet bool
	// offset is _offset: matches to skip before the first page.
	offset int
	// summaryCount is _summary=count.
	summaryCount bool
	// elements is _elements (top-level element names), nil when absent.
	elements []string
	// summary is _summary: "data" (resources without their narrative),
	// "true" or "text" (search.ApplySummary), or "" / "false" / "count".
	summary string
	// unknown lists parameters that were ignored (lenient handling).
	unknown []string
	// contained is _contained ("true", "both"; "" or "false" for the
	// resources themselves only) and containedType _containedType
	// ("container" or "contained").
	contained, containedType string
	// applied holds the parameters the plan really applies: the only ones
	// the searchset's self link shows.
	applied url.Values
	// include resolves _include and _revinclude for one page of matches;
	// nil when the search has neither.
	include func(page []map[string]any, src includeSource) ([]map[string]any, error)
	// orderParam is set when the order is one date key (orderParam,
	// orderDesc): the index of that key can give it. orderOnly is also
	// set when every resource of the type matches: the ids come from the
	// index in order, without reading a resource.
	orderOnly  bool
	orderParam string
	orderDesc  bool
}

// includeSource is what include resolution may read: the current resources
// of the partition being searched, and nothing else.
type includeSource interface {
	// Resolve returns the current resource a relative reference "Type/id"
	// points at, or nil.
	Resolve(reference string) (map[string]any, error)
	// Scan calls fn with every current resource of resourceType until fn
	// returns false.
	Scan(resourceType string, fn func(res map[string]any) bool) error
}
