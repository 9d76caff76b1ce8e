package store

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/fhir/fhirjson"
)

// inBundle is a Bundle POSTed to the base.
type inBundle struct {
	ResourceType string    `json:"resourceType"`
	Type         string    `json:"type"`
	Entry        []inEntry `json:"entry"`
}

type inEntry struct {
	FullURL  string          `json:"fullUrl"`
	Resource json.RawMessage `json:"resource"`
	Request  *struct {
		Method      string `json:"method"`
		URL         string `json:"url"`
		IfNoneMatch string `json:"ifNoneMatch"`
		IfMatch     string `json:"ifMatch"`
		IfNoneExist string `json:"ifNoneExist"`
	} `json:"request"`
}

// entry is one parsed Bundle entry with what processing it produced.
type entry struct {
	index       int
	fullURL     string
	method      string
	url         string // request.url as sent
	typ, id     string
	query       string // conditional criteria, or the GET query
	version     string // GET Type/id/_history/v
	ifMatch     string
	ifNoneExist string
	res         resource
	patch       *fhir.Patch // a PATCH entry's patch

	// Results.
	result *writeResult
	get    *getResult
}

// getResult is the answer to a GET entry.
type getResult struct {
	status int
	rec    *record
	body   json.RawMessage
}

// bundle answers POST base: a transaction or a batch.
func (q *request) bundle() error {
	body, err := readBody(q.w, q.r)
	if err != nil {
		return err
	}
	// The door: what cannot round-trip is refused, naming its path.
	if err := fhirjson.Check(body); err != nil {
		return fhir.JSONError(err)
	}
	var in inBundle
	if err := json.Unmarshal(body, &in); err != nil {
		return fhir.Errorf(http.StatusBadRequest, fhir.CodeStructure, "invalid JSON body: %v", err)
	}
	if in.ResourceType != "Bundle" {
		return fhir.Errorf(http.StatusBadRequest, fhir.CodeInvalid,
			"the base accepts a Bundle of type transaction or batch, got %q", in.ResourceType)
	}
	switch in.Type {
	case "transaction":
		return q.transaction(&in)
	case "batch":
		return q.batch(&in)
	}
	return fhir.Errorf(http.StatusBadRequest, fhir.CodeInvalid,
		"Bundle type %q cannot be processed: POST a transaction or batch to the base, or store the Bundle with POST %s/Bundle", in.Type, q.h.cfg.BasePath)
}

// parseEntry validates one entry and splits its request URL.
func (q *request) parseEntry(i int, in inEntry) (*entry, error) {
	e := &entry{index: i, fullURL: in.FullURL}
	fail := func(status int, code, format string, args ...any) error {
		return fhir.Errorf(status, code, "Bundle.entry[%d]: %s", i, fmt.Sprintf(format, args...)).
			WithExpression(fmt.Sprintf("Bundle.entry[%d]", i))
	}
	if in.Request == nil {
		return e, fail(http.StatusBadRequest, fhir.CodeRequired, "request is missing")
	}
	e.method = strings.ToUpper(in.Request.Method)
	e.url = in.Request.URL
	e.ifMatch = in.Request.IfMatch
	e.ifNoneExist = in.Request.IfNoneExist

	// request.url is relative to the base; accept our own absolute base too.
	target := strings.TrimPrefix(in.Request.URL, q.base)
	target = strings.TrimPrefix(target, "/")
	path, query, _ := strings.Cut(target, "?")
	e.query = query
	if path = strings.Trim(path, "/"); path == "" {
		return e, fail(http.StatusBadRequest, fhir.CodeInvalid, "request.url %q names no resource type", in.Request.URL)
	}
	segs := strings.Split(path, "/")
	if !fhir.IsResourceType(segs[0]) {
		return e, fail(http.StatusBadRequest, fhir.CodeNotSupported, "request.url %q: unknown resource type %q", in.Request.URL, segs[0])
	}
	for _, s := range segs[1:] {
		if strings.HasPrefix(s, "$") {
			return e, fail(http.StatusBadRequest, fhir.CodeNotSupported, "operation %s is not supported in a Bundle entry", s)
		}
	}
	p, err := fhir.ParsePath(path)
	vread := p.History && p.VersionID != "" && e.method == http.MethodGet
	if err != nil || p.Search || p.Compartment != "" || p.History && !vread {
		return e, fail(http.StatusBadRequest, fhir.CodeInvalid, "request.url %q is not a supported entry URL", in.Request.URL)
	}
	e.typ, e.id, e.version = p.Type, p.ID, p.VersionID

	switch e.method {
	case http.MethodPost:
		if e.id != "" || e.query != "" {
			return e, fail(http.StatusBadRequest, fhir.CodeInvalid, "POST request.url must be a resource type, got %q", in.Request.URL)
		}
	case http.MethodPut:
		if e.id == "" && e.query == "" {
			return e, fail(http.StatusBadRequest, fhir.CodeInvalid, "PUT request.url needs an id or search criteria, got %q", in.Request.URL)
		}
	case http.MethodDelete:
		if e.id == "" && e.query == "" {
			return e, fail(http.StatusBadRequest, fhir.CodeInvalid, "DELETE request.url needs an id or search criteria, got %q", in.Request.URL)
		}
	case http.MethodGet, http.MethodHead:
		e.method = http.MethodGet
	case http.MethodPatch:
		if e.id == "" && e.query == "" {
			return e, fail(http.StatusBadRequest, fhir.CodeInvalid, "PATCH request.url needs an id or search criteria, got %q", in.Request.URL)
		}
		if len(in.Resource) == 0 {
			return e, fail(http.StatusBadRequest, fhir.CodeRequired, "PATCH needs a resource: a Binary holding a JSON Patch or a FHIRPath Patch Parameters")
		}
		res, err := parseResource(in.Resource)
		if err != nil {
			return e, fmt.Errorf("entry %d (Bundle.entry[%d]): %w", i, i, err)
		}
		if e.patch, err = fhir.PatchFromResource(res); err != nil {
			return e, entryError(e, err)
		}
		return e, nil
	default:
		return e, fail(http.StatusBadRequest, fhir.CodeInvalid, "request.method %q is not one of GET, POST, PUT, PATCH, DELETE", in.Request.Method)
	}

	if e.method == http.MethodPost || e.method == http.MethodPut {
		if len(in.Resource) == 0 {
			return e, fail(http.StatusBadRequest, fhir.CodeRequired, "%s needs a resource", e.method)
		}
		res, err := parseResource(in.Resource)
		if err != nil {
			return e, fmt.Errorf("entry %d (Bundle.entry[%d]): %w", i, i, err)
		}
		if res.Type() != e.typ {
			return e, fail(http.StatusBadRequest, fhir.CodeInvalid, "resource type %s does not match request.url %q", res.Type(), in.Request.URL)
		}
		if e.method == http.MethodPut && e.id != "" && res.ID() == "" {
			return e, fail(http.StatusBadRequest, fhir.CodeRequired, "the resource to update must contain an id (expected %q)", e.id)
		}
		if e.method == http.MethodPut && e.id != "" && res.ID() != e.id {
			return e, fail(http.StatusBadRequest, fhir.CodeInvalid, "resource id %q does not match request.url %q", res.ID(), in.Request.URL)
		}
		e.res = res
	}
	return e, nil
}

// entryError prefixes err with the entry it belongs to, keeping its status.
func entryError(e *entry, err error) error {
	fe := fhir.AsError(err)
	if fe.Status == http.StatusInternalServerError {
		return err
	}
	out := *fe
	out.Issues = append([]fhir.Issue(nil), fe.Issues...)
	if len(out.Issues) > 0 && !strings.HasPrefix(out.Issues[0].Diagnostics, "Bundle.entry[") {
		out.Issues[0].Diagnostics = fmt.Sprintf("Bundle.entry[%d] (%s %s): %s", e.index, e.method, e.url, out.Issues[0].Diagnostics)
	}
	return &out
}

// get runs a GET entry: read, vread or search, against the state of p.
func (h *handler) get(q *request, p *ptx, e *entry) (*getResult, error) {
	switch {
	case e.version != "":
		v, err := strconv.ParseUint(e.version, 10, 64)
		if err != nil || v == 0 {
			return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeValue, "invalid version id %q", e.version)
		}
		rec, err := p.version(e.typ, e.id, v)
		if err != nil {
			return nil, err
		}
		if rec.Deleted {
			return nil, fhir.Errorf(http.StatusGone, fhir.CodeDeleted, "Version %d of %s/%s is a deletion", v, e.typ, e.id)
		}
		return &getResult{status: http.StatusOK, rec: rec, body: rec.Body}, nil
	case e.id != "":
		rec, err := p.live(e.typ, e.id)
		if err != nil {
			return nil, err
		}
		return &getResult{status: http.StatusOK, rec: rec, body: rec.Body}, nil
	}
	params, err := url.ParseQuery(e.query)
	if err != nil {
		return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeInvalid, "invalid query %q", e.query)
	}
	body, err := q.searchInTx(p, e.typ, params)
	if err != nil {
		return nil, err
	}
	return &getResult{status: http.StatusOK, body: body}, nil
}

// searchInTx runs a search inside a Bundle's transaction: one page, no
// paging links (a snapshot cannot be saved from inside the transaction).
func (q *request) searchInTx(p *ptx, typ string, params url.Values) (json.RawMessage, error) {
	params = searchParams(params)
	plan, err := q.h.engine.plan(typ, params, preferStrict(q.r))
	if err != nil {
		return nil, err
	}
	count := defaultPageSize
	if plan.countSet {
		count = min(max(plan.count, 0), maxPageSize)
	}
	hits, err := runRefs(p, typ, plan, &q.unreadable)
	if err != nil {
		return nil, err
	}
	total := hits.Len()
	b := q.newBundle("searchset")
	b.Total = &total
	b.Link = []outLink{{Relation: "self", URL: q.base + "/" + typ + queryString(plan.applied)}}
	if !plan.summaryCount {
		if err := q.fillPageIn(p, b, hits.Slice(0, min(count, total)), plan); err != nil {
			return nil, err
		}
	}
	q.appendUnknownOutcome(b, plan)
	q.appendUnreadableOutcome(b)
	return b.appendJSON(make([]byte, 0, b.sizeHint())), nil
}

// responseEntry renders the response of one processed entry.
func (q *request) responseEntry(e *entry) outEntry {
	var out outEntry
	resp := &outResponse{}
	ret := preference(q.r, "return")
	switch {
	case e.get != nil:
		resp.Status = statusLine(e.get.status)
		out.Resource = e.get.body
		if e.get.rec != nil {
			out.FullURL = q.resourceURL(e.typ, e.get.rec.ID)
			resp.Etag = e.get.rec.etag()
			resp.LastModified = instant(e.get.rec.LastUpdated)
		}
	case e.result != nil:
		r := e.result
		resp.Status = statusLine(r.Status)
		if r.Rec != nil {
			resp.Etag = r.Rec.etag()
			resp.LastModified = instant(r.Rec.LastUpdated)
			if !r.Rec.Deleted {
				out.FullURL = q.resourceURL(r.Rec.Type, r.Rec.ID)
				resp.Location = r.Rec.Type + "/" + r.Rec.ID + "/_history/" + r.Rec.versionID()
				if strings.EqualFold(ret, returnRepresentation) {
					out.Resource = r.Rec.Body
				}
			}
		}
		if strings.EqualFold(ret, returnOperationOutcome) || r.Rec == nil || r.Rec.Deleted {
			resp.Outcome = outcomeJSON(fhir.NewOutcome(fhir.SeverityInformation, fhir.CodeInformational, r.Message))
		}
	}
	out.Response = resp
	return out
}

// errorEntry renders a failed batch entry.
func errorEntry(err error) outEntry {
	fe := fhir.AsError(err)
	return outEntry{Response: &outResponse{Status: statusLine(fe.Status), Outcome: outcomeJSON(fe.Outcome())}}
}
