package search

// subsettedTag is the meta.tag a server adds to resources it returns
// incomplete (_elements, _summary).
var subsettedTag = map[string]any{
	"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
	"code":   "SUBSETTED",
}

// ApplyElements returns a copy of res that keeps only the top-level
// elements named in elements (a choice name such as "value" keeps
// valueQuantity and the like), plus resourceType, id and meta, and marks it
// with the SUBSETTED meta.tag. res is not modified; the kept elements are
// shared with it, not copied. With no elements it returns res unchanged.
func ApplyElements(res map[string]any, elements []string) map[string]any {
	if len(elements) == 0 || res == nil {
		return res
	}
	out := make(map[string]any, len(elements)+3)
	for _, k := range []string{"resourceType", "id"} {
		if v, ok := res[k]; ok {
			out[k] = v
		}
	}
	for key, v := range res {
		for _, e := range elements {
			if key == e || isChoiceOf(key, e) || key == "_"+e {
				out[key] = v
			}
		}
	}
	return markSubsetted(res, out)
}

// isChoiceOf reports whether key is the JSON name of choice element e
// (valueQuantity for value).
func isChoiceOf(key, e string) bool {
	return len(key) > len(e) && key[:len(e)] == e && key[len(e)] >= 'A' && key[len(e)] <= 'Z'
}
