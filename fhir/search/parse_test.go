package search

import (
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
)

func TestParseResultParams(t *testing.T) {
	q := mustParse(t, "Observation", "_count=5&_offset=10&_summary=data&_elements=code,Observation.subject,value&_total=accurate&_format=json&_pretty=true&_sort=-date,code,_id")
	if q.Count != 5 || q.Offset != 10 || q.Summary != "data" || q.SummaryCount || q.Total != "accurate" || q.Format != "json" {
		t.Errorf("result params = %+v", q)
	}
	if !slices.Equal(q.Elements, []string{"code", "subject", "value"}) {
		t.Errorf("elements = %v", q.Elements)
	}
	if len(q.SortBy) != 3 || q.SortBy[0].Param.Code != "date" || !q.SortBy[0].Descending || q.SortBy[1].Param.Code != "code" || q.SortBy[1].Descending || q.SortBy[2].Param.Code != "_id" {
		t.Errorf("sort = %+v", q.SortBy)
	}
	if len(q.filters) != 0 || len(q.Unknown) != 0 {
		t.Errorf("filters %d, unknown %v", len(q.filters), q.Unknown)
	}
	if q := mustParse(t, "Observation", "_summary=count"); !q.SummaryCount || q.Summary != "count" {
		t.Errorf("_summary=count: %+v", q)
	}
	if q := mustParse(t, "Observation", "_count=0"); !q.SummaryCount || q.Count != 0 {
		t.Errorf("_count=0: %+v", q)
	}
	q = mustParse(t, "Patient", "_include=Patient:organization&_include=Patient:general-practitioner:Practitioner&_revinclude=Observation:subject&_revinclude=Provenance:target")
	wantInc := []Include{{"Patient", "organization", "", false}, {"Patient", "general-practitioner", "Practitioner", false}}
	wantRev := []Include{{"Observation", "subject", "", false}, {"Provenance", "target", "", false}}
	if !slices.Equal(q.Includes, wantInc) || !slices.Equal(q.RevIncludes, wantRev) {
		t.Errorf("includes %v, revincludes %v", q.Includes, q.RevIncludes)
	}
}

// TestParseInvalid: every invalid value is a 400 naming the parameter,
// in lenient and in strict mode.
func TestParseInvalid(t *testing.T) {
	cases := []struct{ typ, query, name string }{
		{"Observation", "date=2013-13", "date"},
		{"Observation", "date=2013-02-30", "date"},
		{"Observation", "date=xx2013", "date"},
		{"Observation", "date=yesterday", "date"},
		{"Observation", "date=2013-01-14T25:00", "date"},
		{"Observation", "date=2013-01-14T10:00+15:00", "date"},
		{"Observation", "value-quantity=abc", "value-quantity"},
		{"Observation", "value-quantity=5|x", "value-quantity"},
		{"Observation", "value-quantity=zz5", "value-quantity"},
		{"RiskAssessment", "probability=1.2.3", "probability"},
		{"RiskAssessment", "probability=0x10", "probability"},
		{"RiskAssessment", "probability=1e99999", "probability"},
		{"RiskAssessment", "probability=1e999999999999", "probability"},
		{"RiskAssessment", "probability=1" + strings.Repeat("0", 100), "probability"},
		{"Observation", "code=a|b|c", "code"},
		{"Observation", "code=|", "code"},
		{"Observation", "subject=Nope/1", "subject"},
		{"Observation", "subject=a b", "subject"},
		{"Observation", "subject=x/y/z", "subject"},
		{"Observation", "subject:Patient=Group/1", "subject"},
		{"Observation", "subject:Medication=1", "subject"},
		{"Observation", "patient=Medication/1", "patient"},
		{"Observation", "subject:missing=maybe", "subject:missing"},
		{"Observation", "code:below=x", "code:below"},
		{"Observation", "code:exact=x", "code:exact"},
		{"Patient", "identifier:of-type=a|b", "identifier:of-type"},
		{"Patient", "identifier:of-type=a||v", "identifier:of-type"},
		{"Observation", "date:exact=2013", "date:exact"},
		{"Patient", "name:text=x", "name:text"},
		{"Observation", "_count=-1", "_count"},
		{"Observation", "_count=ten", "_count"},
		{"Observation", "_offset=-3", "_offset"},
		{"Observation", "_summary=maybe", "_summary"},
		{"Observation", "_total=all", "_total"},
		{"Observation", "_elements=code.coding", "_elements"},
		{"Observation", "_include=Patient:organization", "_include"},
		{"Observation", "_include=subject", "_include"},
		{"Observation", "_include=Observation:subject:Nope", "_include"},
		{"Observation", "_include=Observation:subject:Medication", "_include"},
		{"Observation", "_revinclude=Nope:subject", "_revinclude"},
	}
	for _, c := range cases {
		v, err := url.ParseQuery(c.query)
		if err != nil {
			t.Fatal(err)
		}
		for _, strict := range []bool{false, true} {
			_, err := Parse(c.typ, v, strict)
			if err == nil {
				t.Errorf("Parse(%s?%s, strict=%v) succeeded", c.typ, c.query, strict)
				continue
			}
			wantBadRequest(t, err, c.name)
		}
	}
	_, err := Parse("Nope", nil, false)
	wantBadRequest(t, err, "Nope")
}

// TestParseUnsupported: what the engine does not support is reported in
// Unknown when lenient, and a 400 when strict; it never matches silently.
func TestParseUnsupported(t *testing.T) {
	cases := []string{
		"nope=1",
		"subject.nope=peter",
		"subject:Patient.nope=peter",
		"code.name=peter",
		"subject.organization.nope=x",
		"_has:Observation:nope:code=1234",
		"_has:Observation:focus:nope=1234",
		"_text=cancer",
		"_content=cancer",
		"_query=special",
		"_include:nope=Observation:subject",
		"_include=Observation:code",
		"_sort=nope",
		"_sort=code-value-quantity",
		"near=1|2|3|km",
	}
	for _, query := range cases {
		v, _ := url.ParseQuery(query)
		q, err := Parse("Observation", v, false)
		if err != nil {
			t.Errorf("lenient Parse(%s): %v", query, err)
			continue
		}
		if len(q.Unknown) != 1 {
			t.Errorf("lenient Parse(%s): Unknown = %v", query, q.Unknown)
		}
		if len(q.filters) != 0 || len(q.SortBy) != 0 || len(q.Includes) != 0 {
			t.Errorf("lenient Parse(%s) kept it: %+v", query, q)
		}
		_, err = Parse("Observation", v, true)
		if err == nil {
			t.Errorf("strict Parse(%s) succeeded", query)
			continue
		}
		name, _, _ := strings.Cut(query, "=")
		name, _, _ = strings.Cut(name, ":")
		wantBadRequest(t, err, name)
	}
	// The ignored chain must not be treated as matched: a lenient query
	// still applies the filters it understood.
	q := mustParse(t, "Observation", "subject.nope=peter&code=1")
	if q.Match(map[string]any{"resourceType": "Observation", "code": map[string]any{"coding": []any{map[string]any{"code": "2"}}}}) {
		t.Error("lenient query ignored its understood filter")
	}
	if !slices.Equal(q.Unknown, []string{"subject.nope=peter"}) {
		t.Errorf("Unknown = %v", q.Unknown)
	}
	oo := q.Outcome()
	if oo == nil || len(oo.Issue) != 1 || oo.Issue[0].Severity != "warning" ||
		!strings.Contains(oo.Issue[0].Diagnostics, "subject.nope=peter: ") {
		t.Errorf("Outcome = %+v", oo)
	}
	if mustParse(t, "Observation", "code=1").Outcome() != nil {
		t.Error("Outcome without unknown parameters is not nil")
	}
}

func TestInclude(t *testing.T) {
	obs := decodeJSON(t, `{"resourceType":"Observation","id":"o",
		"subject":{"reference":"Patient/1"},
		"performer":[{"reference":"Practitioner/2"},{"reference":"https://h/fhir/Organization/3"},{"reference":"#c"},{"reference":"urn:uuid:x"},{"reference":"Practitioner/2"},{"identifier":{"value":"z"}}]}`)
	cases := []struct {
		inc  Include
		want []string
	}{
		{Include{"Observation", "subject", "", false}, []string{"Patient/1"}},
		{Include{"Observation", "subject", "Patient", false}, []string{"Patient/1"}},
		{Include{"Observation", "subject", "Group", false}, nil},
		{Include{"Observation", "performer", "", false}, []string{"Practitioner/2", "Organization/3"}},
		{Include{"Observation", "performer", "Organization", false}, []string{"Organization/3"}},
		{Include{"Observation", "code", "", false}, nil},
		{Include{"Patient", "organization", "", false}, nil},
		{Include{"Observation", "nope", "", false}, nil},
	}
	for _, c := range cases {
		if got := c.inc.References(obs); !slices.Equal(got, c.want) {
			t.Errorf("%v.References = %v, want %v", c.inc, got, c.want)
		}
	}
	rev := Include{"Observation", "subject", "", false}
	if !rev.Refers(obs, "Patient", "1") || rev.Refers(obs, "Patient", "2") || rev.Refers(obs, "Group", "1") {
		t.Error("Refers subject wrong")
	}
	if (Include{"Observation", "subject", "Group", false}).Refers(obs, "Patient", "1") {
		t.Error("Refers ignored TargetType")
	}
	if (Include{"Encounter", "subject", "", false}).Refers(obs, "Patient", "1") {
		t.Error("Refers ignored SourceType")
	}
	if !(Include{"Observation", "performer", "", false}).Refers(obs, "Organization", "3") {
		t.Error("Refers missed an absolute reference")
	}
	if got := (Include{"Observation", "subject", "Patient", false}).String(); got != "Observation:subject:Patient" {
		t.Errorf("String = %q", got)
	}
}

func TestApplyElements(t *testing.T) {
	orig := decodeJSON(t, `{"resourceType":"Observation","id":"o","meta":{"versionId":"2","tag":[{"code":"x"}]},
		"status":"final","code":{"text":"c"},"valueQuantity":{"value":1},"_status":{"id":"s"},"subject":{"reference":"Patient/1"}}`)
	got := ApplyElements(orig, []string{"code", "value", "status"})
	for _, k := range []string{"resourceType", "id", "meta", "code", "valueQuantity", "status", "_status"} {
		if _, ok := got[k]; !ok {
			t.Errorf("%s dropped", k)
		}
	}
	if _, ok := got["subject"]; ok {
		t.Error("subject kept")
	}
	tags := got["meta"].(map[string]any)["tag"].([]any)
	if len(tags) != 2 || tags[1].(map[string]any)["code"] != "SUBSETTED" {
		t.Errorf("tags = %v", tags)
	}
	if len(orig["meta"].(map[string]any)["tag"].([]any)) != 1 || orig["subject"] == nil {
		t.Error("ApplyElements modified its input")
	}
	again := ApplyElements(got, []string{"code"})
	if n := len(again["meta"].(map[string]any)["tag"].([]any)); n != 2 {
		t.Errorf("SUBSETTED added twice: %d tags", n)
	}
	noMeta := ApplyElements(map[string]any{"resourceType": "Patient", "id": "p", "gender": "x"}, []string{"gender"})
	if noMeta["meta"].(map[string]any)["tag"].([]any)[0].(map[string]any)["code"] != "SUBSETTED" {
		t.Errorf("no SUBSETTED on a resource without meta: %v", noMeta)
	}
	if ApplyElements(orig, nil)["subject"] == nil {
		t.Error("no elements must keep everything")
	}
}

func TestSortOrder(t *testing.T) {
	mk := func(id, date, code, lastUpdated string) map[string]any {
		r := map[string]any{"resourceType": "Observation", "id": id, "meta": map[string]any{"lastUpdated": lastUpdated}}
		if date != "" {
			r["effectiveDateTime"] = date
		}
		if code != "" {
			r["code"] = map[string]any{"coding": []any{map[string]any{"code": code}}}
		}
		return r
	}
	list := []map[string]any{
		mk("a", "2013-01-14", "B", "2020-01-03T00:00:00Z"),
		mk("b", "", "A", "2020-01-01T00:00:00Z"),
		mk("c", "2014", "A", "2020-01-02T00:00:00Z"),
		mk("d", "2013-01-14T10:00:00Z", "", "2020-01-02T00:00:00Z"),
		mk("e", "2013-01-14", "B", "2020-01-02T00:00:00Z"),
	}
	ids := func(l []map[string]any) string {
		var s []string
		for _, r := range l {
			s = append(s, r["id"].(string))
		}
		return strings.Join(s, "")
	}
	cases := []struct{ sort, want string }{
		{"", "bcdea"},                    // _lastUpdated, then id
		{"_sort=date", "aedcb"},          // day before its 10:00, ties by id, missing last
		{"_sort=-date", "cdaeb"},         // missing still last
		{"_sort=code,-date", "cbaed"},    // A before B, missing code last
		{"_sort=-code,_id", "aebcd"},     //
		{"_sort=-_lastUpdated", "acdeb"}, //
		{"_sort=nope,-_id", "edcba"},     // unknown key ignored (lenient)
	}
	for _, c := range cases {
		q := mustParse(t, "Observation", c.sort)
		l := slices.Clone(list)
		q.Sort(l)
		if got := ids(l); got != c.want {
			t.Errorf("%q: Sort = %s, want %s", c.sort, got, c.want)
		}
		l2 := slices.Clone(list)
		slices.SortFunc(l2, func(a, b map[string]any) int {
			switch {
			case q.Less(a, b):
				return -1
			case q.Less(b, a):
				return 1
			}
			return 0
		})
		if got := ids(l2); got != c.want {
			t.Errorf("%q: Less order = %s, want %s", c.sort, got, c.want)
		}
	}
}

// TestConcurrentUse shares one parsed Query across goroutines; run with
// -race.
func TestConcurrentUse(t *testing.T) {
	var resources []map[string]any
	for _, entries := range loadBundles(t) {
		resources = append(resources, stored(entries)...)
	}
	q := mustParse(t, "Observation", "code=8302-2,29463-7&date=ge2000&_sort=-date")
	want := count(q, resources)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if got := count(q, resources); got != want {
				t.Errorf("concurrent count %d, want %d", got, want)
			}
			var l []map[string]any
			for _, r := range resources {
				if q.Match(r) {
					l = append(l, r)
				}
			}
			q.Sort(l)
		})
	}
	wg.Wait()
	if want == 0 {
		t.Error("no matches to share")
	}
}
