package store

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/fhir/search"
	"github.com/pfrgateway/caddy-pfr/fhir/searchparam"
)

// formatParams are request parameters about the response format, not the
// search: they never reach the engine.
var formatParams = []string{"_format", "_pretty"}

// searchPost answers POST Type/_search: form parameters and URL parameters
// together.
func (q *request) searchPost(typ string) error {
	ct := q.r.Header.Get("Content-Type")
	if ct != "" && !strings.HasPrefix(strings.ToLower(ct), "application/x-www-form-urlencoded") {
		return fhir.Errorf(http.StatusUnsupportedMediaType, fhir.CodeNotSupported,
			"POST _search takes application/x-www-form-urlencoded, not %q", ct)
	}
	q.r.Body = http.MaxBytesReader(q.w, q.r.Body, maxBodyBytes)
	if err := q.r.ParseForm(); err != nil {
		return fhir.Errorf(http.StatusBadRequest, fhir.CodeStructure, "invalid form body: %v", err)
	}
	return q.search(typ, q.r.Form)
}

// searchParams copies params without the format parameters.
func searchParams(params url.Values) url.Values {
	out := url.Values{}
	for k, v := range params {
		out[k] = append([]string(nil), v...)
	}
	for _, k := range formatParams {
		delete(out, k)
	}
	return out
}

// unreadable collects the stored resources a read could not decode (written
// before the door refused what cannot round-trip, or damaged): they are
// left out of the answer, named in an OperationOutcome entry (search.mode
// outcome) and logged, instead of failing the whole answer. A nil
// *unreadable skips them silently.
type unreadable struct {
	refs []string
	errs []error
}

func (u *unreadable) add(ref string, err error) {
	if u == nil || slices.Contains(u.refs, ref) {
		return
	}
	u.refs = append(u.refs, ref)
	u.errs = append(u.errs, fmt.Errorf("%s: %w", ref, err))
}

// appendUnreadableOutcome reports the resources left out as unreadable in
// an OperationOutcome entry and logs each (OnInternalError).
func (q *request) appendUnreadableOutcome(b *outBundle) {
	if len(q.unreadable.refs) == 0 {
		return
	}
	oo := &fhir.OperationOutcome{ResourceType: "OperationOutcome"}
	for i, ref := range q.unreadable.refs {
		oo.Issue = append(oo.Issue, fhir.Issue{Severity: fhir.SeverityWarning, Code: fhir.CodeException,
			Diagnostics: fmt.Sprintf("%s is stored but cannot be read back (a value that does not round-trip); it was left out of this answer", ref),
			Expression:  []string{ref}})
		if q.h.cfg.OnInternalError != nil {
			q.h.cfg.OnInternalError(q.r, fmt.Errorf("store: unreadable resource left out of an answer: %w", q.unreadable.errs[i]))
		}
	}
	b.Entry = append(b.Entry, outEntry{Resource: outcomeJSON(oo), Search: &outSearch{Mode: "outcome"}})
	q.unreadable = unreadable{}
}

// run evaluates plan over the current resources of typ in the partition and
// returns the ids of the hits in order ("Type/id" with the list's prefix).
// Resources that cannot be decoded go to skip.
//
// Candidates the indexes vouch for (found through exact ranges of filters
// that cover every criterion) are not decoded nor evaluated; in the
// default order (meta.lastUpdated, then id) the record headers give their
// place, and in the order of one date key that key's index does (when
// there are enough of them that reading it costs less than decoding them),
// so only a _sort on anything else reads them.
func run(p *ptx, typ string, plan *searchPlan, skip *unreadable) (refList, error) {
	if plan.orderOnly {
		list, ok, err := p.orderedIDs(typ, plan.orderParam, plan.orderDesc, typ+"/", nil, 0, 0)
		if err != nil || ok {
			return list, err
		}
	}
	out := refListBuilder{prefix: typ + "/"}
	b, err := plan.bind(partitionSource{p, skip})
	if err != nil {
		return refList{}, err
	}
	records := p.records(typ)
	var hits []searchHit
	check := func(id string, rec []byte, sure bool) {
		h := searchHit{id: id, rec: rec}
		if !sure {
			if rec == nil {
				if rec = records.get(id); rec == nil {
					return
				}
				h.rec = rec
			}
			if h.res, err = decodeForSearch(rec[recordHeaderLen:]); err != nil {
				skip.add(typ+"/"+id, err)
				return
			}
			if !b.Match(h.res) {
				return
			}
		}
		hits = append(hits, h)
	}
	ids, exact, recs, indexed, err := p.candidateRecords(typ, b.Filters)
	if err == nil && !indexed && len(plan.around) > 0 {
		ids, indexed, err = p.unionCandidates(typ, plan.around)
		exact = make([]bool, len(ids)) // each is evaluated
	}
	switch {
	case err != nil:
		return refList{}, err
	case indexed:
		hits = make([]searchHit, 0, len(ids))
		for i, id := range ids {
			// A candidate the index vouches for is a live resource
			// (its keys go with it): its record is read only when its
			// header or body is needed, unless finding it read it.
			var rec []byte
			if recs != nil {
				rec = recs[i]
			}
			check(id, rec, b.Covered && exact[i])
		}
	default:
		if err := p.scanCurrentRecords(typ, func(id string, rec []byte) error {
			check(id, rec, false)
			return nil
		}); err != nil {
			return refList{}, err
		}
	}
	switch {
	case plan.lastUpdatedOrder:
		kept := hits[:0]
		for _, h := range hits {
			if h.rec == nil {
				if h.rec = records.get(h.id); h.rec == nil {
					continue
				}
			}
			kept = append(kept, h)
		}
		hits = kept
		slices.SortFunc(hits, func(a, b searchHit) int {
			return cmp.Or(cmp.Compare(recordLastUpdated(a.rec), recordLastUpdated(b.rec)), strings.Compare(a.id, b.id))
		})
	case plan.orderParam != "" && len(hits) >= orderWalkMin:
		ordered, ok, err := orderByIndex(p, typ, plan, hits)
		if err != nil || ok {
			return ordered, err
		}
		fallthrough
	default:
		res := make([]map[string]any, 0, len(hits))
		for _, h := range hits {
			if h.res == nil {
				if h.rec == nil {
					if h.rec = records.get(h.id); h.rec == nil {
						continue
					}
				}
				if h.res, err = decodeForSearch(h.rec[recordHeaderLen:]); err != nil {
					skip.add(typ+"/"+h.id, err)
					continue
				}
			}
			res = append(res, h.res)
		}
		if plan.sort != nil {
			plan.sort(res)
		}
		for _, r := range res {
			id, _ := r["id"].(string)
			out.addString(id)
		}
		return out.list(), nil
	}
	for _, h := range hits {
		out.addString(h.id)
	}
	return out.list(), nil
}

// searchHit is a match: its id, its stored record (valid in the
// transaction; nil until read) and, when it was evaluated, the decoded
// resource.
type searchHit struct {
	id  string
	rec []byte
	res map[string]any
}

// orderWalkMin is how many matches a search sorted by one date key needs
// before their order is read from the key's index (all of it, up to
// orderWalkPerHit keys per match) instead of decoding each.
const orderWalkMin = 32

// orderWalkPerHit is how many index keys reading the order may cost per
// match: about what decoding one resource costs.
const orderWalkPerHit = 256

// orderByIndex returns the hits in the order of plan's date sort key, read
// from its index; ok is false when the index cannot give it or reading it
// would cost more than decoding the hits.
func orderByIndex(p *ptx, typ string, plan *searchPlan, hits []searchHit) (refList, bool, error) {
	set := newIDSet(len(hits))
	for _, h := range hits {
		set.addString(h.id)
	}
	keep := func(id []byte) bool {
		_, in := set.lookup(id)
		return in
	}
	return p.orderedIDs(typ, plan.orderParam, plan.orderDesc, typ+"/", keep, len(hits), orderWalkPerHit*len(hits))
}

// searchesContained reports whether the plan searches contained resources
// (_contained=true or both).
func (plan *searchPlan) searchesContained() bool {
	return plan.contained == "true" || plan.contained == "both"
}

// runRefs evaluates plan like run and returns the hits as references:
// "Type/id" for the resources themselves and, with _contained=true or
// both, for the containers of the contained resources that match
// (_containedType=container, deduplicated) or "Container/id#cid" for the
// contained matches themselves (_containedType=contained). With
// _contained=both the resources themselves come first; each group keeps
// the _sort order.
func runRefs(p *ptx, typ string, plan *searchPlan, skip *unreadable) (refList, error) {
	if !plan.searchesContained() {
		return run(p, typ, plan, skip)
	}
	var refs []string
	if plan.contained == "both" {
		ids, err := run(p, typ, plan, skip)
		if err != nil {
			return refList{}, err
		}
		refs = ids.Slice(0, ids.Len())
	}
	bound, err := plan.bind(partitionSource{p, skip})
	if err != nil {
		return refList{}, err
	}
	match := bound.Match
	var hits []map[string]any
	var holders []string
	for _, ct := range searchparam.ResourceTypes() {
		err := p.scanCurrent(ct, func(id string, raw []byte) error {
			res, err := decodeForSearch(raw)
			if err != nil {
				skip.add(ct+"/"+id, err)
				return nil
			}
			contained, _ := res["contained"].([]any)
			for _, c := range contained {
				cr, ok := c.(map[string]any)
				if !ok || cr["resourceType"] != typ || !match(cr) {
					continue
				}
				cid, _ := cr["id"].(string)
				hits = append(hits, cr)
				holders = append(holders, ct+"/"+id+"#"+cid)
			}
			return nil
		})
		if err != nil {
			return refList{}, err
		}
	}
	order := make([]int, len(hits))
	for i := range order {
		order[i] = i
	}
	if plan.sort != nil {
		// Sort the hits and carry their holders along: each hit is
		// tagged with its index in a shallow copy the sort reads.
		tagged := make([]map[string]any, len(hits))
		for i, h := range hits {
			cp := make(map[string]any, len(h)+1)
			for k, v := range h {
				cp[k] = v
			}
			cp[sortIndexKey] = i
			tagged[i] = cp
		}
		plan.sort(tagged)
		for i, h := range tagged {
			order[i] = h[sortIndexKey].(int)
		}
	}
	seen := map[string]bool{}
	for _, i := range order {
		ref := holders[i]
		if plan.containedType != "contained" {
			ref, _, _ = strings.Cut(ref, "#")
		}
		if !seen[ref] {
			seen[ref] = true
			refs = append(refs, ref)
		}
	}
	return packRefs(refs), nil
}

// sortIndexKey carries a hit's position through the sort of contained
// matches; no FHIR element starts with a space.
const sortIndexKey = " index"

// matchIDs returns the ids of the current resources of typ matching params
// (conditional create, update, delete and references).
func (h *handler) matchIDs(p *ptx, typ string, params url.Values) ([]string, error) {
	plan, err := h.engine.plan(typ, searchParams(params), true)
	if err != nil {
		return nil, err
	}
	if plan.searchesContained() {
		return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeNotSupported,
			"_contained cannot select the resource of a conditional interaction")
	}
	hits, err := run(p, typ, plan, nil)
	return hits.bareAll(), err
}

// search answers a type search.
func (q *request) search(typ string, params url.Values) error {
	return q.searchWithin(typ, "/"+typ, params, nil, nil)
}

// searchWithin answers a search of typ, at path (for the self link),
// among the resources within accepts (a compartment), or all when within
// is nil. Every resource within accepts has a key in one of the index
// filters around (the compartment's reference parameters): they give the
// candidates when the search itself has no index filter.
func (q *request) searchWithin(typ, path string, params url.Values, within func(map[string]any) bool, around []search.IndexFilter) error {
	params = searchParams(params)
	plan, err := q.h.engine.plan(typ, params, preferStrict(q.r))
	if err != nil {
		return err
	}
	if within != nil {
		plan.orderOnly = false
		bind := plan.bind
		plan.bind = func(src includeSource) (search.Bound, error) {
			b, err := bind(src)
			if err != nil {
				return b, err
			}
			match := b.Match
			b.Match = func(res map[string]any) bool { return within(res) && match(res) }
			b.Covered = false // the compartment is checked on each resource
			return b, nil
		}
		plan.around = around
	}
	count := defaultPageSize
	if plan.countSet {
		count = min(max(plan.count, 0), maxPageSize)
	}
	self := q.base + path + queryString(plan.applied)
	want := plan.offset + count
	if plan.summaryCount {
		want = 0
	}

	var (
		total, offset, end int
		page               []string // "Type/id" of the page's matches
		searchID           string
	)
	writes, idle := q.h.db.writeState(q.part)
	if err := q.h.db.view(q.part, func(p *ptx) error {
		if within == nil {
			op, ok, err := orderedPage(p, typ, plan, want)
			if err != nil {
				return err
			}
			if ok {
				total = op.total
				offset = min(plan.offset, total)
				end = min(offset+count, total, len(op.ids))
				for _, id := range op.ids[min(offset, end):end] {
					page = append(page, typ+"/"+id)
				}
				if !plan.summaryCount && (end < total || offset > 0) {
					// Placed later, maybe in another goroutine: from a
					// plan of its own.
					query, eng := params.Encode(), q.h.engine
					snap := &searchSnapshot{Partition: q.part, Kind: snapshotSearch, Type: typ, Query: query,
						place: func(p *ptx) (refList, error) {
							params, err := url.ParseQuery(query)
							if err != nil {
								return refList{}, fmt.Errorf("search snapshot query: %w", err)
							}
							plan, err := eng.plan(typ, params, false)
							if err != nil {
								return refList{}, err
							}
							return runRefs(p, typ, plan, nil)
						}}
					searchID, err = q.h.db.saveLazySnapshot(p, snap, total, writes, idle)
				}
				return err
			}
		}
		refs, err := runRefs(p, typ, plan, &q.unreadable)
		if err != nil {
			return err
		}
		total = refs.Len()
		offset = min(plan.offset, total)
		end = min(offset+count, total)
		page = refs.Slice(offset, end)
		if !plan.summaryCount && (end < total || offset > 0) {
			snap := &searchSnapshot{Partition: q.part, Kind: snapshotSearch, Type: typ, Query: params.Encode(), Refs: refs}
			searchID, err = q.h.db.saveSnapshot(snap)
		}
		return err
	}); err != nil {
		return err
	}
	b := q.newBundle("searchset")
	b.Total = &total
	b.Link = []outLink{{Relation: "self", URL: self}}
	if plan.summaryCount {
		q.appendUnknownOutcome(b, plan)
		q.appendUnreadableOutcome(b)
		q.writeBundle(http.StatusOK, b)
		return nil
	}
	if end < total {
		b.Link = append(b.Link, outLink{Relation: "next", URL: q.snapshotLink(searchID, snapshotSearch, end, count)})
	}
	if offset > 0 {
		b.Link = append(b.Link, outLink{Relation: "previous", URL: q.snapshotLink(searchID, snapshotSearch, max(offset-count, 0), count)})
	}
	if err := q.fillPage(b, page, plan); err != nil {
		return err
	}
	q.writeBundle(http.StatusOK, b)
	return nil
}

// fillPage adds the match entries of page ("Type/id" references), their
// includes and the outcome entry to b, reading current versions in one
// transaction. plan is nil for $everything pages.
func (q *request) fillPage(b *outBundle, page []string, plan *searchPlan) error {
	if plan == nil {
		// $everything: its references were followed, not all read.
		plan = &searchPlan{readPage: true}
	}
	if err := q.h.db.view(q.part, func(p *ptx) error { return q.fillPageIn(p, b, page, plan) }); err != nil {
		return err
	}
	q.appendUnknownOutcome(b, plan)
	q.appendUnreadableOutcome(b)
	return nil
}

// fillPageIn adds the match entries of page and their includes to b,
// reading in p: a page of a search, or a search inside a Bundle's
// transaction (the same rule for _include and _revinclude in both).
func (q *request) fillPageIn(p *ptx, b *outBundle, page []string, plan *searchPlan) error {
	var resources []map[string]any
	seen := map[string]bool{}
	for _, ref := range page {
		ref, cid, isContained := strings.Cut(ref, "#")
		typ, id, _ := strings.Cut(ref, "/")
		rec, err := p.current(typ, id)
		if err != nil {
			return err
		}
		if rec == nil || rec.Deleted {
			// Deleted since the search ran: the page keeps its place
			// in the snapshot but cannot show what no longer exists.
			continue
		}
		stored := rec.Body
		fullURL := q.resourceURL(typ, id)
		if isContained {
			// _containedType=contained: the contained resource itself,
			// addressed inside its container.
			if stored, err = containedBody(rec.Body, cid); err != nil || stored == nil {
				if err != nil {
					q.unreadable.add(ref, err)
				}
				continue
			}
			fullURL += "#" + cid
		}
		body, full, err := project(stored, plan)
		if err != nil {
			q.unreadable.add(ref, err)
			continue
		}
		if isContained {
			b.Entry = append(b.Entry, outEntry{FullURL: fullURL, Resource: body, Search: &outSearch{Mode: "match"}})
			continue
		}
		seen[typ+"/"+id] = true
		// Includes follow the stored resource, not what _elements or
		// _summary left of it.
		resources = append(resources, full)
		b.Entry = append(b.Entry, outEntry{FullURL: fullURL, Resource: body, Search: &outSearch{Mode: "match"}})
	}
	if plan.include == nil || len(resources) == 0 {
		return nil
	}
	included, err := plan.include(resources, partitionSource{p, &q.unreadable})
	if err != nil {
		return err
	}
	for _, inc := range included {
		rt, _ := inc["resourceType"].(string)
		id, _ := inc["id"].(string)
		if seen[rt+"/"+id] {
			continue
		}
		seen[rt+"/"+id] = true
		rec, err := p.current(rt, id)
		if err != nil {
			return err
		}
		if rec == nil || rec.Deleted {
			continue
		}
		b.Entry = append(b.Entry, outEntry{FullURL: q.resourceURL(rt, id), Resource: rec.Body, Search: &outSearch{Mode: "include"}})
	}
	return nil
}

// appendUnknownOutcome reports ignored parameters (lenient handling) as an
// OperationOutcome entry with search.mode outcome.
func (q *request) appendUnknownOutcome(b *outBundle, plan *searchPlan) {
	if len(plan.unknown) == 0 {
		return
	}
	oo := &fhir.OperationOutcome{ResourceType: "OperationOutcome"}
	for _, name := range plan.unknown {
		oo.Issue = append(oo.Issue, fhir.Issue{Severity: fhir.SeverityWarning, Code: fhir.CodeNotSupported,
			Diagnostics: fmt.Sprintf("unknown search parameter %q was ignored", name)})
	}
	b.Entry = append(b.Entry, outEntry{Resource: outcomeJSON(oo), Search: &outSearch{Mode: "outcome"}})
}

// project applies _elements (the named top-level elements plus the
// mandatory ones) or _summary=data (everything but the narrative),
// true (the isSummary elements) or text (text, id, meta and the mandatory
// elements), marking
// the result SUBSETTED. It returns the JSON to send and the decoded full
// resource (what includes are resolved from).
func project(body []byte, plan *searchPlan) (json.RawMessage, map[string]any, error) {
	if len(plan.elements) == 0 && plan.summary != "data" && plan.summary != "true" && plan.summary != "text" && plan.include == nil && !plan.readPage {
		// A match of a search (read when it was found, or vouched for
		// by the index, which names unreadable resources as such):
		// sent as stored, nothing to include from it.
		return body, nil, nil
	}
	res, err := decodeForSearch(body)
	if err != nil {
		return nil, nil, err
	}
	var out map[string]any
	switch {
	case len(plan.elements) > 0:
		out = search.ApplyElements(res, plan.elements)
	case plan.summary == "data" || plan.summary == "true" || plan.summary == "text":
		out = search.ApplySummary(res, plan.summary)
	default:
		return body, res, nil
	}
	raw, err := encodeResource(out)
	if err != nil {
		return nil, nil, err
	}
	return raw, res, nil
}

// containedBody returns the JSON of the resource contained in body with
// id cid, or nil when it has none.
func containedBody(body []byte, cid string) ([]byte, error) {
	var holder struct {
		Contained []json.RawMessage `json:"contained"`
	}
	if err := json.Unmarshal(body, &holder); err != nil {
		return nil, err
	}
	for _, c := range holder.Contained {
		var head struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(c, &head) == nil && head.ID == cid {
			return c, nil
		}
	}
	return nil, nil
}

// partitionSource lets include resolution read one partition; resources it
// cannot decode go to skip.
type partitionSource struct {
	p    *ptx
	skip *unreadable
}

// Resolve implements includeSource.
func (s partitionSource) Resolve(reference string) (map[string]any, error) {
	typ, id, ok := strings.Cut(reference, "/")
	if !ok || !fhir.IsResourceType(typ) || !fhir.IsID(id) {
		return nil, nil
	}
	rec, err := s.p.current(typ, id)
	if err != nil || rec == nil || rec.Deleted {
		return nil, err
	}
	res, err := decodeForSearch(rec.Body)
	if err != nil {
		s.skip.add(reference, err)
		return nil, nil
	}
	return res, nil
}

// ScanIndexed implements search.IndexedSource: the candidates of the
// filters, or every resource when the index cannot tell.
func (s partitionSource) ScanIndexed(resourceType string, filters []search.IndexFilter, fn func(map[string]any) bool) error {
	ids, _, ok, err := s.p.indexCandidates(resourceType, filters)
	if err != nil || !ok {
		if err == nil {
			err = s.Scan(resourceType, fn)
		}
		return err
	}
	for _, id := range ids {
		raw := s.p.currentBody(resourceType, id)
		if raw == nil {
			continue
		}
		res, err := decodeForSearch(raw)
		if err != nil {
			s.skip.add(resourceType+"/"+id, err)
			continue
		}
		if !fn(res) {
			return nil
		}
	}
	return nil
}

// VouchedIDs implements search.JoinSource.
func (s partitionSource) VouchedIDs(resourceType string, filters []search.IndexFilter) ([]string, bool, error) {
	ids, exact, ok, err := s.p.indexCandidates(resourceType, filters)
	if err != nil || !ok || slices.Contains(exact, false) {
		return nil, false, err
	}
	return ids, true, nil
}

// ReferencedBy implements search.JoinSource.
func (s partitionSource) ReferencedBy(resourceType, param string, ids []string) (map[string]bool, bool, error) {
	return s.p.referencedBy(resourceType, param, ids)
}

// Scan implements includeSource.
func (s partitionSource) Scan(resourceType string, fn func(map[string]any) bool) error {
	stop := fmt.Errorf("stop")
	err := s.p.scanCurrent(resourceType, func(id string, raw []byte) error {
		res, err := decodeForSearch(raw)
		if err != nil {
			s.skip.add(resourceType+"/"+id, err)
			return nil
		}
		if !fn(res) {
			return stop
		}
		return nil
	})
	if err == stop {
		return nil
	}
	return err
}
