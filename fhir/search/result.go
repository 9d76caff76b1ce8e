package search

import (
	"slices"
	"strconv"
	"strings"

	"github.com/pfrgateway/caddy-pfr/fhir/searchparam"
)

// addResultParam handles a result-control parameter.
func (q *Query) addResultParam(name, modifier string, hasModifier bool, value string, strict bool) error {
	iterate := (name == "_include" || name == "_revinclude") && (modifier == "iterate" || modifier == "recurse")
	if hasModifier && !iterate {
		full := name + ":" + modifier
		return q.unknown(full, value, strict, "modifier :"+modifier+" is not supported on "+name)
	}
	switch name {
	case "_count", "_offset":
		n, err := strconv.Atoi(value)
		if err != nil || n < 0 {
			return invalid(name, value, "must be a non-negative integer")
		}
		if name == "_offset" {
			q.Offset = n
		} else if n == 0 {
			q.SummaryCount = true
		} else {
			q.Count = n
		}
	case "_summary":
		switch value {
		case "true", "text", "data", "false":
		case "count":
			q.SummaryCount = true
		default:
			return invalid(name, value, "must be true, text, data, count or false")
		}
		q.Summary = value
	case "_total":
		switch value {
		case "none", "estimate", "accurate":
		default:
			return invalid(name, value, "must be none, estimate or accurate")
		}
		q.Total = value
	case "_contained":
		switch value {
		case "true", "false", "both":
		default:
			return invalid(name, value, "must be true, false or both")
		}
		q.Contained = value
	case "_containedType":
		switch value {
		case "container", "contained":
		default:
			return invalid(name, value, "must be container or contained")
		}
		q.ContainedType = value
	case "_format":
		q.Format = value
		return nil
	case "_pretty":
		return nil
	case "_elements":
		elements, err := parseElements(q.ResourceType, value)
		if err != nil {
			return err
		}
		if len(elements) == 0 {
			return nil
		}
		q.Elements = append(q.Elements, elements...)
	case "_sort":
		return q.addSort(value, strict)
	case "_include", "_revinclude":
		return q.addInclude(name, modifier, value, strict, iterate)
	}
	q.applied.Add(name, value)
	return nil
}

// parseElements reads one _elements value: comma-separated top-level
// element names, each optionally prefixed with the resource type.
func parseElements(resourceType, value string) ([]string, error) {
	var out []string
	for _, e := range strings.Split(value, ",") {
		e = strings.TrimSpace(e)
		if resourceType != "" {
			e = strings.TrimPrefix(e, resourceType+".")
		}
		if e == "" {
			continue
		}
		if !isElementName(e) {
			return nil, invalid("_elements", value, "element names must be top-level names like code or subject")
		}
		out = append(out, e)
	}
	return out, nil
}

func isElementName(s string) bool {
	for i := 0; i < len(s); i++ {
		if !(isLetter(s[i]) || s[i] >= '0' && s[i] <= '9' || s[i] == '_') {
			return false
		}
	}
	return s != ""
}

// addSort parses _sort=a,-b.
func (q *Query) addSort(value string, strict bool) error {
	var applied []string
	defer func() {
		if len(applied) > 0 {
			q.applied.Add("_sort", strings.Join(applied, ","))
		}
	}()
	for _, key := range strings.Split(value, ",") {
		key = strings.TrimSpace(key)
		desc := strings.HasPrefix(key, "-")
		code := strings.TrimPrefix(key, "-")
		if code == "" {
			continue
		}
		p, why := q.lookup(code)
		if p != nil && !sortable(p) {
			p, why = nil, "cannot sort by a "+p.Type+" parameter"
		}
		if p == nil {
			if err := q.unknown("_sort", key, strict, why); err != nil {
				return err
			}
			continue
		}
		q.SortBy = append(q.SortBy, SortKey{Param: p, Descending: desc})
		applied = append(applied, key)
	}
	return nil
}

func sortable(p *searchparam.Param) bool {
	switch p.Type {
	case searchparam.TypeComposite, searchparam.TypeSpecial:
		return false
	}
	return p.Expression != ""
}

// addInclude parses _include and _revinclude values SourceType:param and
// SourceType:param:TargetType. _include's source must be the searched type.
//
// The value * is every reference parameter of every type (for _include,
// of the searched type and, with :iterate, of whatever is included);
// SourceType:* is every reference parameter of SourceType. With :iterate
// (or R3's :recurse) the include applies to included resources too; a
// non-iterating _include's source must be the searched type.
func (q *Query) addInclude(name, modifier, value string, strict, iterate bool) error {
	if value == "" {
		return nil
	}
	written := name
	if iterate {
		written += ":" + modifier
	}
	if value == "*" {
		q.appendInclude(name, Include{Param: "*", Iterate: iterate})
		q.applied.Add(written, value)
		return nil
	}
	parts := strings.Split(value, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return invalid(name, value, "must be SourceType:parameter[:TargetType] or *")
	}
	inc := Include{SourceType: parts[0], Param: parts[1], Iterate: iterate}
	if len(parts) == 3 {
		inc.TargetType = parts[2]
	}
	if !searchparam.IsResourceType(inc.SourceType) || inc.TargetType != "" && !searchparam.IsResourceType(inc.TargetType) {
		return invalid(name, value, "unknown resource type")
	}
	if name == "_include" && !iterate && q.ResourceType != "" && inc.SourceType != q.ResourceType {
		return invalid(name, value, "the source type must be the searched type "+q.ResourceType+" (or use _include:iterate)")
	}
	if inc.Param != "*" {
		p, ok := searchparam.Lookup(inc.SourceType, inc.Param)
		if !ok || p.Type != searchparam.TypeReference || p.Expression == "" {
			return q.unknown(written, value, strict, inc.SourceType+" has no reference parameter "+inc.Param)
		}
		if inc.TargetType != "" && len(p.Target) > 0 && !slices.Contains(p.Target, inc.TargetType) {
			return invalid(name, value, inc.Param+" cannot refer to "+inc.TargetType)
		}
	}
	q.appendInclude(name, inc)
	q.applied.Add(written, value)
	return nil
}

func (q *Query) appendInclude(name string, inc Include) {
	if name == "_include" {
		q.Includes = append(q.Includes, inc)
	} else {
		q.RevIncludes = append(q.RevIncludes, inc)
	}
}
