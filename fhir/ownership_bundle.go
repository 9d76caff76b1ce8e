package fhir

import (
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
)

// CheckWrite checks a direct write before it reaches the upstream: method
// is POST (create), PUT (update, conditional update), PATCH (the patched
// result, checked like an update) or DELETE (res nil), target is the request path and query
// relative to the FHIR base ("Observation", "Patient/123",
// "Observation?identifier=x"), ifNoneExist is the If-None-Exist header of a
// conditional create ("" if none), and res is the parsed body, or for
// PATCH the resource as the patch leaves it. Pass the path as the client
// sent it, still percent-encoded (URL.EscapedPath), so that encoded
// slashes and dots are seen; _format, _pretty, _summary and _elements in
// the query are ignored. It applies the same rules as
// a Bundle entry (see CheckBundle) and CheckResource.
func (o Owner) CheckWrite(method, target, ifNoneExist string, res map[string]any, p OwnershipPolicy) []Issue {
	typ, _ := res["resourceType"].(string)
	if res == nil {
		typ = ""
	}
	if method == "PATCH" {
		method = "PUT"
	}
	return o.checkRequest(request{
		method: method, url: withoutFormatParams(target), ifNoneExist: ifNoneExist,
		res: res, urlLoc: "", resLoc: typ,
	}, p, nil)
}

// formatParams shape the response, not the resources a request names.
var formatParams = []string{"_format", "_pretty", "_summary", "_elements"}

// withoutFormatParams removes formatParams from the query of target, so
// that "Observation?_format=json" is checked as the create it is.
func withoutFormatParams(target string) string {
	path, query, found := strings.Cut(target, "?")
	if !found {
		return target
	}
	values, err := url.ParseQuery(query)
	if err != nil {
		return target // refused later as a malformed query
	}
	for _, name := range formatParams {
		values.Del(name)
	}
	if len(values) == 0 {
		return path
	}
	return path + "?" + values.Encode()
}

// request is one write or Bundle entry to check.
type request struct {
	method, url, ifNoneExist string
	res                      map[string]any // nil when the request carries none
	urlLoc, resLoc           string         // FHIRPath locations for issues
}

// CheckBundle checks a transaction or batch Bundle before any of it is
// written, and returns every issue found, each naming its entry
// ("Bundle.entry[3].request.url", "Bundle.entry[3].resource.subject").
// Any issue refuses the Bundle whole.
//
// Each entry's fullUrl, when a "urn:uuid:" or "urn:oid:" (syntax checked,
// unique in the Bundle), stands inside the Bundle for the resource the
// entry writes: "Patient/{id}" for a PUT of the PFR's Patient, "Type" for a
// create; references to it are judged as references to that target.
// Absolute fullUrls are not aliases: references are judged as written.
//
// Each entry's request:
//   - url: relative to this record's base (one leading "/" tolerated); no
//     absolute URL or other host, no "." or "..", no percent-encoding in the
//     path, no operations; the resource type must be known;
//   - POST: url is the resource's type; never a Patient (a create gives a
//     new Patient id); ifNoneExist is a conditional query on that type;
//   - PUT: Type/id with resource.id = id, or Type?query on the resource's
//     own type; a Patient only as Patient/{the PFR's id};
//   - DELETE: Type/id or Type?query; never a Patient (the PFR's own Patient
//     is deleted with the record, through the management API);
//   - GET, HEAD: reads; never another Patient by id; their responses go
//     through FilterSearchset;
//   - PATCH is refused: its result cannot be judged from the entry. The
//     gateway first turns every PATCH entry of a client's Bundle into the
//     PUT of its judged result (gateway/patch.go); one left here (a
//     drop-off, an import) is refused.
//
// Conditional queries may use only the type's search parameters, no
// chained parameters, no _has, _include, _revinclude or _type, and no
// value naming another Patient. Every resource written goes through
// CheckResource.
func (o Owner) CheckBundle(bundle map[string]any, p OwnershipPolicy) []Issue {
	if bundle["resourceType"] != "Bundle" {
		return []Issue{ownershipIssue(CodeInvalid, "resourceType", "not a Bundle")}
	}
	if typ := bundle["type"]; typ != "transaction" && typ != "batch" {
		return []Issue{ownershipIssue(CodeInvalid, "Bundle.type",
			fmt.Sprintf("Bundle of type %v: only a transaction or a batch is written entry by entry", typ))}
	}
	rawEntries, ok := bundle["entry"].([]any)
	if !ok && bundle["entry"] != nil {
		return []Issue{ownershipIssue(CodeStructure, "Bundle.entry", "entry must be an array")}
	}
	entries := make([]map[string]any, len(rawEntries))
	var issues []Issue
	for i, raw := range rawEntries {
		e, ok := raw.(map[string]any)
		if !ok {
			issues = append(issues, ownershipIssue(CodeStructure, entryLoc(i), "entry must be an object"))
			continue
		}
		entries[i] = e
	}
	uuids, uuidIssues := o.bundleAliases(entries)
	issues = append(issues, uuidIssues...)
	for i, e := range entries {
		if e == nil {
			continue
		}
		issues = append(issues, o.checkEntry(i, e, p, uuids)...)
	}
	return issues
}

// checkEntry checks one entry of a transaction or batch.
func (o Owner) checkEntry(i int, e map[string]any, p OwnershipPolicy, uuids map[string]string) []Issue {
	loc := entryLoc(i)
	req, ok := e["request"].(map[string]any)
	if !ok {
		return []Issue{ownershipIssue(CodeRequired, loc+".request", "every entry of a transaction or batch needs a request")}
	}
	method, _ := req["method"].(string)
	rawURL, _ := req["url"].(string)
	ifNoneExist, _ := req["ifNoneExist"].(string)
	r := request{
		method: method, url: rawURL, ifNoneExist: ifNoneExist,
		urlLoc: loc + ".request.url", resLoc: loc + ".resource",
	}
	if res, present := e["resource"]; present {
		m, ok := res.(map[string]any)
		if !ok {
			return []Issue{ownershipIssue(CodeStructure, r.resLoc, "resource must be an object")}
		}
		r.res = m
	}
	if method == "PATCH" {
		return []Issue{ownershipIssue(CodeNotSupported, loc+".request.method",
			"PATCH inside a Bundle is not accepted: its result cannot be checked before it is written; PUT the patched resource or PATCH it directly")}
	}
	return o.checkRequest(r, p, uuids)
}

// checkRequest applies the per-method rules to one write or entry, then
// CheckResource to the resource it carries.
func (o Owner) checkRequest(r request, p OwnershipPolicy, uuids map[string]string) []Issue {
	urlIssue := func(format string, args ...any) []Issue {
		return []Issue{ownershipIssue(CodeInvalid, r.urlLoc, fmt.Sprintf("request url %q: ", r.url)+fmt.Sprintf(format, args...))}
	}
	resIssue := func(code, format string, args ...any) []Issue {
		return []Issue{ownershipIssue(code, r.resLoc, fmt.Sprintf(format, args...))}
	}
	t, err := parseRequestTarget(r.url)
	if err != nil {
		return urlIssue("%v", err)
	}
	resType, _ := r.res["resourceType"].(string)
	switch r.method {
	case "POST", "PUT":
		switch {
		case r.res == nil:
			return resIssue(CodeRequired, "a %s needs a resource", r.method)
		case resType != t.typ:
			return urlIssue("names type %s but the resource is a %q", t.typ, resType)
		}
	case "DELETE", "GET", "HEAD":
		if r.res != nil {
			return resIssue(CodeInvalid, "a %s carries no resource", r.method)
		}
	default:
		return []Issue{ownershipIssue(CodeNotSupported, strings.TrimSuffix(r.urlLoc, ".url")+".method",
			fmt.Sprintf("method %q is not allowed here", r.method))}
	}
	if err := o.checkMethodTarget(r, t); err != nil {
		return urlIssue("%v", err)
	}
	if r.res == nil {
		return nil
	}
	return o.CheckResource(r.res, r.resLoc, p, uuids)
}

// checkMethodTarget applies the rules of r.method to its parsed url t.
func (o Owner) checkMethodTarget(r request, t requestTarget) error {
	switch r.method {
	case "POST":
		switch {
		case t.id != "" || t.history || t.hasQuery:
			return fmt.Errorf("a create names only the resource type")
		case t.typ == "Patient":
			return fmt.Errorf("creating a Patient is refused: this record holds only its own Patient %s", o.selfReference())
		case r.ifNoneExist != "":
			return o.checkIfNoneExist(t.typ, r.ifNoneExist)
		}
	case "PUT":
		switch {
		case t.instance():
			id, _ := r.res["id"].(string)
			if id != t.id {
				return fmt.Errorf("resource.id %q differs from the id in the url", id)
			}
			if t.typ == "Patient" && t.id != o.PatientID {
				return fmt.Errorf("the target Patient/%s is not this record's Patient (%s)", t.id, o.selfReference())
			}
		case t.conditional():
			if t.typ == "Patient" {
				return fmt.Errorf("a conditional update of a Patient may match another person: update %s by id", o.selfReference())
			}
			return o.checkQuery(t, true)
		default:
			return fmt.Errorf("an update names Type/id or Type?query")
		}
	case "DELETE":
		switch {
		case t.typ == "Patient" && t.id == o.PatientID:
			return fmt.Errorf("this record's own Patient cannot be deleted; delete the record instead")
		case t.typ == "Patient":
			return fmt.Errorf("deleting a Patient other than this record's (%s) is refused", o.selfReference())
		case t.instance():
		case t.conditional():
			return o.checkQuery(t, true)
		default:
			return fmt.Errorf("a delete names Type/id or Type?query")
		}
	case "GET", "HEAD":
		if t.typ == "Patient" && t.id != "" && t.id != o.PatientID {
			return fmt.Errorf("the target Patient/%s is not this record's Patient (%s)", t.id, o.selfReference())
		}
		if t.hasQuery {
			return o.checkQuery(t, false)
		}
	}
	return nil
}

// checkIfNoneExist checks the query of a conditional create on typ. It may
// be written as "query" or "Type?query" with typ as Type.
func (o Owner) checkIfNoneExist(typ, ifNoneExist string) error {
	query := ifNoneExist
	if before, after, found := strings.Cut(ifNoneExist, "?"); found {
		if before != typ {
			return fmt.Errorf("ifNoneExist %q: a conditional create may only query its own type %s", ifNoneExist, typ)
		}
		query = after
	}
	if err := o.checkQuery(requestTarget{typ: typ, query: query, hasQuery: true}, true); err != nil {
		return fmt.Errorf("ifNoneExist %q: %w", ifNoneExist, err)
	}
	return nil
}

// urnPattern matches the fullUrls that stand for an entry inside a Bundle.
var urnPattern = regexp.MustCompile(`^(urn:uuid:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|urn:oid:[0-2](\.(0|[1-9][0-9]*))+)$`)

// bundleAliases maps each urn fullUrl of an entry that writes a resource
// (POST or PUT) to what it stands for: "Type/id" for a PUT by id, "Type"
// otherwise. A malformed urn fullUrl or one used twice is an issue: two
// entries behind one name would let a reference be judged against the
// wrong one.
func (o Owner) bundleAliases(entries []map[string]any) (map[string]string, []Issue) {
	uuids := map[string]string{}
	seen := map[string]int{}
	var issues []Issue
	for i, e := range entries {
		fullURL, _ := e["fullUrl"].(string)
		if !strings.HasPrefix(fullURL, "urn:") {
			continue
		}
		loc := entryLoc(i) + ".fullUrl"
		if !urnPattern.MatchString(fullURL) {
			issues = append(issues, ownershipIssue(CodeInvalid, loc, fmt.Sprintf("fullUrl %q is not a valid urn:uuid or urn:oid", fullURL)))
			continue
		}
		if first, dup := seen[fullURL]; dup {
			issues = append(issues, ownershipIssue(CodeDuplicate, loc, fmt.Sprintf("fullUrl %q is also the fullUrl of entry %d", fullURL, first)))
			delete(uuids, fullURL)
			continue
		}
		seen[fullURL] = i
		req, _ := e["request"].(map[string]any)
		res, _ := e["resource"].(map[string]any)
		method, _ := req["method"].(string)
		rawURL, _ := req["url"].(string)
		typ, _ := res["resourceType"].(string)
		if res == nil || method != "POST" && method != "PUT" || !IsResourceType(typ) {
			continue
		}
		target := typ
		if t, err := parseRequestTarget(rawURL); err == nil && method == "PUT" && t.instance() && t.typ == typ {
			target = typ + "/" + t.id
		}
		uuids[fullURL] = target
	}
	return uuids, issues
}

// entryLoc is the FHIRPath of entry i.
func entryLoc(i int) string { return "Bundle.entry[" + strconv.Itoa(i) + "]" }
