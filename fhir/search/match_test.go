package search

import (
	"strings"
	"testing"
)

// matchCase is one query against one resource.
type matchCase struct {
	query string
	want  bool
}

func runMatchCases(t *testing.T, resourceType, resource string, cases []matchCase) {
	t.Helper()
	res := decodeJSON(t, resource)
	for _, c := range cases {
		if got := mustParse(t, resourceType, c.query).Match(res); got != c.want {
			t.Errorf("%s?%s on %.60s… = %v, want %v", resourceType, c.query, resource, got, c.want)
		}
	}
}

func TestStringParams(t *testing.T) {
	runMatchCases(t, "Patient", `{"resourceType":"Patient","id":"p",
		"name":[{"family":"Müller-Lüdenscheidt","given":["René","Anna"],"prefix":["Dr."]},{"text":"Bob Smith"}],
		"address":[{"line":["12 Main Street"],"city":"São Paulo","postalCode":"01000"}]}`, []matchCase{
		{"family=müller", true},
		{"family=MULLER", true},
		{"family=mull", true},
		{"family=ller", false},
		{"family:contains=ller", true},
		{"family:contains=LÜDEN", true},
		{"family:exact=Müller-Lüdenscheidt", true},
		{"family:exact=müller-lüdenscheidt", false},
		{"family:exact=Müller", false},
		{"given=rene", true},
		{"given=anna", true},
		{"given=bob", false},
		{"name=bob", true},
		{"name=dr", true},
		{"name=smith", false},
		{"name:contains=smith", true},
		{"address=sao", true},
		{"address=12 main", true},
		{"address-city=são paulo", true},
		{"address-postalcode=010", true},
		{"address-city=rio", false},
		{"family=zzz,mül", true},
		{"family=zzz,yyy", false},
		{"family=mül&given=rené", true},
		{"family=mül&given=zoe", false},
		{"family:missing=false", true},
		{"family:missing=true", false},
		{"link:missing=true", true},
		{`family=a\,b`, false},
		{"family=", true}, // empty values are ignored
	})
}

func TestTokenParams(t *testing.T) {
	runMatchCases(t, "Patient", `{"resourceType":"Patient","id":"p","active":true,"gender":"female",
		"identifier":[{"system":"http://hospital/mrn","value":"MRN|42","type":{"text":"Medical record","coding":[{"system":"http://v2","code":"MR"}]}},{"value":"nosys"}],
		"telecom":[{"system":"phone","value":"555-1234"},{"system":"email","value":"a@b.org"}],
		"maritalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-MaritalStatus","code":"M","display":"Married"}],"text":"married"},
		"meta":{"tag":[{"system":"http://tags","code":"t1"}],"security":[{"system":"http://sec","code":"R"}],"profile":["http://profiles/p1"]}}`, []matchCase{
		{"gender=female", true},
		{"gender=male", false},
		{"gender=FEMALE", false},
		{"gender=http://hl7.org/fhir/administrative-gender|female", true},
		{"gender:not=male", true},
		{"gender:not=female", false},
		{"gender:not=male,female", false},
		{"active=true", true},
		{"active=false", false},
		{`identifier=http://hospital/mrn|MRN\|42`, true},
		{`identifier=MRN\|42`, true},
		{`identifier=http://other|MRN\|42`, false},
		{"identifier=http://hospital/mrn|", true},
		{"identifier=http://other|", false},
		{"identifier=|nosys", true},
		{`identifier=|MRN\|42`, false},
		{"identifier:text=medical", true},
		{`identifier:of-type=http://v2|MR|MRN\|42`, true},
		{`identifier:of-type=http://v2|MR|MRN\|43`, false},
		{`identifier:of-type=http://v2|SS|MRN\|42`, false},
		{`identifier:of-type=http://v3|MR|MRN\|42`, false},
		{"identifier:of-type=http://v2|MR|nosys", false},
		{"identifier:not=nosys", false},
		{"telecom=555-1234", true},
		{"phone=555-1234", true},
		{"phone=a@b.org", false},
		{"email=a@b.org", true},
		{"telecom=a@b", false},
		{"_id=p", true},
		{"_id=q,p", true},
		{"_id=q", false},
		{"_tag=http://tags|t1", true},
		{"_tag=t1", true},
		{"_tag=http://other|t1", false},
		{"_tag:not=t1", false},
		{"_tag:not=t2", true},
		{"_security=R", true},
		{"_profile=http://profiles/p1", true},
		{"_profile=http://profiles/p", false},
		{"_profile:below=http://profiles/", true},
		{"_profile:above=http://profiles/p1/v2", true},
		{"_profile:above=http://other/p1", false},
		{"language:missing=true", true},
		{"language:not=en", true}, // :not matches resources without the element
	})
	runMatchCases(t, "Observation", `{"resourceType":"Observation","id":"o","status":"final",
		"code":{"coding":[{"system":"http://loinc.org","code":"8302-2","display":"Body Height"}],"text":"Height"}}`, []matchCase{
		{"code:text=height", true},
		{"code:text=body", true},
		{"code:text=weight", false},
		{"code=8302-2", true},
		{"code=8302", false},
		{"status=final,amended", true},
		{"status=final&status:not=amended", true},
		{"status=final&status=amended", false},
	})
}

func TestReferenceParams(t *testing.T) {
	runMatchCases(t, "Observation", `{"resourceType":"Observation","id":"o",
		"subject":{"reference":"Patient/123"},
		"performer":[{"reference":"https://other.example/fhir/Practitioner/9"},{"reference":"urn:uuid:aaa"},{"identifier":{"system":"http://npi","value":"77"}}],
		"encounter":{"reference":"Encounter/e1/_history/2"},
		"hasMember":[{"reference":"#c1"}],
		"basedOn":[{"reference":"ServiceRequest/123"}]}`, []matchCase{
		{"subject=Patient/123", true},
		{"subject=123", true},
		{"subject=Patient/124", false},
		{"subject=Group/123", false},
		{"subject:Patient=123", true},
		{"subject:Group=123", false},
		{"subject=https://pfr.example/fhir/Patient/123", true},
		{"patient=Patient/123", true},
		{"patient=123", true},
		{"encounter=Encounter/e1", true},
		{"encounter=e1", true},
		{"performer=Practitioner/9", true},
		{"performer=https://other.example/fhir/Practitioner/9", true},
		{"performer=urn:uuid:aaa", true},
		{"performer=urn:uuid:bbb", false},
		{"performer:identifier=http://npi|77", true},
		{"performer:identifier=http://npi|78", false},
		{"performer:missing=false", true},
		{"specimen:missing=true", true},
		{"based-on=123", true},
		{"has-member=c1", false}, // a contained reference is not a resource id
		{"subject=Patient/124,Patient/123", true},
	})
}

func TestDateParams(t *testing.T) {
	// The examples of http://hl7.org/fhir/R4/search.html#date and the
	// precision rules: a search value covers its whole precision, and so
	// does a resource value.
	resources := map[string]string{
		"day":       `{"resourceType":"Patient","id":"a","birthDate":"2013-01-14"}`,
		"minute10":  `{"resourceType":"Observation","id":"b","effectiveDateTime":"2013-01-14T10:00:00Z"}`,
		"zoned":     `{"resourceType":"Observation","id":"c","effectiveDateTime":"2013-01-14T12:00:00+02:00"}`,
		"openEnded": `{"resourceType":"Observation","id":"d","effectivePeriod":{"start":"2013-01-21"}}`,
		"janFeb":    `{"resourceType":"Observation","id":"e","effectivePeriod":{"start":"2013-01-21","end":"2013-02-21"}}`,
		"janMar":    `{"resourceType":"Observation","id":"f","effectivePeriod":{"start":"2013-01-21","end":"2013-03-21"}}`,
		"aug":       `{"resourceType":"Observation","id":"g","effectivePeriod":{"start":"2013-08-21"}}`,
		"instant":   `{"resourceType":"Observation","id":"h","effectiveInstant":"2013-01-14T10:00:30.123Z"}`,
		"timing":    `{"resourceType":"Observation","id":"i","effectiveTiming":{"event":["2012-05-01","2014-05-01T08:00:00Z"]}}`,
		"none":      `{"resourceType":"Observation","id":"j"}`,
	}
	cases := []struct {
		resource, query string
		want            bool
	}{
		{"day", "birthdate=2013-01-14", true},
		{"day", "birthdate=eq2013-01-14", true},
		{"day", "birthdate=2013-01", true},
		{"day", "birthdate=2013", true},
		{"day", "birthdate=2013-01-15", false},
		{"day", "birthdate=2013-01-14T10:00", false}, // the day is wider than the minute
		{"day", "birthdate=ne2013-01-15", true},
		{"day", "birthdate=ne2013-01-14", false},
		{"day", "birthdate=lt2013-01-14T10:00", true},
		{"day", "birthdate=gt2013-01-14T10:00", true},
		{"day", "birthdate=gt2013-01-14", false},
		{"day", "birthdate=ge2013-01-14", true},
		{"day", "birthdate=le2013-01-14", true},
		{"day", "birthdate=lt2013-01-14", false},
		{"day", "birthdate=sa2013-01-13", true},
		{"day", "birthdate=sa2013-01-14", false},
		{"day", "birthdate=eb2013-01-15", true},
		{"day", "birthdate=eb2013-01-14", false},
		{"day", "birthdate=ap2013-01-14", true},
		{"day", "birthdate=ap1990", false},
		{"minute10", "date=2013-01-14T10:00", true},
		{"minute10", "date=2013-01-14T10:00:00Z", true},
		{"minute10", "date=2013-01-14T10:01", false},
		{"minute10", "date=2013-01", true},
		{"minute10", "date=2013-01-14", true},
		{"minute10", "date=2013-01-14T11:00:00+01:00", true},
		{"minute10", "date=2013-01-14T10:00:00+01:00", false},
		{"zoned", "date=2013-01-14T10:00:00Z", true},
		{"zoned", "date=gt2013-01-14T09:59:59Z", true},
		{"zoned", "date=lt2013-01-14T10:00:00Z", false},
		{"instant", "date=2013-01-14T10:00", true},
		{"instant", "date=2013-01-14T10:00:30", true},
		{"instant", "date=2013-01-14T10:00:31", false},
		{"openEnded", "date=ge2013-03-14", true},
		{"openEnded", "date=le2013-03-14", true},
		{"openEnded", "date=gt2013-03-14", true},
		{"openEnded", "date=eq2013-03-14", false},
		{"openEnded", "date=sa2013-03-14", false},
		{"openEnded", "date=eb2013-03-14", false},
		{"aug", "date=sa2013-03-14", true},
		{"aug", "date=eb2013-03-14", false},
		{"janFeb", "date=eb2013-03-14", true},
		{"janFeb", "date=2013", true},
		{"janFeb", "date=2013-01", false},
		{"janMar", "date=eb2013-03-14", false},
		{"janMar", "date=sa2013-01-01", true},
		{"janMar", "date=lt2013-01-22", true},
		{"janMar", "date=gt2013-03-20", true},
		{"janMar", "date=gt2013-03-21", false},
		{"timing", "date=2012", true},
		{"timing", "date=2014-05", true},
		{"timing", "date=2013", false},
		{"timing", "date=ne2013", true},
		{"none", "date=ne2013", false},
		{"none", "date:missing=true", true},
		{"minute10", "date:missing=true", false},
		{"minute10", "date=2012,2013", true},
		{"minute10", "date=ge2013&date=lt2014", true},
		{"minute10", "date=ge2013&date=lt2013-01-14T10:00", false},
	}
	for _, c := range cases {
		res := decodeJSON(t, resources[c.resource])
		q := mustParse(t, res["resourceType"].(string), c.query)
		if got := q.Match(res); got != c.want {
			t.Errorf("%s %s = %v, want %v", c.resource, c.query, got, c.want)
		}
	}
}

func TestNumberAndQuantityParams(t *testing.T) {
	runMatchCases(t, "RiskAssessment", `{"resourceType":"RiskAssessment","id":"r",
		"prediction":[{"probabilityDecimal":0.25},{"probabilityRange":{"low":{"value":0.5},"high":{"value":0.6}}}]}`, []matchCase{
		{"probability=0.25", true},
		{"probability=0.2", false},   // [0.15, 0.25) excludes 0.25
		{"probability=0.3", true},    // [0.25, 0.35) includes it
		{"probability=2.5e-1", true}, // same number, exponent form
		{"probability=0.250", true},
		{"probability=0.251", false},
		{"probability=gt0.24", true},
		{"probability=gt0.7", false},
		{"probability=gt0.55", true}, // the range reaches above
		{"probability=lt0.25", false},
		{"probability=le0.25", true},
		{"probability=ge0.6", true},
		{"probability=sa0.7", false},
		{"probability=eb0.2", false},
		{"probability=ne0.25", false}, // ne needs every value to differ
		{"probability=ne0.9", true},
		{"probability=ap0.27", true},
		{"probability=ap0.4", false},
		{"probability:missing=false", true},
	})
	runMatchCases(t, "Observation", `{"resourceType":"Observation","id":"o",
		"valueQuantity":{"value":5.4,"unit":"mg","system":"http://unitsofmeasure.org","code":"mg"},
		"component":[{"code":{"text":"x"},"valueQuantity":{"value":120,"unit":"mmHg","system":"http://unitsofmeasure.org","code":"mm[Hg]"}}]}`, []matchCase{
		{"value-quantity=5.4", true},
		{"value-quantity=5.4|http://unitsofmeasure.org|mg", true},
		{"value-quantity=5.4||mg", true},
		{"value-quantity=5.4|http://other|mg", false},
		{"value-quantity=5.4||g", false},
		{"value-quantity=5", true}, // [4.5, 5.5)
		{"value-quantity=5.0", false},
		{"value-quantity=gt5|http://unitsofmeasure.org|mg", true},
		{"value-quantity=lt5", false},
		{"value-quantity=ge5.4", true},
		{"value-quantity=ne5.4", false},
		{"value-quantity=ap5", true},
		{"component-value-quantity=gt100||mm[Hg]", true},
		{"component-value-quantity=gt100||mmHg", true},
		{"component-value-quantity=lt100", false},
	})
}

func TestURIParams(t *testing.T) {
	runMatchCases(t, "ValueSet", `{"resourceType":"ValueSet","id":"v","url":"http://acme.org/fhir/ValueSet/123"}`, []matchCase{
		{"url=http://acme.org/fhir/ValueSet/123", true},
		{"url=http://acme.org/fhir/ValueSet/12", false},
		{"url=HTTP://acme.org/fhir/ValueSet/123", false},
		{"url:below=http://acme.org/fhir/", true},
		{"url:below=http://acme.org/fhir/ValueSet/1234", false},
		{"url:above=http://acme.org/fhir/ValueSet/123/_history/5", true},
		{"url:above=http://acme.org/", false},
		{"url:missing=false", true},
	})
}

// TestMatchWrongType checks that a query never matches another type, an
// empty resource or nil.
func TestMatchWrongType(t *testing.T) {
	q := mustParse(t, "Observation", "")
	for _, r := range []map[string]any{
		nil, {}, {"resourceType": "Patient"}, {"resourceType": 1},
	} {
		if q.Match(r) {
			t.Errorf("Observation query matched %v", r)
		}
	}
	if !q.Match(map[string]any{"resourceType": "Observation"}) {
		t.Error("empty query does not match its type")
	}
	all := mustParse(t, "", "_id=x")
	if !all.Match(map[string]any{"resourceType": "Patient", "id": "x"}) || all.Match(map[string]any{"resourceType": "Patient", "id": "y"}) {
		t.Error("type-less _id search wrong")
	}
}

// TestMalformedResources evaluates queries on resources whose elements
// have unexpected JSON shapes: no panic, no match.
func TestMalformedResources(t *testing.T) {
	q := mustParse(t, "Observation", "code=x&date=2013&value-quantity=5&subject=Patient/1&_lastUpdated=gt2000")
	for _, s := range []string{
		`{"resourceType":"Observation","code":"x","effectiveDateTime":5,"valueQuantity":"5","subject":"Patient/1"}`,
		`{"resourceType":"Observation","code":{"coding":"x"},"effectivePeriod":{"start":"nope"},"valueQuantity":{"value":"5"},"subject":{"reference":5}}`,
		`{"resourceType":"Observation","code":{"coding":[null,1,{"code":5}]},"effectiveTiming":{"event":[1,null]},"meta":"x"}`,
		`{"resourceType":"Observation","code":[[{"coding":[{"code":"x"}]}]],"effectiveDateTime":"2013-02-30"}`,
	} {
		if q.Match(decodeJSON(t, s)) {
			t.Errorf("matched malformed %s", s)
		}
	}
}

// TestHugeStoredNumbers: numbers a client stored to stall the engine are
// treated as absent, quickly.
func TestHugeStoredNumbers(t *testing.T) {
	for _, n := range []string{"1e999999999", "1E-999999999", "1e+999999999", "1" + strings.Repeat("0", 70)} {
		res := decodeNumbers(t, `{"resourceType":"Observation","id":"o","valueQuantity":{"value":`+n+`}}`)
		if mustParse(t, "Observation", "value-quantity=gt0").Match(res) {
			t.Errorf("%s matched", n)
		}
		if !mustParse(t, "Observation", "value-quantity:missing=false").Match(res) {
			t.Errorf("%s: the element itself is present", n)
		}
	}
	ok := decodeNumbers(t, `{"resourceType":"Observation","id":"o","valueQuantity":{"value":1.5e2}}`)
	if !mustParse(t, "Observation", "value-quantity=150").Match(ok) {
		t.Error("1.5e2 does not equal 150")
	}
}
