package search

import (
	"net/url"
)

// Shaping returns how a request for resources of resourceType ("" for
// several types) asks for them cut down: its _elements, or its _summary
// true, text or data (R4: _elements is ignored when _summary is given).
// It returns nil when the resources are to be returned whole (no such
// parameter, _summary=false, or _summary=count, which returns none). A
// value that is not valid is a 400 error.
//
// A gateway that must judge whole resources (ownership, scopes) asks its
// upstream without these parameters and applies the shape itself.
func Shaping(resourceType string, params url.Values) (func(map[string]any) map[string]any, error) {
	if vs, ok := params["_summary"]; ok && len(vs) > 0 {
		mode := vs[len(vs)-1]
		switch mode {
		case "true", "text", "data":
			return func(res map[string]any) map[string]any { return ApplySummary(res, mode) }, nil
		case "false", "count":
			return nil, nil
		default:
			return nil, invalid("_summary", mode, "must be true, text, data, count or false")
		}
	}
	var elements []string
	for _, v := range params["_elements"] {
		es, err := parseElements(resourceType, v)
		if err != nil {
			return nil, err
		}
		elements = append(elements, es...)
	}
	if len(elements) == 0 {
		return nil, nil
	}
	return func(res map[string]any) map[string]any { return ApplyElements(res, elements) }, nil
}
