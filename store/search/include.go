package search

import (
	"github.com/pfrgateway/caddy-pfr/fhir/fhirpath"
	"github.com/pfrgateway/caddy-pfr/fhir/searchparam"
)

// Include is one _include or _revinclude: resources of SourceType refer
// through their reference parameter Param to resources of TargetType (any
// type when empty).
type Include struct {
	SourceType, Param, TargetType string
}

// String returns the include as written in a URL: Source:param[:Target].
func (inc Include) String() string {
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

// nodes evaluates the include's parameter on res when res is of SourceType.
func (inc Include) nodes(res map[string]any) []fhirpath.Node {
	if res == nil || res["resourceType"] != inc.SourceType {
		return nil
	}
	p, ok := searchparam.Lookup(inc.SourceType, inc.Param)
	if !ok || p.Type != searchparam.TypeReference {
		return nil
	}
	return evaluate(p, res)
}
