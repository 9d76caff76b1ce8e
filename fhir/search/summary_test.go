package search

import (
	"strings"
	"testing"
)

// ApplySummary on every Synthea resource: the kept elements are the
// summary ones, the narrative goes, the input stays as it was.
func TestApplySummarySynthea(t *testing.T) {
	n := 0
	for _, entries := range loadBundles(t) {
		for _, e := range entries {
			res := e.Resource
			rt := res["resourceType"].(string)
			_, hadText := res["text"]
			sum := ApplySummary(res, "true")
			if sum["id"] != res["id"] || sum["resourceType"] != rt || sum["text"] != nil {
				t.Fatalf("%s: %v", rt, sum)
			}
			for k := range sum {
				if k != "resourceType" && k != "meta" && !containsElement(topLevel(summaryPaths[rt]), k) {
					t.Fatalf("%s: _summary=true kept %s", rt, k)
				}
			}
			text := ApplySummary(res, "text")
			for _, m := range mandatoryElements[rt] {
				if res[m] != nil && text[m] == nil {
					t.Fatalf("%s: _summary=text dropped mandatory %s", rt, m)
				}
			}
			if _, ok := res["text"]; ok != hadText {
				t.Fatalf("%s: ApplySummary modified its input", rt)
			}
			if data := ApplySummary(res, "data"); data["text"] != nil || len(data) < len(res)-1 {
				t.Fatalf("%s: _summary=data %v", rt, data)
			}
			n++
		}
	}
	if n < 100 || len(summaryPaths) < 140 || len(summaryPaths["Observation"]) == 0 {
		t.Fatalf("%d resources, %d types", n, len(summaryPaths))
	}
}

func topLevel(paths []string) []string {
	var out []string
	for _, p := range paths {
		if !strings.Contains(p, ".") {
			out = append(out, p)
		}
	}
	return out
}
