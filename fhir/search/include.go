package search

import (
	"strings"

	"github.com/pfrgateway/caddy-pfr/fhir/fhirpath"
	"github.com/pfrgateway/caddy-pfr/fhir/searchparam"
)

// Include is one _include or _revinclude: resources of SourceType refer
// through their reference parameter Param to resources of TargetType (any
// type when empty). Param "*" is every reference parameter of the source;
// SourceType "" (from _include=* or _revinclude=*) is any type. Iterate
// (:iterate) applies the include to included resources too.
type Include struct {
	SourceType, Param, TargetType string
	Iterate                       bool
}

// String returns the include as written in a URL: Source:param[:Target],
// or * for every reference of every type.
func (inc Include) String() string {
	if inc.SourceType == "" {
		return "*"
	}
	s := inc.SourceType + ":" + inc.Param
	if inc.TargetType != "" {
		s += ":" + inc.TargetType
	}
	return s
}

// References returns the "Type/id" targets of inc.Param in res, for
// _include: relative references as they are, absolute URLs reduced to
// their Type/id, filtered by TargetType, without duplicates. Contained
// (#id), urn:uuid and identifier-only references are not returned. A res
// that is not of SourceType gives nil.
func (inc Include) References(res map[string]any) []string {
	var out []string
	seen := map[string]bool{}
	for _, n := range inc.nodes(res) {
		typ, id, ok := fhirpath.SplitReference(referenceString(n.Value))
		if !ok || inc.TargetType != "" && typ != inc.TargetType {
			continue
		}
		if ref := typ + "/" + id; !seen[ref] {
			seen[ref] = true
			out = append(out, ref)
		}
	}
	return out
}

// Refers reports whether res, of SourceType, refers through inc.Param to
// the resource targetType/id, for _revinclude.
func (inc Include) Refers(res map[string]any, targetType, id string) bool {
	if inc.TargetType != "" && inc.TargetType != targetType {
		return false
	}
	for _, n := range inc.nodes(res) {
		typ, rid, ok := fhirpath.SplitReference(referenceString(n.Value))
		if ok && typ == targetType && rid == id {
			return true
		}
	}
	return false
}

// nodes evaluates the include's parameter (every reference parameter for
// *) on res when res is of SourceType (any type when SourceType is "").
func (inc Include) nodes(res map[string]any) []fhirpath.Node {
	if res == nil {
		return nil
	}
	rt, _ := res["resourceType"].(string)
	if inc.SourceType != "" && rt != inc.SourceType {
		return nil
	}
	if inc.Param == "*" {
		var out []fhirpath.Node
		for _, p := range searchparam.ForType(rt) {
			if p.Type == searchparam.TypeReference && p.Expression != "" {
				out = append(out, evaluate(p, res)...)
			}
		}
		return out
	}
	p, ok := searchparam.Lookup(rt, inc.Param)
	if !ok || p.Type != searchparam.TypeReference {
		return nil
	}
	return evaluate(p, res)
}

// RevIncludeFilters returns index filters for a _revinclude of inc from
// resources of sourceType to targets ("Type/id"): one per reference
// parameter inc reads on sourceType (every one for *), each holding the
// reference keys of the targets. A resource inc includes for one of the
// targets has a key in at least one of them (not necessarily in all: they
// are alternatives, not a conjunction).
func (inc Include) RevIncludeFilters(sourceType string, targets []string) []IndexFilter {
	if inc.SourceType != "" && inc.SourceType != sourceType {
		return nil
	}
	var ranges []KeyRange
	for _, ref := range targets {
		typ, id, ok := strings.Cut(ref, "/")
		if ok && (inc.TargetType == "" || inc.TargetType == typ) {
			ranges = append(ranges, refRange(id, typ))
		}
	}
	if len(ranges) == 0 {
		return nil
	}
	var out []IndexFilter
	for _, p := range searchparam.ForType(sourceType) {
		if p.Type == searchparam.TypeReference && p.Expression != "" && (inc.Param == "*" || inc.Param == p.Code) {
			out = append(out, IndexFilter{Param: p.Code, Ranges: ranges})
		}
	}
	return out
}
