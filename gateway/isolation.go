package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/fhir"
)

// isolation is what the pipeline does differently for an upstream that
// keeps partitions apart (trusted) and one that does not (untrusted, the
// default). It is chosen once, in New, from Config.TrustUpstreamIsolation:
// like google/fhir-gateway's AccessChecker, it is a small seam the core
// pipeline asks at fixed points (before a write goes upstream, when an
// answer is judged), and nowhere else is the upstream's trust looked at.
type isolation interface {
	// filters reports whether answers are filtered by ownership (keeper).
	filters() bool
	// needsStamp reports whether a resource of type typ is shown only when
	// it carries the record's stamp: nothing in it says whose it is.
	needsStamp(typ string) bool
	// stamp marks a resource about to be written as the record's.
	stamp(res map[string]any, recordID string)
	// prepareWrite readies a direct write that passed the pipeline's
	// checks for the upstream; res is the resource it writes (nil for a
	// delete), already the request's body.
	prepareWrite(rq *request, res map[string]any) error
	// prepareBundle readies a batch or transaction that passed the
	// pipeline's checks for the upstream (the caller then makes it the
	// request's body).
	prepareBundle(rq *request, bundle map[string]any) error
	// countsItself reports whether the gateway answers in by counting the
	// matches itself (serveCount) instead of asking the upstream.
	countsItself(in interaction) bool
	// filterOptions are the response filter's options for in that depend
	// on the upstream: what of its answer could tell of other records.
	filterOptions(in interaction) fhir.FilterOptions
}

// newIsolation returns the isolation policy cfg asks for.
func newIsolation(g *Gateway, cfg Config) isolation {
	if cfg.TrustUpstreamIsolation {
		return trusted{filter: !cfg.DisableResponseFilter}
	}
	return untrusted{g}
}

// trusted is the policy for an upstream that keeps partitions apart: the
// gateway sends the record's partition and leaves the rest to it, keeping
// only the response filter (defense in depth, unless disabled).
type trusted struct{ filter bool }

func (t trusted) filters() bool                              { return t.filter }
func (trusted) needsStamp(string) bool                       { return false }
func (trusted) stamp(map[string]any, string)                 {}
func (trusted) prepareWrite(*request, map[string]any) error  { return nil }
func (trusted) prepareBundle(*request, map[string]any) error { return nil }
func (trusted) countsItself(interaction) bool                { return false }
func (trusted) filterOptions(in interaction) fhir.FilterOptions {
	// HAPI serves a paged search (_getpages) to any partition that names
	// its id: its total may count another record's.
	return fhir.FilterOptions{DropTotal: in.query.Has("_getpages")}
}

// untrusted is the policy for an upstream that ignores partitions, or may:
// defense in depth, since the gateway cannot rely on the upstream to keep
// records apart. It
//   - resolves a conditional create's criteria (If-None-Exist, ifNoneExist)
//     itself with a filtered search and hands the upstream a condition that
//     can only match the record's own resource (confineIfNoneExist);
//   - filters the answers to writes (their body, Location) like reads;
//   - adds the record's stamp as a criterion (_tag) to every conditional
//     update or delete, so the upstream matches only the record's own;
//   - stamps every resource it writes with the record's id (a meta.tag of
//     RecordTagSystem), because a Practitioner or an Organization says
//     nothing about whose record it is;
//   - shows only resources that belong: the record's Patient, resources of
//     its compartment that point at it, and other resources carrying the
//     record's stamp;
//   - drops Bundle.total and resource-less history entries, which count or
//     name other people's data;
//   - counts `_summary=count` itself, over the resources it would show;
//   - reads what an update or delete targets before letting it through.
type untrusted struct{ g *Gateway }

func (untrusted) filters() bool { return true }

func (untrusted) needsStamp(typ string) bool {
	return typ != "OperationOutcome" && !fhir.InPatientCompartment(typ)
}

func (untrusted) stamp(res map[string]any, recordID string) { stamp(res, recordID) }

func (u untrusted) prepareWrite(rq *request, res map[string]any) error {
	g, in, r := u.g, rq.in, rq.r
	if res != nil {
		stamp(res, rq.rec.ID)
		if err := setJSONBody(r, res); err != nil {
			return err
		}
	}
	if in.conditional && (in.kind == auth.InteractionUpdate || in.kind == auth.InteractionDelete) {
		// Confined to the record: the upstream matches only what carries
		// the record's stamp.
		r.URL.RawQuery = recordCriterion(r.URL.RawQuery, rq.rec.ID)
		in.query.Add("_tag", RecordTagSystem+"|"+rq.rec.ID)
	}
	if err := g.checkTargetsBelong(rq, in); err != nil {
		return err
	}
	if criteria := r.Header.Get("If-None-Exist"); in.kind == auth.InteractionCreate && criteria != "" {
		confined, err := g.confineIfNoneExist(rq, in.typ, criteria)
		if err != nil {
			return err
		}
		r.Header.Del("If-None-Exist")
		if confined != "" {
			r.Header.Set("If-None-Exist", confined)
		}
	}
	return nil
}

func (u untrusted) prepareBundle(rq *request, bundle map[string]any) error {
	confineBundleConditions(bundle, rq.rec.ID)
	if err := u.g.checkEntryTargets(rq, bundle); err != nil {
		return err
	}
	if err := u.g.confineBundleIfNoneExist(rq, bundle); err != nil {
		return err
	}
	stampBundle(u, bundle, rq.rec.ID)
	return nil
}

func (untrusted) countsItself(in interaction) bool {
	return in.kind == auth.InteractionSearch && isCountOnly(in.query)
}

func (untrusted) filterOptions(in interaction) fhir.FilterOptions {
	return fhir.FilterOptions{
		DropTotal: true,
		DropResourceless: !in.keepDeletions &&
			(in.kind == auth.InteractionHistoryInstance || in.kind == auth.InteractionHistoryType),
	}
}

// RecordTagSystem is the meta.tag system of the record stamp.
const RecordTagSystem = "urn:pfr:record"

// stamp sets the record stamp on a resource about to be written, replacing
// any tag of that system a client sent.
func stamp(res map[string]any, recordID string) {
	meta, _ := res["meta"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
		res["meta"] = meta
	}
	tags, _ := meta["tag"].([]any)
	kept := make([]any, 0, len(tags)+1)
	for _, t := range tags {
		if m, ok := t.(map[string]any); ok && m["system"] == RecordTagSystem {
			continue
		}
		kept = append(kept, t)
	}
	meta["tag"] = append(kept, map[string]any{"system": RecordTagSystem, "code": recordID})
}

// stamped reports whether res carries the record's stamp.
func stamped(res map[string]any, recordID string) bool {
	meta, _ := res["meta"].(map[string]any)
	tags, _ := meta["tag"].([]any)
	for _, t := range tags {
		if m, ok := t.(map[string]any); ok && m["system"] == RecordTagSystem && m["code"] == recordID {
			return true
		}
	}
	return false
}

// stampBundle stamps, by the policy p, the resource of every entry that
// creates or updates.
func stampBundle(p isolation, bundle map[string]any, recordID string) {
	entries, _ := bundle["entry"].([]any)
	for _, e := range entries {
		entry, _ := e.(map[string]any)
		res, _ := entry["resource"].(map[string]any)
		req, _ := entry["request"].(map[string]any)
		if m, _ := req["method"].(string); res != nil && (strings.EqualFold(m, "POST") || strings.EqualFold(m, "PUT")) {
			p.stamp(res, recordID)
		}
	}
}

// keeper decides which upstream resources an answer to rq may show.
func (g *Gateway) keeper(rq *request) func(map[string]any) bool {
	o, recordID := rq.owner(), rq.rec.ID
	return func(res map[string]any) bool {
		if !o.Belongs(res, g.cfg.Ownership) {
			return false
		}
		typ, _ := res["resourceType"].(string)
		return !g.iso.needsStamp(typ) || stamped(res, recordID)
	}
}

// combinedQuick is the fast path of the response filter, on what the
// filter's one scan of an entry read (fhir.ScanEntry): the ownership rule
// (fhir.Owner.JudgeEntry) when ownership is filtered, then the scope
// filter's on the entry's type, from one judgement. Only what both decide
// to keep is kept without decoding; keeper decides what needs the decoded
// resource, notably the record stamp of non-compartment resources from an
// untrusted upstream.
func (g *Gateway) combinedQuick(rq *request, ownership bool, scope func(typ string) (bool, bool)) func(*fhir.EntryFacts) (bool, bool) {
	o := rq.owner()
	return func(entry *fhir.EntryFacts) (bool, bool) {
		typ, keep, decided := o.JudgeEntry(entry, g.cfg.Ownership)
		if ownership {
			if decided && keep && g.iso.needsStamp(typ) {
				keep, decided = false, false
			}
			if decided && !keep {
				return false, true
			}
		} else {
			keep, decided = true, true
		}
		if scope != nil {
			if typ == "" || typ == "Bundle" {
				return false, false
			}
			sk, sd := scope(typ)
			if sd && !sk {
				return false, true
			}
			if !sd {
				return false, false
			}
		}
		return keep, decided
	}
}

// checkEntryTargets runs checkTargetsBelong for every entry of a batch or
// transaction that updates or deletes.
func (g *Gateway) checkEntryTargets(rq *request, bundle map[string]any) error {
	return forEachEntry(bundle, func(_ int, in interaction) error {
		return g.checkTargetsBelong(rq, in)
	})
}

// checkTargetsBelong makes sure an update or delete touches only resources
// of this record: it reads the resource (or, for a conditional write, the
// matches) first. in is the request's interaction, or a Bundle entry's.
func (g *Gateway) checkTargetsBelong(rq *request, in interaction) error {
	if in.kind != auth.InteractionUpdate && in.kind != auth.InteractionDelete && in.kind != auth.InteractionPatch {
		return nil
	}
	rec, keep := rq.rec, g.keeper(rq)
	if !in.conditional {
		current, _, err := g.fetch(rq, in.typ, in.id)
		if fe, ok := err.(*fhir.Error); ok && (fe.Status == http.StatusNotFound || fe.Status == http.StatusGone) {
			return nil // an update may create; a delete of nothing is harmless
		}
		if err != nil {
			return err
		}
		if !keep(current) {
			g.log.Warn("security: write aimed at another person's resource", zap.String("record", rec.ID),
				zap.String("type", in.typ), zap.String("id", in.id))
			return fhir.Errorf(http.StatusNotFound, fhir.CodeNotFound, "no such resource in this record")
		}
		return nil
	}
	_, foreign, err := g.searchRecord(rq, in.typ, in.query, 1)
	if err != nil {
		return err
	}
	if foreign > 0 {
		g.log.Warn("security: conditional write would touch another person's resource", zap.String("record", rec.ID),
			zap.String("type", in.typ))
		return fhir.Errorf(http.StatusPreconditionFailed, fhir.CodeConflict, "the condition matches resources outside this record")
	}
	return nil
}

// maxCountPages bounds how many upstream pages a gateway-side count or
// check reads.
const maxCountPages = 20

// searchRecord runs a search in the record's partition and keeps what belongs to
// the record, by the response filter's rule (keeper): an upstream that does
// not keep partitions apart answers, and counts, other records' resources
// too. foreign is how many it left out. The searches the gateway makes for
// itself go through here, so none can act on another record's data.
func (g *Gateway) searchRecord(rq *request, typ string, query url.Values, pages int) (own []map[string]any, foreign int, err error) {
	found, err := g.searchAll(rq, typ, query, pages)
	if err != nil {
		return nil, 0, err
	}
	keep := g.keeper(rq)
	for _, res := range found {
		if keep(res) {
			own = append(own, res)
		} else {
			foreign++
		}
	}
	return own, foreign, nil
}

// searchPage is how many resources the gateway asks for per page of its
// own searches; it is also HAPI's default ceiling for max-results.
const searchPage = 1000

// searchAll runs a search upstream and returns the resources of up to
// pages pages of searchPage (following next links), unfiltered: callers go
// through searchRecord.
//
// The gateway's own searches must see the upstream as it is now, and leave
// nothing behind that a client's search could be answered from: HAPI keeps
// each search's results for a while (60 s by default) and answers the same
// query from them, whatever its _count. A pick-up's check for an earlier
// import, asked just before the import, then made the owner's first search
// after it come back empty. So the first page is asked with Cache-Control
// no-store (HAPI loads up to max-results at once and keeps nothing); only
// when that page is full, and so may not be all, is the search asked again
// with no-cache, page by page (fresh, but kept by HAPI). Upstreams without
// such a cache ignore the header and page as usual.
func (g *Gateway) searchAll(rq *request, typ string, query url.Values, pages int) ([]map[string]any, error) {
	q := url.Values{}
	for k, vs := range query {
		if k != "_summary" && k != "_count" && k != "_elements" && k != "_total" {
			q[k] = vs
		}
	}
	q.Set("_count", strconv.Itoa(searchPage))
	out, full, err := g.searchPages(rq, "/"+typ, q.Encode(), pages, fmt.Sprintf("no-store, max-results=%d", searchPage))
	if err != nil || !full {
		return out, err
	}
	out, _, err = g.searchPages(rq, "/"+typ, q.Encode(), pages, "no-cache")
	return out, err
}

// searchPages reads up to pages pages of a search, following next links,
// each asked with the given Cache-Control. full reports a last page that
// held searchPage matches and had no next link: an upstream that loaded
// the search at once (no-store) may have left matches out.
func (g *Gateway) searchPages(rq *request, path, rawQuery string, pages int, cacheControl string) (out []map[string]any, full bool, err error) {
	for page := 0; page < pages; page++ {
		req, route, err := g.upstreamRequest(rq, http.MethodGet, path, nil)
		if err != nil {
			return nil, false, err
		}
		req.URL.RawQuery = rawQuery
		req.Header.Set("Cache-Control", cacheControl)
		res, err := call(rq.up, req)
		if err != nil {
			return nil, false, upstreamError(err)
		}
		if res.status != http.StatusOK {
			return nil, false, &fhir.Error{Status: res.status, Issues: outcomeIssues(res.body.Bytes(), "the upstream refused the search")}
		}
		var bundle struct {
			Link []struct {
				Relation string `json:"relation"`
				URL      string `json:"url"`
			} `json:"link"`
			Entry []struct {
				Resource map[string]any `json:"resource"`
				Search   struct {
					Mode string `json:"mode"`
				} `json:"search"`
			} `json:"entry"`
		}
		if err := json.Unmarshal(res.body.Bytes(), &bundle); err != nil {
			return nil, false, fhir.Errorf(http.StatusBadGateway, fhir.CodeException, "the upstream's search answer is unreadable").WithCause(err)
		}
		matches := 0
		for _, e := range bundle.Entry {
			if e.Resource != nil && (e.Search.Mode == "" || e.Search.Mode == "match") {
				out = append(out, e.Resource)
				matches++
			}
		}
		next := ""
		for _, l := range bundle.Link {
			if l.Relation == "next" {
				next = l.URL
			}
		}
		if next == "" {
			return out, matches >= searchPage, nil
		}
		rest, ok := restBelow(next, route.UpstreamBases)
		if !ok {
			return nil, false, fhir.Errorf(http.StatusBadGateway, fhir.CodeException, "the upstream's next link is not under its base")
		}
		path, rawQuery, _ = strings.Cut(rest, "?")
	}
	return nil, false, fhir.Errorf(http.StatusUnprocessableEntity, fhir.CodeTooCostly,
		"more than %d matches; narrow the search", pages*searchPage)
}

// restBelow returns the part of an upstream URL below one of its bases.
func restBelow(link string, bases []string) (string, bool) {
	for _, b := range bases {
		if rest, ok := strings.CutPrefix(link, b); ok && (rest == "" || rest[0] == '/' || rest[0] == '?') {
			return rest, true
		}
	}
	return "", false
}

// isCountOnly reports whether a search asks only for the number of matches.
func isCountOnly(q url.Values) bool {
	return q.Get("_summary") == "count" || q.Get("_count") == "0"
}

// serveCount answers `_summary=count` by counting, over all pages, the
// matches the record may see: the upstream's own total would count
// everyone's.
func (g *Gateway) serveCount(w http.ResponseWriter, rq *request) error {
	in := rq.in
	if in.typ == "" {
		return fhir.Errorf(http.StatusBadRequest, fhir.CodeNotSupported, "_summary=count needs a resource type")
	}
	own, _, err := g.searchRecord(rq, in.typ, in.query, maxCountPages)
	if err != nil {
		return err
	}
	n := len(own)
	self := rq.base + "/" + in.typ
	if rq.r.URL.RawQuery != "" {
		self += "?" + rq.r.URL.RawQuery
	}
	fhir.WriteJSON(w, http.StatusOK, map[string]any{
		"resourceType": "Bundle", "type": "searchset", "total": n,
		"link": []any{map[string]any{"relation": "self", "url": self}},
	})
	return nil
}

// confineIfNoneExist resolves a conditional create's criteria (If-None-Exist,
// or a Bundle entry's ifNoneExist) for an upstream that does not keep
// partitions apart, where the upstream would match, and answer with, other
// people's resources. The gateway runs the search itself, keeps the
// record's own matches (the response filter's rule) and returns the
// condition the upstream gets instead: "" (no match in the record: a plain
// create), "_id=<the match>" (one match: the upstream answers with it), or
// a 412 (several matches, as FHIR says).
func (g *Gateway) confineIfNoneExist(rq *request, typ, criteria string) (string, error) {
	query, err := url.ParseQuery(strings.TrimPrefix(criteria, "?"))
	if err != nil {
		return "", fhir.Errorf(http.StatusBadRequest, fhir.CodeInvalid, "malformed If-None-Exist criteria: %v", err)
	}
	matches, foreign, err := g.searchRecord(rq, typ, query, maxCountPages)
	if err != nil {
		return "", err
	}
	var own []string
	for _, m := range matches {
		if id, _ := m["id"].(string); id != "" {
			own = append(own, id)
		}
	}
	if foreign > 0 {
		g.log.Warn("security: a conditional create's criteria match resources of other records; confined to this one",
			zap.String("record", rq.rec.ID), zap.String("type", typ), zap.Int("foreign", foreign))
	}
	switch len(own) {
	case 0:
		return "", nil
	case 1:
		return "_id=" + url.QueryEscape(own[0]), nil
	}
	return "", fhir.Errorf(http.StatusPreconditionFailed, fhir.CodeDuplicate,
		"the If-None-Exist criteria match %d %s resources of this record; they must match at most one", len(own), typ)
}

// confineBundleIfNoneExist applies confineIfNoneExist to every entry of a
// batch or transaction that creates with ifNoneExist.
func (g *Gateway) confineBundleIfNoneExist(rq *request, bundle map[string]any) error {
	entries, _ := bundle["entry"].([]any)
	for i, e := range entries {
		entry, _ := e.(map[string]any)
		req, _ := entry["request"].(map[string]any)
		criteria, _ := req["ifNoneExist"].(string)
		if criteria == "" {
			continue
		}
		path, _, _ := strings.Cut(fmt.Sprint(req["url"]), "?")
		path = strings.TrimRight(path, "/")
		typ := path[strings.LastIndexByte(path, '/')+1:]
		confined, err := g.confineIfNoneExist(rq, typ, criteria)
		if err != nil {
			fe := fhir.AsError(err)
			for j := range fe.Issues {
				fe.Issues[j].Expression = append(fe.Issues[j].Expression, fmt.Sprintf("Bundle.entry[%d].request.ifNoneExist", i))
			}
			return fe
		}
		if confined == "" {
			delete(req, "ifNoneExist")
		} else {
			req["ifNoneExist"] = confined
		}
	}
	return nil
}

// recordCriterion adds the record's own criterion to the query of a
// conditional update or delete on an untrusted upstream: _tag with the
// stamp every resource the gateway writes there carries, so the upstream
// matches (and reveals by its answer) only the record's resources, never
// another record's, and no 412 tells that someone else has a match.
func recordCriterion(rawQuery, recordID string) string {
	c := "_tag=" + url.QueryEscape(RecordTagSystem+"|"+recordID)
	if rawQuery == "" {
		return c
	}
	return rawQuery + "&" + c
}

// confineBundleConditions adds the record's criterion to every conditional
// update or delete of a batch or transaction (request.url Type?query).
func confineBundleConditions(bundle map[string]any, recordID string) {
	entries, _ := bundle["entry"].([]any)
	for _, e := range entries {
		entry, _ := e.(map[string]any)
		req, _ := entry["request"].(map[string]any)
		method, _ := req["method"].(string)
		u, _ := req["url"].(string)
		path, query, conditional := strings.Cut(u, "?")
		if !conditional || !strings.EqualFold(method, "PUT") && !strings.EqualFold(method, "DELETE") {
			continue
		}
		req["url"] = path + "?" + recordCriterion(query, recordID)
	}
}
