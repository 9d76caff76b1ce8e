package search

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/fhir/fhirpath"
	"github.com/pfrgateway/caddy-pfr/fhir/searchparam"
)

// Query is a parsed search on one resource type. It is immutable after
// Parse and safe for concurrent use.
type Query struct {
	// ResourceType is the type searched; "" for a search across all types,
	// which accepts only the parameters every resource has (_id, _lastUpdated, …).
	ResourceType string
	// Count is _count, the page size; 0 when not given (_count=0 sets
	// SummaryCount instead, as HAPI does).
	Count int
	// Offset is _offset, the number of matches to skip; 0 when not given.
	Offset int
	// SummaryCount is true for _summary=count (or _count=0): only the total.
	SummaryCount bool
	// Summary is the _summary value: "true", "text", "data", "count",
	// "false", or "" when not given.
	Summary string
	// Elements is _elements: the top-level element names to keep.
	Elements []string
	// SortBy is _sort, in order of precedence. Less and Sort apply it.
	SortBy []SortKey
	// Includes is _include and RevIncludes is _revinclude.
	Includes, RevIncludes []Include
	// Total is _total: "none", "estimate", "accurate" or "".
	Total string
	// Contained is _contained: "true" (search the resources contained in
	// others instead), "both", "false" or "" (not given).
	Contained string
	// ContainedType is _containedType: "container" (the default: return
	// the resources that contain the matches) or "contained" (the
	// matches themselves).
	ContainedType string
	// Format is _format as given; the HTTP layer decides what it accepts.
	Format string
	// Unknown lists the parameters that lenient parsing ignored, as
	// name=value, for an OperationOutcome in the searchset. Strict parsing
	// rejects them instead, so it leaves Unknown empty.
	Unknown []string

	// unknownWhy[i] says why Unknown[i] was ignored.
	unknownWhy []string
	// applied holds the parameters this query really applies, as
	// name=value, for the searchset's self link (R4 3.1.1.5.2: it SHALL
	// list only the parameters that were applied).
	applied url.Values
	// filters must all match (AND); each ORs its values.
	filters []filter
	// joins are the chained and _has filters, which read other resources
	// (Bind); they must all match too.
	joins []*join
}

// SortKey is one _sort key.
type SortKey struct {
	Param      *searchparam.Param
	Descending bool
}

// filter is one occurrence of a filter parameter.
type filter struct {
	param    *searchparam.Param
	name     string // as written, with its modifier
	negate   bool   // :not
	missing  []bool // :missing values; empty unless the modifier is missing
	matchers []valueMatcher
	// composites replaces matchers for a composite parameter.
	composites []*compositeMatcher
	// index holds the key ranges of every value (IndexFilters), nil when
	// an index cannot answer the filter.
	index []KeyRange
	// codes are the codes of a token filter's values when index is not
	// nil (for the pair indexes: pairFilters).
	codes []string
}

// resultParams are the result-control parameters, handled apart from filters.
var resultParams = map[string]bool{
	"_count": true, "_offset": true, "_sort": true, "_summary": true, "_elements": true,
	"_include": true, "_revinclude": true, "_total": true, "_format": true, "_pretty": true,
	"_contained": true, "_containedType": true,
}

// Parse parses the search parameters of one search on resourceType.
//
// Result-control parameters (_count, _offset, _sort, _summary, _elements,
// _include, _revinclude, _total, _format, _pretty) fill the Query's
// fields; every other parameter becomes a filter. Parameters that are not
// defined for resourceType or not supported (special parameters, _text,
// _content, _include:iterate, a chain to an unknown parameter, …) are listed in
// q.Unknown when strict is false and make Parse fail with a 400 *fhir.Error
// when strict is true. An invalid value (bad date, number, prefix, token or
// reference), an unsupported modifier or an unknown resource type is a 400
// *fhir.Error naming the parameter in either mode. Empty values are
// ignored, as the specification allows.
func Parse(resourceType string, params url.Values, strict bool) (*Query, error) {
	if resourceType != "" && !searchparam.IsResourceType(resourceType) {
		return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeNotSupported, "unknown resource type %q", resourceType)
	}
	q := &Query{ResourceType: resourceType, applied: url.Values{}}
	now := time.Now()
	names := make([]string, 0, len(params))
	for name := range params {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		for _, value := range params[name] {
			if err := q.add(name, value, strict, now); err != nil {
				return nil, err
			}
		}
	}
	return q, nil
}

// add handles one name=value pair.
func (q *Query) add(name, value string, strict bool, now time.Time) error {
	base, modifier, hasModifier := strings.Cut(name, ":")
	if resultParams[base] {
		return q.addResultParam(base, modifier, hasModifier, value, strict)
	}
	if value == "" {
		return nil
	}
	switch {
	case strings.HasPrefix(name, "_has:") || base == "_has":
		return q.addHas(name, value, strict, now)
	case strings.Contains(name, "."):
		return q.addChain(name, value, strict, now)
	}
	p, why := q.lookup(base)
	switch {
	case p != nil && (p.Type == searchparam.TypeSpecial || p.Expression == ""):
		why = "parameters of type " + p.Type + " are not supported"
		if p.Expression == "" {
			why = "parameter " + base + " is not supported"
		}
	}
	if why != "" {
		return q.unknown(name, value, strict, why)
	}
	f := filter{param: p, name: name}
	switch {
	case !hasModifier:
	case modifier == "missing":
		for _, v := range splitOr(value) {
			if v != "true" && v != "false" {
				return invalid(name, value, "must be true or false")
			}
			f.missing = append(f.missing, v == "true")
		}
		q.filters = append(q.filters, f)
		q.applied.Add(name, value)
		return nil
	case modifier == "not" && p.Type == searchparam.TypeToken:
		f.negate = true
		modifier = ""
	case slices.Contains(supportedModifiers[p.Type], modifier):
	case p.Type == searchparam.TypeReference && searchparam.IsResourceType(modifier):
	default:
		return fhir.Errorf(http.StatusBadRequest, fhir.CodeNotSupported,
			"search parameter %s: modifier :%s is not supported on %s parameters", name, modifier, p.Type)
	}
	pair, paired := pairOf(p, q.ResourceType)
	indexable := !f.negate && (p.Type != searchparam.TypeComposite || paired)
	for _, v := range splitOr(value) {
		if v == "" {
			continue
		}
		if indexable {
			var r []KeyRange
			var ok bool
			if paired {
				r, ok = compositeRanges(pair, v)
			} else {
				r, ok = indexRanges(p, modifier, v)
			}
			f.index = append(f.index, r...)
			indexable = ok
			if ok && p.Type == searchparam.TypeToken {
				tv, _ := parseToken(v) // valid: it has ranges
				f.codes = append(f.codes, tv.code)
			}
		}
		if p.Type == searchparam.TypeComposite {
			c, err := newCompositeMatcher(p, v, now)
			if err != nil {
				return invalid(name, v, err.Error())
			}
			f.composites = append(f.composites, c)
			continue
		}
		m, err := newValueMatcher(p, modifier, v, now)
		if err != nil {
			return invalid(name, v, err.Error())
		}
		f.matchers = append(f.matchers, m)
	}
	if !indexable {
		f.index, f.codes = nil, nil
	}
	if len(f.matchers) > 0 || len(f.composites) > 0 {
		q.filters = append(q.filters, f)
		q.applied.Add(name, value)
	}
	return nil
}

// Applied returns the parameters the query applies, name=value as given
// (a _sort keeps only its applied keys): what a searchset's self link may
// show. Ignored parameters (Unknown), empty values and _format/_pretty are
// not in it. The caller owns the copy.
func (q *Query) Applied() url.Values {
	out := url.Values{}
	for k, v := range q.applied {
		out[k] = append([]string(nil), v...)
	}
	return out
}

// lookup finds a parameter of the query's type; with no type, only the
// parameters of every resource.
func (q *Query) lookup(code string) (*searchparam.Param, string) {
	rt := q.ResourceType
	if rt == "" {
		rt = "Parameters" // has exactly the Resource parameters
	}
	if p, ok := searchparam.Lookup(rt, code); ok {
		return p, ""
	}
	if q.ResourceType == "" {
		return nil, "unknown search parameter " + code + " for a search across all types"
	}
	return nil, "unknown search parameter " + code + " for " + q.ResourceType
}

// unknown records an ignored parameter, or rejects it when strict.
func (q *Query) unknown(name, value string, strict bool, why string) error {
	if strict {
		return fhir.Errorf(http.StatusBadRequest, fhir.CodeNotSupported, "search parameter %s: %s", name, why)
	}
	q.Unknown = append(q.Unknown, name+"="+value)
	q.unknownWhy = append(q.unknownWhy, why)
	return nil
}

// Outcome returns an OperationOutcome with one warning per parameter that
// lenient parsing ignored, for the searchset entry with search.mode
// "outcome"; nil when nothing was ignored.
func (q *Query) Outcome() *fhir.OperationOutcome {
	if len(q.Unknown) == 0 {
		return nil
	}
	oo := &fhir.OperationOutcome{ResourceType: "OperationOutcome"}
	for i, u := range q.Unknown {
		oo.Issue = append(oo.Issue, fhir.Issue{
			Severity:    fhir.SeverityWarning,
			Code:        fhir.CodeNotSupported,
			Diagnostics: "ignored search parameter " + u + ": " + q.unknownWhy[i],
		})
	}
	return oo
}

// invalid is the 400 for a bad value.
func invalid(name, value, why string) error {
	return fhir.Errorf(http.StatusBadRequest, fhir.CodeInvalid, "search parameter %s: invalid value %q: %s", name, value, why)
}

// Match reports whether res is of the query's type and satisfies every
// filter. A value whose expression cannot be evaluated on res counts as
// absent. A query with chained or _has parameters needs the other
// resources: Match never matches it (use Bind).
func (q *Query) Match(res map[string]any) bool {
	return len(q.joins) == 0 && q.matchFilters(res)
}

// matchFilters is Match without the joins.
func (q *Query) matchFilters(res map[string]any) bool {
	if res == nil {
		return false
	}
	if q.ResourceType != "" && res["resourceType"] != q.ResourceType {
		return false
	}
	for i := range q.filters {
		if !q.filters[i].match(res) {
			return false
		}
	}
	return true
}

func (f *filter) match(res map[string]any) bool {
	nodes := evaluate(f.param, res)
	if f.missing != nil {
		return slices.Contains(f.missing, len(nodes) == 0)
	}
	matched := slices.ContainsFunc(f.matchers, func(m valueMatcher) bool { return m(nodes) }) ||
		slices.ContainsFunc(f.composites, func(c *compositeMatcher) bool { return c.match(res, nodes) })
	return matched != f.negate
}

// evaluate returns the values of p in res; evaluation errors (only
// possible on malformed resources) give none, and so does a resource
// without any element p's expression reads (mayHave).
func evaluate(p *searchparam.Param, res map[string]any) []fhirpath.Node {
	return evaluateIn(p, res, shapeOf(res))
}

// evaluateIn is evaluate on res of shape s.
func evaluateIn(p *searchparam.Param, res map[string]any, s *resourceShape) []fhirpath.Node {
	nodes, _ := evaluateErr(p, res, s)
	return nodes
}

// evaluateErr is evaluateIn with the evaluation's error (nodes are then
// nil).
func evaluateErr(p *searchparam.Param, res map[string]any, s *resourceShape) ([]fhirpath.Node, error) {
	return evaluatePlanned(p, rootsOf(p, s.typ), nil, res, s)
}

// evaluatePlanned is evaluateErr with p's roots on the shape's type
// (rootsOf) and, when not nil, p's expression for that type (what
// p.Evaluate evaluates on it) given.
func evaluatePlanned(p *searchparam.Param, roots []root, expr *fhirpath.Expr, res map[string]any, s *resourceShape) ([]fhirpath.Node, error) {
	if !s.mayHaveRoots(roots, res) {
		return nil, nil
	}
	var nodes []fhirpath.Node
	var err error
	if expr != nil {
		nodes, err = expr.Evaluate(res)
	} else {
		nodes, err = p.Evaluate(res)
	}
	if err != nil {
		return nil, err
	}
	return nodes, nil
}
