package search

import (
	"maps"
	"strings"
)

//go:generate go run gensummary.go

// ApplySummary returns a copy of res for _summary=data (all but text),
// _summary=true (the elements the
// R4 StructureDefinition of its type marks isSummary, inside backbone
// elements too; data types are kept whole) or _summary=text (text, id,
// meta and the mandatory top-level elements), marked SUBSETTED. Any other
// mode, or a resource of an unknown type, gives res unchanged. res is not
// modified.
func ApplySummary(res map[string]any, mode string) map[string]any {
	rt, _ := res["resourceType"].(string)
	paths, ok := summaryPaths[rt]
	if !ok && mode != "data" {
		return res
	}
	var out map[string]any
	switch mode {
	case "data":
		out = maps.Clone(res)
		delete(out, "text")
	case "true":
		out = summarize(res, paths, "")
	case "text":
		out = map[string]any{}
		keep := append([]string{"text", "id", "meta"}, mandatoryElements[rt]...)
		for k, v := range res {
			if containsElement(keep, k) {
				out[k] = v
			}
		}
	default:
		return res
	}
	out["resourceType"] = rt
	return markSubsetted(res, out)
}

// summarize keeps the keys of obj whose path (below prefix) is listed,
// filtering backbone elements that have listed children.
func summarize(obj map[string]any, paths []string, prefix string) map[string]any {
	out := map[string]any{}
	for k, v := range obj {
		name := strings.TrimPrefix(k, "_")
		var path string
		for _, p := range paths {
			rest, ok := strings.CutPrefix(p, prefix)
			if !ok || strings.Contains(rest, ".") {
				continue
			}
			if name == rest || isChoiceOf(name, rest) {
				path = p
				break
			}
		}
		if path == "" {
			continue
		}
		if !hasChildren(paths, path) {
			out[k] = v
			continue
		}
		switch v := v.(type) {
		case map[string]any:
			out[k] = summarize(v, paths, path+".")
		case []any:
			items := make([]any, len(v))
			for i, item := range v {
				if m, ok := item.(map[string]any); ok {
					items[i] = summarize(m, paths, path+".")
				} else {
					items[i] = item
				}
			}
			out[k] = items
		default:
			out[k] = v
		}
	}
	return out
}

func hasChildren(paths []string, path string) bool {
	for _, p := range paths {
		if strings.HasPrefix(p, path+".") {
			return true
		}
	}
	return false
}

// containsElement reports whether key is one of the element names
// (a choice name matches its typed keys, "_x" the primitive's extension).
func containsElement(names []string, key string) bool {
	key = strings.TrimPrefix(key, "_")
	for _, n := range names {
		if key == n || isChoiceOf(key, n) {
			return true
		}
	}
	return false
}

// markSubsetted puts the SUBSETTED tag in out's meta (a copy of res's).
func markSubsetted(res, out map[string]any) map[string]any {
	meta := map[string]any{}
	if m, ok := res["meta"].(map[string]any); ok {
		meta = maps.Clone(m)
	}
	var tags []any
	if t, ok := meta["tag"].([]any); ok {
		tags = append(tags, t...)
	}
	for _, t := range tags {
		if m, ok := t.(map[string]any); ok && m["code"] == subsettedTag["code"] && m["system"] == subsettedTag["system"] {
			out["meta"] = meta
			return out
		}
	}
	meta["tag"] = append(tags, maps.Clone(subsettedTag))
	out["meta"] = meta
	return out
}
