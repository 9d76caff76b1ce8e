package search

import (
	"bytes"
	"regexp"
	"slices"
	"strings"

	"github.com/pfrgateway/caddy-pfr/fhir/searchparam"
)

// Pair keys. A composite parameter whose expression is the resource
// itself and whose components are a token and one other indexed
// parameter of the type (an Observation's code-value-quantity: code and
// value-quantity) is indexed with keys that pair the two: for every code
// of the token's keys and every key of the other parameter, kindPair,
// the code, 0x01, and the other key (its kind byte and value). A search
// on the code and a value range then reads only the resources with both,
// where the code's keys alone are tens of thousands.
//
// The pairs are made of the component parameters' own keys (pairKeys),
// so a resource that matches code=x and value-quantity in a range has a
// pair key in the pair ranges (pairRanges): the pair index answers such
// a conjunction (Query.IndexFilters) and, when each component's
// expression finds no more than its parameter's (componentsCovered), the
// composite parameter itself. The system of a code is not in the pair:
// Match checks it, as it does for a bare code's kindToken range.
const kindPair = 'p'

// pairParam is an indexed composite parameter of a type and the indexed
// parameters of its two components (all three in IndexedParams).
type pairParam struct {
	param, code, value *searchparam.Param
}

// pairOf returns the indexed parameters of composite p's components on
// resourceType, when p is pair-indexed there: its expression is the
// resource itself, it has a token component and one other, each the
// definition of an indexed parameter of the type whose values include
// the component's (componentsCovered).
func pairOf(p *searchparam.Param, resourceType string) (pairParam, bool) {
	if p.Type != searchparam.TypeComposite || strings.TrimSpace(p.Expression) != resourceType {
		return pairParam{}, false
	}
	comps, err := p.ResolvedComponents()
	if err != nil || len(comps) != 2 {
		return pairParam{}, false
	}
	var params [2]*searchparam.Param
	for i, c := range comps {
		q, ok := searchparam.Lookup(resourceType, c.Param.Code)
		if !ok || q != c.Param || !Indexed(q) || !componentsCovered(c.Expr.String(), q.Expression, resourceType) {
			return pairParam{}, false
		}
		params[i] = q
	}
	if params[0].Type != searchparam.TypeToken {
		return pairParam{}, false
	}
	return pairParam{param: p, code: params[0], value: params[1]}, true
}

// componentsCovered reports whether every value a component expression
// (relative to the resource) finds is one that its parameter's expression
// finds on a resource of resourceType: each operand of the component's
// unions is, written the other way, an operand of the parameter's. Only
// element paths and casts of them are compared (code and Observation.code;
// value.as(Quantity) and (Observation.value as Quantity), type names
// compared ignoring case as FHIRPath's type test does); anything else is
// not covered.
func componentsCovered(component, param, resourceType string) bool {
	var have []string
	for _, part := range unionParts(param, resourceType) {
		if m := paramCast.FindStringSubmatch(part); m != nil && m[1] == resourceType {
			have = append(have, m[2]+" as "+strings.ToLower(m[3]))
		} else if rest, ok := strings.CutPrefix(part, resourceType+"."); ok && elementPath.MatchString(rest) {
			have = append(have, rest)
		}
	}
	for _, part := range strings.Split(component, "|") {
		part = strings.TrimSpace(part)
		var norm string
		if m := componentCast.FindStringSubmatch(part); m != nil {
			norm = m[1] + " as " + strings.ToLower(m[2])
		} else if elementPath.MatchString(part) {
			norm = part
		}
		if norm == "" || !slices.Contains(have, norm) {
			return false
		}
	}
	return true
}

var (
	elementPath   = regexp.MustCompile(`^[a-z]\w*(?:\.[a-z]\w*)*$`)
	paramCast     = regexp.MustCompile(`^\(\s*([A-Z]\w*)\.([a-z]\w*(?:\.[a-z]\w*)*)\s+as\s+([A-Za-z]\w*)\s*\)$`)
	componentCast = regexp.MustCompile(`^([a-z]\w*(?:\.[a-z]\w*)*)\.as\(\s*([A-Za-z]\w*)\s*\)$`)
)

// pairKeys returns the pair keys of the token keys codes and the keys
// values of the two components' parameters: each code (a token key's
// value before its 0x01, or all of a value cut at maxIndexValue) with
// each value key, but not a date's order key (no search reads it
// through a pair). Duplicates are removed.
func pairKeys(codes, values [][]byte) [][]byte {
	var seen [][]byte
	var out [][]byte
	for _, c := range codes {
		if len(c) == 0 || c[0] != kindToken {
			continue
		}
		code := c[1:]
		if i := bytes.IndexByte(code, 1); i >= 0 {
			code = code[:i]
		}
		if slices.ContainsFunc(seen, func(o []byte) bool { return bytes.Equal(o, code) }) {
			continue
		}
		seen = append(seen, code)
		for _, v := range values {
			switch {
			case len(v) == 0 || OrderMissing(v):
				continue
			case v[0] == kindOrder: // a date's first low key (lowAlsoOrder)
				out = append(out, pairKey(code, append([]byte{kindLow}, v[1:]...)))
				continue
			}
			out = append(out, pairKey(code, v))
		}
	}
	return out
}

// pairKey is kindPair, code, 0x01 and the value key v.
func pairKey(code, v []byte) []byte {
	k := make([]byte, 0, len(code)+len(v)+2)
	k = append(append(append(k, kindPair), code...), 1)
	return append(k, v...)
}

// pairRanges returns the pair key ranges of a token value with this code
// and the value parameter's ranges: each range under the code's prefix.
// None is Exact (the system and the pairing within one item are left to
// Match).
func pairRanges(code string, values []KeyRange) []KeyRange {
	// The code as a token key holds it: cut as indexValue cuts.
	prefix := pairKey(indexValue(kindToken, clean(code))[1:], nil)
	out := make([]KeyRange, 0, len(values))
	for _, r := range values {
		if len(r.Lo) > 0 && r.Lo[0] == kindOrder { // pair keys hold the low key (pairKeys)
			continue
		}
		out = append(out, KeyRange{
			Lo: append(slices.Clip(prefix), r.Lo...),
			Hi: append(slices.Clip(prefix), r.Hi...),
		})
	}
	return out
}

// compositeRanges returns the index ranges of one value of a
// pair-indexed composite (code$value), ok false when no index answers
// it (no code in the token part, a value part no index answers).
func compositeRanges(pp pairParam, raw string) ([]KeyRange, bool) {
	parts := splitEscaped(raw, '$')
	if len(parts) != 2 {
		return nil, false
	}
	tv, err := parseToken(parts[0])
	if err != nil || !tv.hasCode {
		return nil, false
	}
	values, ok := indexRanges(pp.value, "", parts[1])
	if !ok {
		return nil, false
	}
	return pairRanges(tv.code, values), true
}

// pairFilters returns the index filters of the pair-indexed composites
// of the query's type whose two component parameters are both filters
// of the query answered by an index, the token one without modifier:
// a resource matching both has a pair key in the codes' prefixes times
// the other filter's ranges. One filter per such pair of filters, its
// ranges Exact: implied by the two, it never makes a resource sure that
// they do not.
func (q *Query) pairFilters() []IndexFilter {
	if q.ResourceType == "" {
		return nil
	}
	var out []IndexFilter
	for _, pp := range keyPlanOf(q.ResourceType).pairParams {
		for i := range q.filters {
			fa := &q.filters[i]
			if fa.param != pp.code || fa.index == nil || fa.codes == nil {
				continue
			}
			for j := range q.filters {
				fb := &q.filters[j]
				if fb.param != pp.value || fb.index == nil {
					continue
				}
				f := IndexFilter{Param: pp.param.Code}
				for _, code := range fa.codes {
					f.Ranges = append(f.Ranges, pairRanges(code, fb.index)...)
				}
				// The two filters decide (a resource is sure only
				// when found through Exact ranges of every filter):
				// this one only narrows their candidates.
				for k := range f.Ranges {
					f.Ranges[k].Exact = true
				}
				out = append(out, f)
			}
		}
	}
	return out
}
