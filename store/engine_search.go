package store

import (
	"net/url"
	"slices"
	"sync"

	"github.com/pfrgateway/caddy-pfr/fhir/search"
	"github.com/pfrgateway/caddy-pfr/fhir/searchparam"
)

// engine adapts package search, the FHIR search engine, to the store.
type engine struct{}

// newSearchEngine returns the store's search engine.
func newSearchEngine() searchEngine { return engine{} }

// plan implements searchEngine.
func (engine) plan(resourceType string, params url.Values, strict bool) (*searchPlan, error) {
	q, err := search.Parse(resourceType, params, strict)
	if err != nil {
		return nil, err
	}
	unknown := q.Unknown
	applied := q.Applied()
	p := &searchPlan{
		bind: func(src includeSource) (search.Bound, error) {
			return q.BindIndexed(src)
		},
		sort:             q.Sort,
		lastUpdatedOrder: len(q.SortBy) == 0,
		count:            q.Count,
		countSet:         q.Count > 0,
		offset:           q.Offset,
		summaryCount:     q.SummaryCount,
		elements:         q.Elements,
		summary:          q.Summary,
		contained:        q.Contained,
		containedType:    q.ContainedType,
		unknown:          unknown,
		applied:          applied,
	}
	if param, desc, ok := q.OrderParam(); ok {
		p.orderParam, p.orderDesc = param, desc
		p.orderOnly = q.Unfiltered()
	}
	if len(q.Includes) > 0 || len(q.RevIncludes) > 0 {
		p.include = func(page []map[string]any, src includeSource) ([]map[string]any, error) {
			return resolveIncludes(q, page, src)
		}
	}
	return p, nil
}

// resolveIncludes follows _include from the page's resources to what they
// reference, and _revinclude from resources that reference the page's. The
// includes marked :iterate then apply again to what was included, until
// nothing new comes (each resource is taken once, so it ends within the
// partition).
func resolveIncludes(q *search.Query, page []map[string]any, src includeSource) ([]map[string]any, error) {
	var out []map[string]any
	seen := map[string]bool{}
	for _, res := range page {
		seen[refOf(res)] = true
	}
	frontier := page
	for round := 0; len(frontier) > 0; round++ {
		var added []map[string]any
		add := func(res map[string]any) {
			if ref := refOf(res); !seen[ref] {
				seen[ref] = true
				added = append(added, res)
			}
		}
		for _, inc := range q.Includes {
			if round > 0 && !inc.Iterate {
				continue
			}
			for _, res := range frontier {
				for _, ref := range inc.References(res) {
					if seen[ref] {
						continue
					}
					target, err := src.Resolve(ref)
					if err != nil {
						return nil, err
					}
					if target != nil {
						add(target)
					}
				}
			}
		}
		targets := map[string]bool{}
		var targetList []string
		for _, res := range frontier {
			targets[refOf(res)] = true
			targetList = append(targetList, refOf(res))
		}
		for _, inc := range q.RevIncludes {
			if round > 0 && !inc.Iterate {
				continue
			}
			sources := []string{inc.SourceType}
			if inc.SourceType == "" {
				sources = searchparam.ResourceTypes()
			}
			for _, st := range sources {
				check := func(cand map[string]any) bool {
					if !seen[refOf(cand)] && slices.ContainsFunc(inc.References(cand), func(ref string) bool { return targets[ref] }) {
						add(cand)
					}
					return true
				}
				if err := revIncludeScan(src, inc, st, targetList, check); err != nil {
					return nil, err
				}
			}
		}
		out = append(out, added...)
		frontier = added
	}
	return out, nil
}

// revIncludeScan calls fn with the resources of sourceType that may refer
// to targets through inc: through the index, once per reference parameter
// inc reads (a resource may come more than once), else every resource.
func revIncludeScan(src includeSource, inc search.Include, sourceType string, targets []string, fn func(map[string]any) bool) error {
	is, ok := src.(search.IndexedSource)
	if !ok || len(targets) > maxRevIncludeTargets {
		return src.Scan(sourceType, fn)
	}
	for _, f := range inc.RevIncludeFilters(sourceType, targets) {
		if err := is.ScanIndexed(sourceType, []search.IndexFilter{f}, fn); err != nil {
			return err
		}
	}
	return nil
}

// maxRevIncludeTargets bounds the targets a _revinclude looks up in the
// index (one range each); beyond, it reads every source resource once.
const maxRevIncludeTargets = 10000

// refOf is "Type/id" of a decoded resource.
func refOf(res map[string]any) string {
	rt, _ := res["resourceType"].(string)
	id, _ := res["id"].(string)
	return rt + "/" + id
}

// params implements searchEngine: the parameters search really evaluates
// (composite and special ones are not).
func (engine) params(resourceType string) []searchParamInfo {
	var out []searchParamInfo
	for _, p := range searchparam.ForType(resourceType) {
		if p.Type == searchparam.TypeComposite || p.Type == searchparam.TypeSpecial || p.Expression == "" {
			continue
		}
		info := searchParamInfo{Name: p.Code, Definition: p.URL, Type: p.Type}
		if p.Type == searchparam.TypeReference {
			info.Documentation = "Chainable to any depth: " + p.Code + ".{parameter}, " + p.Code + ":{Type}.{parameter} (a typeless chain tries every target type that has the parameter)."
		}
		out = append(out, info)
	}
	if len(revIncludeTable()[resourceType]) > 0 {
		out = append(out, searchParamInfo{Name: "_has", Type: searchparam.TypeSpecial,
			Documentation: "Reverse chaining: _has:{Type}:{reference parameter}:{parameter}={value}, nested and with chains inside; any reference parameter listed in searchRevInclude."})
	}
	return out
}

// includes implements searchEngine: Type:param for each reference parameter.
func (engine) includes(resourceType string) []string {
	return includeTable()[resourceType]
}

// revIncludes implements searchEngine: Source:param for every reference
// parameter that may point at resourceType.
func (engine) revIncludes(resourceType string) []string {
	return revIncludeTable()[resourceType]
}

var (
	includeOnce           sync.Once
	includes, revIncludes map[string][]string
)

func buildIncludeTables() {
	includes, revIncludes = map[string][]string{}, map[string][]string{}
	types := searchparam.ResourceTypes()
	for _, src := range types {
		for _, p := range searchparam.ForType(src) {
			if p.Type != searchparam.TypeReference || p.Expression == "" {
				continue
			}
			includes[src] = append(includes[src], src+":"+p.Code)
			for _, target := range types {
				if len(p.Target) == 0 || slices.Contains(p.Target, target) {
					revIncludes[target] = append(revIncludes[target], src+":"+p.Code)
				}
			}
		}
	}
}

func includeTable() map[string][]string {
	includeOnce.Do(buildIncludeTables)
	return includes
}

func revIncludeTable() map[string][]string {
	includeOnce.Do(buildIncludeTables)
	return revIncludes
}
