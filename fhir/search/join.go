package search

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/fhir/fhirpath"
	"github.com/pfrgateway/caddy-pfr/fhir/searchparam"
)

// Source is what a search that joins resources (chained parameters, _has)
// may read: the current resources of the one partition searched, and
// nothing else.
type Source interface {
	// Resolve returns the current resource a relative reference "Type/id"
	// points at, or nil.
	Resolve(reference string) (map[string]any, error)
	// Scan calls fn with every current resource of resourceType until fn
	// returns false.
	Scan(resourceType string, fn func(res map[string]any) bool) error
}

// join is a filter that needs other resources: a chained parameter
// (subject:Patient.name=x: the resource refers through param to a target
// matching sub) or a reverse chain (_has:Observation:patient:code=x:
// resources of sub's type refer to the resource through param and match
// sub).
type join struct {
	name  string
	param *searchparam.Param
	// subs are the queries on the targets of a chain, one per target
	// type; for _has, the one query on the referring type.
	subs []*Query
	has  bool
}

// addChain parses name=value where name is param[:Type].rest.
func (q *Query) addChain(name, value string, strict bool, now time.Time) error {
	if value == "" {
		return nil
	}
	head, rest, _ := strings.Cut(name, ".")
	code, typeMod, typed := strings.Cut(head, ":")
	p, why := q.lookup(code)
	if p == nil {
		return q.unknown(name, value, strict, why)
	}
	if p.Type != searchparam.TypeReference {
		return q.unknown(name, value, strict, "only reference parameters can be chained, "+code+" is a "+p.Type+" parameter")
	}
	if rest == "" {
		return invalid(name, value, "a chain names a parameter after the dot")
	}
	targets := p.Target
	if typed {
		if !searchparam.IsResourceType(typeMod) || len(p.Target) > 0 && !slices.Contains(p.Target, typeMod) {
			return invalid(name, value, code+" cannot refer to "+typeMod)
		}
		targets = []string{typeMod}
	}
	if len(targets) == 0 {
		targets = searchparam.ResourceTypes()
	}
	j := &join{name: name, param: p}
	var firstErr error
	for _, t := range targets {
		sub, err := q.subQuery(t, rest, value, now)
		if err != nil {
			firstErr = cmpErr(firstErr, err)
			continue
		}
		if sub != nil {
			j.subs = append(j.subs, sub)
		}
	}
	if len(j.subs) == 0 {
		if firstErr != nil && !isNotSupported(firstErr) {
			return firstErr
		}
		if firstErr == nil { // empty values only
			return nil
		}
		return q.unknown(name, value, strict, "no type "+code+" can refer to ("+strings.Join(targets, ", ")+") supports "+rest)
	}
	q.joins = append(q.joins, j)
	q.applied.Add(name, value)
	return nil
}

// addHas parses _has:Type:param:rest=value (rest may be another _has).
func (q *Query) addHas(name, value string, strict bool, now time.Time) error {
	if value == "" {
		return nil
	}
	parts := strings.SplitN(name, ":", 4)
	if len(parts) != 4 || parts[1] == "" || parts[2] == "" || parts[3] == "" {
		return invalid(name, value, "_has is written _has:Type:reference-parameter:parameter")
	}
	typ, code, rest := parts[1], parts[2], parts[3]
	if !searchparam.IsResourceType(typ) {
		return invalid(name, value, "unknown resource type "+typ)
	}
	p, ok := searchparam.Lookup(typ, code)
	if !ok || p.Type != searchparam.TypeReference || p.Expression == "" {
		return q.unknown(name, value, strict, typ+" has no reference parameter "+code)
	}
	if q.ResourceType != "" && len(p.Target) > 0 && !slices.Contains(p.Target, q.ResourceType) {
		return invalid(name, value, typ+"."+code+" cannot refer to "+q.ResourceType)
	}
	sub, err := q.subQuery(typ, rest, value, now)
	if err != nil {
		if isNotSupported(err) {
			return q.unknown(name, value, strict, typ+" does not support "+rest)
		}
		return err
	}
	if sub == nil {
		return nil
	}
	q.joins = append(q.joins, &join{name: name, param: p, subs: []*Query{sub}, has: true})
	q.applied.Add(name, value)
	return nil
}

// subQuery parses rest=value as a strict search on typ: a chain applies
// only what it fully understands. Result parameters cannot be chained. It
// returns nil, nil when the value is empty.
func (q *Query) subQuery(typ, rest, value string, now time.Time) (*Query, error) {
	base, _, _ := strings.Cut(rest, ":")
	if resultParams[base] {
		return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeNotSupported, "%s cannot be chained", base)
	}
	sub := &Query{ResourceType: typ, applied: url.Values{}}
	if err := sub.add(rest, value, true, now); err != nil {
		return nil, err
	}
	if len(sub.filters) == 0 && len(sub.joins) == 0 {
		return nil, nil
	}
	return sub, nil
}

// isNotSupported tells an unsupported parameter from an invalid value.
func isNotSupported(err error) bool {
	var fe *fhir.Error
	return errors.As(err, &fe) && len(fe.Issues) > 0 && fe.Issues[0].Code == fhir.CodeNotSupported
}

// cmpErr keeps the more telling of two errors: an invalid value over an
// unsupported parameter.
func cmpErr(have, err error) error {
	if have == nil || isNotSupported(have) && !isNotSupported(err) {
		return err
	}
	return have
}

// IndexedSource is a Source that can narrow a scan with index filters
// (IndexFilters): ScanIndexed calls fn with at least every current
// resource of resourceType that has a key in every filter.
type IndexedSource interface {
	Source
	ScanIndexed(resourceType string, filters []IndexFilter, fn func(res map[string]any) bool) error
}

// JoinSource is an IndexedSource that can resolve a join from its index
// alone, without reading the joined resources.
type JoinSource interface {
	IndexedSource
	// VouchedIDs returns the ids of the current resources of
	// resourceType that have keys in every filter, when the index vouches
	// that each matches them (every key found through Exact ranges); ok
	// is false when it cannot vouch for every candidate.
	VouchedIDs(resourceType string, filters []IndexFilter) (ids []string, ok bool, err error)
	// ReferencedBy returns the "Type/id" every reference of parameter
	// param of the resources ids (of resourceType, in id order) points
	// at, as the join reads them (fhirpath.SplitReference); ok is false
	// when the index cannot tell (or not cheaply).
	ReferencedBy(resourceType, param string, ids []string) (targets map[string]bool, ok bool, err error)
}

// Bind returns the matcher of the query with its joins resolved against
// src (one scan of each joined type, narrowed by its index filters when
// src is an IndexedSource). Without joins it is Match.
func (q *Query) Bind(src Source) (func(res map[string]any) bool, error) {
	b, err := q.BindIndexed(src)
	return b.Match, err
}

// maxJoinRanges bounds the index filter a resolved join becomes: a larger
// set is left to the matcher.
const maxJoinRanges = 10000

// Bound is a query bound to a partition (BindIndexed).
type Bound struct {
	// Match is the matcher, joins resolved.
	Match func(res map[string]any) bool
	// Filters are the query's index filters (IndexFilters) and one more
	// per resolved join: a chain's targets as reference keys of its
	// parameter, a _has's referenced resources as _id keys.
	Filters []IndexFilter
	// Covered is true when Filters stand for every filter and join of
	// the query: a resource of the type found through Exact ranges of
	// every filter matches without Match.
	Covered bool
}

// BindIndexed is Bind that also returns the query's index filters.
func (q *Query) BindIndexed(src Source) (Bound, error) {
	b := Bound{Filters: q.IndexFilters()}
	b.Covered = q.indexCovered()
	if len(q.joins) == 0 {
		b.Match = q.Match
		return b, nil
	}
	sets := make([]map[string]bool, len(q.joins))
	for i, j := range q.joins {
		set, err := j.resolve(src)
		if err != nil {
			return Bound{}, err
		}
		sets[i] = set
		if len(set) > maxJoinRanges {
			b.Covered = false
			continue
		}
		f := IndexFilter{Param: j.param.Code}
		if j.has {
			f.Param = "_id"
		}
		for ref := range set {
			typ, id, _ := strings.Cut(ref, "/")
			switch {
			case !j.has:
				f.Ranges = append(f.Ranges, refRange(id, typ))
			case typ == q.ResourceType:
				f.Ranges = append(f.Ranges, IDRange(id))
			}
		}
		b.Filters = append(b.Filters, f)
	}
	b.Match = func(res map[string]any) bool {
		if !q.matchFilters(res) {
			return false
		}
		for i, j := range q.joins {
			if !j.match(res, sets[i]) {
				return false
			}
		}
		return true
	}
	return b, nil
}

// resolve computes the "Type/id" set the join tests against: for a chain,
// the targets that match; for _has, what the matching referrers refer to.
func (j *join) resolve(src Source) (map[string]bool, error) {
	set := map[string]bool{}
	for _, sub := range j.subs {
		b, err := sub.BindIndexed(src)
		if err != nil {
			return nil, err
		}
		m, filters := b.Match, b.Filters
		if js, ok := src.(JoinSource); ok && b.Covered && len(filters) > 0 {
			done, err := j.resolveFromIndex(js, sub, filters, set)
			if err != nil {
				return nil, err
			}
			if done {
				continue
			}
		}
		scan := src.Scan
		if is, ok := src.(IndexedSource); ok && len(filters) > 0 {
			scan = func(typ string, fn func(map[string]any) bool) error { return is.ScanIndexed(typ, filters, fn) }
		}
		err = scan(sub.ResourceType, func(res map[string]any) bool {
			if !m(res) {
				return true
			}
			if !j.has {
				set[refOf(res)] = true
				return true
			}
			for _, n := range evaluate(j.param, res) {
				if typ, id, ok := fhirpath.SplitReference(referenceString(n.Value)); ok {
					set[typ+"/"+id] = true
				}
			}
			return true
		})
		if err != nil {
			return nil, err
		}
	}
	return set, nil
}

// resolveFromIndex adds what sub's matches give the join to set when the
// index alone can tell: every match vouched for by the index (sub is
// covered by filters), and for _has the references of param read from the
// index too. done is false when it could not (set is then unchanged).
func (j *join) resolveFromIndex(src JoinSource, sub *Query, filters []IndexFilter, set map[string]bool) (done bool, err error) {
	ids, ok, err := src.VouchedIDs(sub.ResourceType, filters)
	if err != nil || !ok {
		return false, err
	}
	if !j.has {
		for _, id := range ids {
			set[sub.ResourceType+"/"+id] = true
		}
		return true, nil
	}
	targets, ok, err := src.ReferencedBy(sub.ResourceType, j.param.Code, ids)
	if err != nil || !ok {
		return false, err
	}
	for ref := range targets {
		set[ref] = true
	}
	return true, nil
}

// match tests res against the resolved set.
func (j *join) match(res map[string]any, set map[string]bool) bool {
	if j.has {
		return set[refOf(res)]
	}
	for _, n := range evaluate(j.param, res) {
		if typ, id, ok := fhirpath.SplitReference(referenceString(n.Value)); ok && set[typ+"/"+id] {
			return true
		}
	}
	return false
}

// refOf is "Type/id" of a resource.
func refOf(res map[string]any) string {
	rt, _ := res["resourceType"].(string)
	id, _ := res["id"].(string)
	return rt + "/" + id
}

// JoinedTypes returns, without duplicates, the resource types whose
// resources a search of resourceType with params reads through chained
// parameters and _has (at any depth), whether or not Parse accepts them:
// what an authorization layer must let the caller search too, lest the
// search tell about resources it may not see.
func JoinedTypes(resourceType string, params url.Values) []string {
	seen := map[string]bool{}
	var out []string
	add := func(t string) {
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	var walk func(typ, name string, depth int)
	walk = func(typ, name string, depth int) {
		if depth > 16 {
			return
		}
		if rest, ok := strings.CutPrefix(name, "_has:"); ok {
			parts := strings.SplitN(rest, ":", 3)
			if len(parts) < 1 || parts[0] == "" {
				return
			}
			add(parts[0])
			if len(parts) == 3 {
				walk(parts[0], parts[2], depth+1)
			}
			return
		}
		head, rest, chained := strings.Cut(name, ".")
		if !chained {
			return
		}
		code, typeMod, typed := strings.Cut(head, ":")
		targets := []string{typeMod}
		if !typed {
			targets = nil
			if p, ok := searchparam.Lookup(typ, code); ok {
				targets = p.Target
			}
			if len(targets) == 0 {
				targets = searchparam.ResourceTypes()
			}
		}
		for _, t := range targets {
			add(t)
			walk(t, rest, depth+1)
		}
	}
	for name := range params {
		walk(resourceType, name, 0)
	}
	slices.Sort(out)
	return out
}
