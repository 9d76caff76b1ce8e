package search

import (
	"cmp"
	"math/big"
	"slices"
	"strings"
	"time"

	"github.com/pfrgateway/caddy-pfr/fhir/fhirpath"
	"github.com/pfrgateway/caddy-pfr/fhir/searchparam"
)

// sortValue is the value a resource sorts by for one key. Exactly one of
// the kinds is set when present.
type sortValue struct {
	present bool
	t       time.Time
	n       *big.Rat
	s       string
}

// compareSortValues orders two values of the same key; missing values
// come last whatever the direction, so desc only flips present values.
func compareSortValues(a, b sortValue, desc bool) int {
	switch {
	case !a.present && !b.present:
		return 0
	case !a.present:
		return 1
	case !b.present:
		return -1
	}
	var c int
	switch {
	case a.n != nil && b.n != nil:
		c = a.n.Cmp(b.n)
	case !a.t.IsZero() || !b.t.IsZero():
		c = a.t.Compare(b.t)
	default:
		c = strings.Compare(a.s, b.s)
	}
	if desc {
		c = -c
	}
	return c
}

// sortValueOf returns the value res sorts by for p: the first value the
// expression finds, read as the parameter type says. Dates sort by the
// start of their range, strings without case or accents, tokens by code,
// references by their reference string.
func sortValueOf(p *searchparam.Param, res map[string]any) sortValue {
	for _, n := range evaluate(p, res) {
		if v, ok := sortValueOfNode(p.Type, n); ok {
			return v
		}
	}
	return sortValue{}
}

func sortValueOfNode(typ string, n fhirpath.Node) (sortValue, bool) {
	switch typ {
	case searchparam.TypeDate:
		if r := dateRangesOf(n.Value); len(r) > 0 {
			return sortValue{present: true, t: r[0].lo}, true
		}
	case searchparam.TypeNumber, searchparam.TypeQuantity:
		v := n.Value
		if m, ok := v.(map[string]any); ok {
			v = m["value"]
			if low, ok := m["low"].(map[string]any); ok && v == nil {
				v = low["value"]
			}
		}
		if r, ok := toRat(v); ok {
			return sortValue{present: true, n: r}, true
		}
	case searchparam.TypeString:
		if s := stringsOf(n.Value); len(s) > 0 {
			return sortValue{present: true, s: normalize(strings.Join(s, " "))}, true
		}
	case searchparam.TypeToken:
		if c := codesOf(n.Value); len(c) > 0 {
			return sortValue{present: true, s: c[0].code}, true
		}
		if m, ok := n.Value.(map[string]any); ok {
			if t, ok := m["text"].(string); ok {
				return sortValue{present: true, s: t}, true
			}
		}
	case searchparam.TypeReference, searchparam.TypeURI:
		if s := referenceString(n.Value); s != "" {
			return sortValue{present: true, s: s}, true
		}
	}
	return sortValue{}, false
}

// lastUpdatedParam gives the default order (ties are broken by type and id).
var lastUpdatedParam = mustParam("_lastUpdated")

func mustParam(code string) *searchparam.Param {
	p, ok := searchparam.Lookup("Parameters", code)
	if !ok {
		panic("search parameter " + code + " missing from the registry")
	}
	return p
}

// keys is the list of sort keys applied: _sort, or _lastUpdated ascending
// when none is given; then the resource type and id, so that the order is
// total and stable across pages.
func (q *Query) keys() []SortKey {
	keys := q.SortBy
	if len(keys) == 0 {
		keys = []SortKey{{Param: lastUpdatedParam}}
	}
	return keys
}

// Less reports whether a sorts before b: by the _sort keys (each by the
// parameter's first value; resources without a value last in either
// direction), or by meta.lastUpdated ascending when _sort is not given;
// ties are broken by resourceType, then id, so the order is total and
// stable while paging.
func (q *Query) Less(a, b map[string]any) bool {
	for _, k := range q.keys() {
		if c := compareSortValues(sortValueOf(k.Param, a), sortValueOf(k.Param, b), k.Descending); c != 0 {
			return c < 0
		}
	}
	return tieBreak(a, b) < 0
}

func tieBreak(a, b map[string]any) int {
	at, _ := a["resourceType"].(string)
	bt, _ := b["resourceType"].(string)
	ai, _ := a["id"].(string)
	bi, _ := b["id"].(string)
	return cmp.Or(strings.Compare(at, bt), strings.Compare(ai, bi))
}

// Sort sorts resources in the order of Less, evaluating each key once per
// resource.
func (q *Query) Sort(resources []map[string]any) {
	keys := q.keys()
	type decorated struct {
		res    map[string]any
		values []sortValue
	}
	list := make([]decorated, len(resources))
	for i, r := range resources {
		list[i] = decorated{res: r, values: make([]sortValue, len(keys))}
		for j, k := range keys {
			list[i].values[j] = sortValueOf(k.Param, r)
		}
	}
	slices.SortStableFunc(list, func(a, b decorated) int {
		for j, k := range keys {
			if c := compareSortValues(a.values[j], b.values[j], k.Descending); c != 0 {
				return c
			}
		}
		return tieBreak(a.res, b.res)
	})
	for i := range list {
		resources[i] = list[i].res
	}
}
