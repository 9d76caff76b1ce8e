package search

import (
	"bytes"
	"slices"
	"testing"

	"github.com/pfrgateway/caddy-pfr/fhir/searchparam"
)

// The composites pair-indexed in R4 are Observation's code-value-*: the
// only ones whose expression is the resource itself. combo-* (the
// resource or a component) and component-* (components) are not.
func TestPairIndexedComposites(t *testing.T) {
	var got []string
	for _, typ := range searchparam.ResourceTypes() {
		for _, p := range IndexedParams(typ) {
			if p.Type == searchparam.TypeComposite {
				got = append(got, typ+" "+p.Code)
			}
		}
	}
	want := []string{"Observation code-value-concept", "Observation code-value-date", "Observation code-value-quantity", "Observation code-value-string"}
	if !slices.Equal(got, want) {
		t.Errorf("pair-indexed composites %q, want %q", got, want)
	}
	pp, ok := pairOf(lookup(t, "Observation", "code-value-quantity"), "Observation")
	if !ok || pp.code != lookup(t, "Observation", "code") || pp.value != lookup(t, "Observation", "value-quantity") {
		t.Errorf("code-value-quantity pairs %+v", pp)
	}
}

func lookup(t *testing.T, typ, code string) *searchparam.Param {
	t.Helper()
	p, ok := searchparam.Lookup(typ, code)
	if !ok {
		t.Fatalf("no %s %s", typ, code)
	}
	return p
}

func TestComponentsCovered(t *testing.T) {
	for _, c := range []struct {
		component, param string
		want             bool
	}{
		{"code", "AllergyIntolerance.code | Observation.code | Procedure.code", true},
		{"code", "Condition.code", false},
		{"value.as(Quantity)", "(Observation.value as Quantity) | (Observation.value as SampledData)", true},
		{"value.as(DateTime) | value.as(Period)", "(Observation.value as dateTime) | (Observation.value as Period)", true},
		{"value.as(string)", "(Observation.value as string) | (Observation.value as CodeableConcept).text", true},
		{"value.as(CodeableConcept)", "(Observation.value as CodeableConcept)", true},
		{"value.as(CodeableConcept)", "(Observation.value as CodeableConcept).text", false},
		{"value.as(Quantity)", "(Observation.value as CodeableConcept)", false},
		{"value", "(Observation.value as Quantity)", false},
		{"value.as(Quantity) | value.as(Range)", "(Observation.value as Quantity)", false},
		{"code.where(system = 'x')", "Observation.code", false},
		{"%resource.code", "Observation.code", false},
	} {
		if got := componentsCovered(c.component, c.param, "Observation"); got != c.want {
			t.Errorf("componentsCovered(%q, %q) = %v", c.component, c.param, got)
		}
	}
}

// A pair-indexed composite's keys are the cross product of its
// components' parameters' keys: every code of the token keys (systems
// dropped) with every key of the value, a date's order key as the low key
// it stands for.
func TestPairKeysAreCrossProduct(t *testing.T) {
	res := decodeNumbers(t, `{"resourceType": "Observation", "status": "final",
		"code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}, {"system": "urn:oid:1.2", "code": "2339-0"}, {"code": "GLU"}]},
		"valueQuantity": {"value": 260, "unit": "mg/dL"}}`)
	got := IndexKeys(lookup(t, "Observation", "code-value-quantity"), res)
	var want [][]byte
	for _, code := range []string{"2339-0", "GLU"} {
		for _, v := range IndexKeys(lookup(t, "Observation", "value-quantity"), res) {
			want = append(want, append(append([]byte{kindPair}, code+"\x01"...), v...))
		}
	}
	if len(want) != 2 || !slices.EqualFunc(got, want, bytes.Equal) { // two codes, a point's one key
		t.Errorf("code-value-quantity keys %q, want %q", got, want)
	}
	date := decodeNumbers(t, `{"resourceType": "Observation", "code": {"coding": [{"code": "x"}]}, "valuePeriod": {"start": "2020", "end": "2021"}}`)
	got = IndexKeys(lookup(t, "Observation", "code-value-date"), date)
	values := IndexKeys(lookup(t, "Observation", "value-date"), date)
	// The order key stands for the low key of the same value, which
	// value-date does not store (lowAlsoOrder): the pair holds the low.
	var wantDate [][]byte
	for _, v := range values {
		if v[0] == kindOrder {
			v = append([]byte{kindLow}, v[1:]...)
		}
		wantDate = append(wantDate, append([]byte{kindPair}, "x\x01"+string(v)...))
	}
	if len(got) != 2 || !slices.EqualFunc(got, wantDate, bytes.Equal) {
		t.Errorf("code-value-date keys %q of value-date keys %q, want %q", got, values, wantDate)
	}
	// value-quantity names SampledData too, code-value-quantity does not:
	// no key of either, and no value-quantity search matches it (its
	// lowerLimit and upperLimit are not the value), so no pair is missed.
	sampled := decodeNumbers(t, `{"resourceType": "Observation", "code": {"coding": [{"code": "x"}]},
		"valueSampledData": {"origin": {"value": 300}, "period": 1, "dimensions": 1, "lowerLimit": 260, "upperLimit": 400, "data": "300 301"}}`)
	for _, code := range []string{"value-quantity", "code-value-quantity"} {
		if got := IndexKeys(lookup(t, "Observation", code), sampled); got != nil {
			t.Errorf("SampledData: %s keys %q", code, got)
		}
	}
	for _, query := range []string{"value-quantity=gt0", "value-quantity=lt1000", "value-quantity=300", "code-value-quantity=x$gt0"} {
		if mustParse(t, "Observation", query).Match(sampled) {
			t.Errorf("SampledData matches %s", query)
		}
	}
	// Without a code or a value: no pair.
	for _, body := range []string{
		`{"resourceType": "Observation", "valueQuantity": {"value": 1}}`,
		`{"resourceType": "Observation", "code": {"coding": [{"code": "x"}]}}`,
		`{"resourceType": "Observation", "code": {"text": "x"}, "valueQuantity": {"value": 1}}`,
	} {
		if got := IndexKeys(lookup(t, "Observation", "code-value-quantity"), decodeNumbers(t, body)); got != nil {
			t.Errorf("%s: code-value-quantity keys %q", body, got)
		}
	}
}

// The planner adds a pair filter for a token filter and a value filter an
// index answers, and answers a pair-indexed composite from its index;
// nothing else.
func TestPairFilters(t *testing.T) {
	for _, c := range []struct {
		query string
		pair  string // the pair filter's parameter, "" for none
		codes int    // how many codes its ranges are for
	}{
		{"code=2339-0&value-quantity=gt250", "code-value-quantity", 1},
		{"code=http://loinc.org|2339-0&value-quantity=gt250|http://unitsofmeasure.org|mg/dL", "code-value-quantity", 1},
		{"code=2339-0,GLU&value-quantity=gt250", "code-value-quantity", 2},
		{"code=2339-0&value-concept=LA1", "code-value-concept", 1},
		{"code=2339-0&value-date=ge2020", "code-value-date", 1},
		{"code=2339-0&value-string=abc", "code-value-string", 1},
		{"code=2339-0&value-string:exact=abc", "code-value-string", 1},
		{"code=2339-0&value-string:contains=abc", "", 0},
		{"code:not=2339-0&value-quantity=gt250", "", 0},
		{"code:text=glucose&value-quantity=gt250", "", 0},
		{"code:missing=false&value-quantity=gt250", "", 0},
		{"code=2339-0&value-quantity:missing=false", "", 0},
		{"code=http://loinc.org|&value-quantity=gt250", "", 0},
		{"code=2339-0&date=ge2020", "", 0},
		{"code=2339-0&combo-value-quantity=gt250", "", 0},
		{"combo-code=2339-0&value-quantity=gt250", "", 0},
		{"code-value-quantity=http://loinc.org|2339-0$gt250", "code-value-quantity", 1},
		{"code-value-quantity=2339-0$gt250,GLU$lt3", "code-value-quantity", 2},
		{"code-value-concept=2339-0$LA1", "code-value-concept", 1},
		{"code-value-quantity=http://loinc.org|$gt250", "", 0},
		{"combo-code-value-quantity=2339-0$gt250", "", 0},
		{"component-code-value-quantity=2339-0$gt250", "", 0},
	} {
		q := mustParse(t, "Observation", c.query)
		var pairs []IndexFilter
		for _, f := range q.IndexFilters() {
			if p, _ := searchparam.Lookup("Observation", f.Param); p.Type == searchparam.TypeComposite {
				pairs = append(pairs, f)
			}
		}
		switch {
		case c.pair == "" && len(pairs) > 0:
			t.Errorf("%s: pair filters %+v", c.query, pairs)
		case c.pair == "":
		case len(pairs) != 1 || pairs[0].Param != c.pair:
			t.Errorf("%s: pair filters %+v, want one of %s", c.query, pairs, c.pair)
		default:
			codes := map[string]bool{}
			for _, r := range pairs[0].Ranges {
				codes[string(r.Lo[:bytes.IndexByte(r.Lo, 1)])] = true
			}
			if len(codes) != c.codes {
				t.Errorf("%s: pair ranges %v for %d codes, want %d", c.query, pairs[0].Ranges, len(codes), c.codes)
			}
		}
	}
}

// Every resource a query matches has, for each of its index filters
// (pair filters included), a key in one of the filter's ranges: on
// Observations with quantities, concepts, dates, strings and SampledData
// (value-quantity names it, code-value-quantity does not), codes with
// and without systems, and long codes cut in their keys.
func TestPairFiltersHoldEveryMatch(t *testing.T) {
	long := string(bytes.Repeat([]byte("c"), maxIndexValue+5))
	resources := []string{
		`{"resourceType": "Observation", "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}]}, "valueQuantity": {"value": 260, "unit": "mg/dL", "system": "http://unitsofmeasure.org", "code": "mg/dL"}}`,
		`{"resourceType": "Observation", "code": {"coding": [{"code": "2339-0"}, {"code": "GLU"}]}, "valueQuantity": {"value": 2}}`,
		`{"resourceType": "Observation", "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}]}, "valueSampledData": {"origin": {"value": 300}, "period": 1, "dimensions": 1, "lowerLimit": 260, "upperLimit": 400, "data": "300 301"}}`,
		`{"resourceType": "Observation", "code": {"coding": [{"code": "2339-0"}]}, "valueCodeableConcept": {"coding": [{"system": "http://loinc.org", "code": "LA1"}], "text": "abc"}}`,
		`{"resourceType": "Observation", "code": {"coding": [{"code": "2339-0"}]}, "valueString": "abcdef"}`,
		`{"resourceType": "Observation", "code": {"coding": [{"code": "2339-0"}]}, "valuePeriod": {"start": "2021-02", "end": "2020-01"}}`,
		`{"resourceType": "Observation", "code": {"coding": [{"code": "2339-0"}]}, "valueDateTime": "2020-06-01T10:00:00Z"}`,
		`{"resourceType": "Observation", "code": {"coding": [{"code": "2339-0"}]}, "valueRange": {"low": {"value": 1}, "high": {"value": 400}}}`,
		`{"resourceType": "Observation", "code": {"coding": [{"code": "` + long + `"}]}, "valueQuantity": {"value": 260}}`,
	}
	queries := []string{
		"code=2339-0&value-quantity=gt250", "code=http://loinc.org|2339-0&value-quantity=gt250",
		"code=GLU&value-quantity=lt3", "code=2339-0,GLU&value-quantity=le2", "code=2339-0&value-quantity=ge260",
		"code=2339-0&value-quantity=eb300", "code=2339-0&value-quantity=sa0", "code=2339-0&value-quantity=260",
		"code-value-quantity=2339-0$gt250", "code-value-quantity=http://loinc.org|2339-0$gt250|http://unitsofmeasure.org|mg/dL",
		"code-value-quantity=" + long + "$gt250", "code=" + long + "&value-quantity=260",
		"code=2339-0&value-concept=LA1", "code=2339-0&value-concept=http://loinc.org|LA1", "code-value-concept=2339-0$LA1",
		"code=2339-0&value-string=abc", "code=2339-0&value-string=ABC", "code-value-string=2339-0$abc",
		"code=2339-0&value-date=2020", "code=2339-0&value-date=gt2020-03", "code=2339-0&value-date=lt2021",
		"code-value-date=2339-0$ge2020-06-01", "code-value-date=2339-0$2020",
	}
	var all []map[string]any
	for _, body := range resources {
		all = append(all, decodeNumbers(t, body))
	}
	matched := 0
	for _, query := range queries {
		q := mustParse(t, "Observation", query)
		hasPair := false
		for _, res := range all {
			if !q.Match(res) {
				continue
			}
			matched++
			keys := ResourceKeys("Observation", res)
			for _, f := range q.IndexFilters() {
				i := slices.IndexFunc(IndexedParams("Observation"), func(p *searchparam.Param) bool { return p.Code == f.Param })
				hasPair = hasPair || IndexedParams("Observation")[i].Type == searchparam.TypeComposite
				if !slices.ContainsFunc(keys[i], func(k []byte) bool { return inRanges(k, f.Ranges) }) {
					t.Errorf("%s matches %v but has no %s key in %v (keys %q)", query, res, f.Param, f.Ranges, keys[i])
				}
			}
		}
		if !hasPair {
			t.Errorf("%s: no match checked against a pair filter", query)
		}
	}
	if matched < len(queries) {
		t.Errorf("only %d matches for %d queries", matched, len(queries))
	}
}

// inRanges reports whether key value v (with 0x00 and an id appended, as
// a store does) lies in one of ranges.
func inRanges(v []byte, ranges []KeyRange) bool {
	key := append(append(bytes.Clone(v), 0), "id1"...)
	return slices.ContainsFunc(ranges, func(r KeyRange) bool {
		return bytes.Compare(r.Lo, key) <= 0 && bytes.Compare(key, r.Hi) < 0
	})
}

// The parameters whose keys a measured value places: quantities and
// numbers, and the composites pairing a code with one; not tokens,
// references, dates or a code paired with a concept.
func TestValuePlaced(t *testing.T) {
	want := map[string]map[string]bool{
		"Observation": {"value-quantity": true, "component-value-quantity": true, "code-value-quantity": true,
			"combo-value-quantity": true, "code": false, "date": false, "subject": false, "code-value-concept": false,
			"code-value-date": false, "_lastUpdated": false},
		"RiskAssessment": {"probability": true, "subject": false},
	}
	for typ, params := range want {
		placed := ValuePlaced(typ)
		seen := 0
		for i, p := range IndexedParams(typ) {
			w, ok := params[p.Code]
			if !ok {
				continue
			}
			seen++
			if placed[i] != w {
				t.Errorf("%s %s: placed by value %v, want %v", typ, p.Code, placed[i], w)
			}
		}
		if seen != len(params) {
			t.Errorf("%s: %d of %d parameters indexed", typ, seen, len(params))
		}
	}
}
