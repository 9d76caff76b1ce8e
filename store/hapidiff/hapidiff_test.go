package hapidiff

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/fhir/fhirpath"
	"github.com/pfrgateway/caddy-pfr/fhir/search"
	"github.com/pfrgateway/caddy-pfr/fhir/searchparam"
	"github.com/pfrgateway/caddy-pfr/internal/hapitest"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
	"github.com/pfrgateway/caddy-pfr/store"
)

// fhirServer is one of the two servers compared.
type fhirServer interface {
	// do sends one request; target is relative to the FHIR base
	// ("/Patient?name=x") or a page link the server gave.
	do(method, target string, body []byte) (int, []byte, error)
}

// hapiServer is HAPI FHIR JPA in a child process (internal/hapitest), its
// DEFAULT partition.
type hapiServer struct {
	base   string
	client *http.Client
}

func (h hapiServer) do(method, target string, body []byte) (int, []byte, error) {
	if !strings.HasPrefix(target, "http") {
		target = h.base + target
	}
	req, err := http.NewRequest(method, target, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set(hapitest.PartitionHeader, "DEFAULT")
	req.Header.Set("Accept", "application/fhir+json")
	// HAPI answers a search it ran in the last minute from that run's
	// stored results (its search cache), even one still loading in the
	// background when three workers send the same search close together;
	// every search here is its own run, as on the store.
	req.Header.Set("Cache-Control", "no-cache")
	if body != nil {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	res, err := h.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	return res.StatusCode, raw, err
}

// storeServer is the embedded store's handler, in process, its DEFAULT
// partition.
type storeServer struct{ h http.Handler }

func (s storeServer) do(method, target string, body []byte) (int, []byte, error) {
	if i := strings.Index(target, "/fhir"); strings.HasPrefix(target, "http") && i >= 0 {
		target = target[i+len("/fhir"):]
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req := httptest.NewRequest(method, "http://store.test/fhir"+target, rd)
	req.Header.Set("X-Request-Partition-IDs", "DEFAULT")
	if body != nil {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	rec := httptest.NewRecorder()
	s.h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.Bytes(), nil
}

// answer is what a search gave, every page read.
type answer struct {
	status   int
	matches  []string                  // "Type/id" in the order of the pages
	included map[string]bool           // search.mode include, less the matches
	bodies   map[string]map[string]any // the matches' resources
	pages    int
}

// maxPages bounds the pages of one search.
const maxPages = 100

// searchAll runs target and follows the next links.
func searchAll(srv fhirServer, target string) (*answer, error) {
	a := &answer{included: map[string]bool{}, bodies: map[string]map[string]any{}}
	seen := map[string]bool{}
	for target != "" {
		if a.pages == maxPages {
			return nil, fmt.Errorf("%s: more than %d pages", target, maxPages)
		}
		status, raw, err := srv.do(http.MethodGet, target, nil)
		if err != nil {
			return nil, err
		}
		if status != http.StatusOK {
			if a.pages == 0 {
				a.status = status
				return a, nil
			}
			return nil, fmt.Errorf("page %d of %s: %d %.300s", a.pages+1, target, status, raw)
		}
		a.status = status
		a.pages++
		var b struct {
			Link []struct {
				Relation string `json:"relation"`
				URL      string `json:"url"`
			} `json:"link"`
			Entry []struct {
				Resource json.RawMessage `json:"resource"`
				Search   struct {
					Mode string `json:"mode"`
				} `json:"search"`
			} `json:"entry"`
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if err := dec.Decode(&b); err != nil {
			return nil, fmt.Errorf("%s: %w", target, err)
		}
		if len(b.Entry) == 0 && a.pages > 1 {
			return nil, fmt.Errorf("%s: page %d is empty: %.300s", target, a.pages, raw)
		}
		for _, e := range b.Entry {
			var res map[string]any
			d := json.NewDecoder(bytes.NewReader(e.Resource))
			d.UseNumber()
			if err := d.Decode(&res); err != nil {
				return nil, err
			}
			ref := fmt.Sprintf("%v/%v", res["resourceType"], res["id"])
			switch e.Search.Mode {
			case "match", "":
				if res["resourceType"] == "OperationOutcome" {
					continue
				}
				if seen[ref] {
					return nil, fmt.Errorf("%s: %s on two pages", target, ref)
				}
				seen[ref] = true
				a.matches = append(a.matches, ref)
				a.bodies[ref] = res
			case "include":
				a.included[ref] = true
			}
		}
		target = ""
		for _, l := range b.Link {
			if l.Relation == "next" {
				target = l.URL
			}
		}
	}
	for ref := range a.included {
		if seen[ref] {
			delete(a.included, ref)
		}
	}
	return a, nil
}

// load sends a transaction Bundle to srv and checks it succeeded.
func load(srv fhirServer, bundle []byte) error {
	status, raw, err := srv.do(http.MethodPost, "", bundle)
	if err == nil && status != http.StatusOK {
		err = fmt.Errorf("%d %.600s", status, raw)
	}
	return err
}

// syntheaAsPUT turns a Synthea transaction (POST entries, urn:uuid
// fullUrls) into one that PUTs each resource at Type/{uuid}: both servers
// then hold the same ids.
func syntheaAsPUT(t *testing.T, raw []byte) []byte {
	t.Helper()
	b := testkit.DecodeFHIR(t, raw)
	for _, e := range b["entry"].([]any) {
		e := e.(map[string]any)
		res := e["resource"].(map[string]any)
		id := strings.TrimPrefix(e["fullUrl"].(string), "urn:uuid:")
		res["id"] = id
		e["request"] = map[string]any{"method": "PUT", "url": fmt.Sprintf("%s/%s", res["resourceType"], id)}
	}
	return testkit.MustJSON(t, b)
}

// Generated resources with the values where readings differ: dates at
// every precision and in time zones, periods open at either end, decimals
// with and without trailing zeros, Ranges, quantities in two units,
// strings with accents and apostrophes, profiles (uri).
var (
	genDates   = []string{"2019", "2020-02", "2020-02-29", "2021-06-15", "2021-06-15T10:00:00Z", "2021-06-15T23:30:00+05:00", "2021-06-15T01:15:00-08:00", "2022-01-01T00:00:00.123Z", "2023-12-31", "1999-12-31T23:59:59Z"}
	genNames   = []string{"Müller", "Muller", "Mueller", "Ångström", "O'Brien", "van der Berg", "Zoë", "Zoe"}
	genNumbers = []string{"0", "5", "5.0", "5.00", "4.96", "5.04", "5.5", "-3.2", "100", "100.0", "0.001", "7.25", "123.456"}
	genCodes   = []string{"2339-0", "8867-4", "29463-7", "8480-6"}
	genUnits   = []string{"mg/dL", "mmol/L"}
)

// generated returns a transaction of PUTs: 6 Patients, 150 Observations,
// 30 Conditions and 30 RiskAssessments.
func generated(t *testing.T, rng *rand.Rand) []byte {
	t.Helper()
	pick := func(xs []string) string { return xs[rng.IntN(len(xs))] }
	num := func() json.Number { return json.Number(pick(genNumbers)) }
	numRange := func() (json.Number, json.Number) {
		a, b := num(), num()
		x, _ := new(big.Rat).SetString(a.String())
		y, _ := new(big.Rat).SetString(b.String())
		if x.Cmp(y) > 0 {
			return b, a
		}
		return a, b
	}
	var entries []any
	put := func(res map[string]any) {
		entries = append(entries, map[string]any{"resource": res,
			"request": map[string]any{"method": "PUT", "url": fmt.Sprintf("%s/%s", res["resourceType"], res["id"])}})
	}
	period := func() map[string]any {
		a, b := pick(genDates), pick(genDates)
		if a > b {
			a, b = b, a
		}
		switch rng.IntN(3) {
		case 0:
			return map[string]any{"start": a}
		case 1:
			return map[string]any{"end": b}
		}
		return map[string]any{"start": a, "end": b}
	}
	for i := range 6 {
		p := map[string]any{"resourceType": "Patient", "id": fmt.Sprintf("gen-p%d", i),
			"name":       []any{map[string]any{"family": pick(genNames), "given": []any{pick(genNames)}}},
			"gender":     pick([]string{"male", "female", "other"}),
			"identifier": []any{map[string]any{"system": "http://example.org/mrn", "value": fmt.Sprintf("MRN%d", i%3)}},
			"address":    []any{map[string]any{"city": pick([]string{"Zürich", "Zurich", "Bern"})}},
			"meta":       map[string]any{"profile": []any{pick([]string{"http://example.org/fhir/StructureDefinition/a", "http://example.org/fhir/StructureDefinition/b"})}},
		}
		if i%4 != 3 {
			p["birthDate"] = pick([]string{"1970", "1980-05", "1990-07-14", "2001-01-01"})
		}
		put(p)
	}
	for i := range 150 {
		code := pick(genCodes)
		o := map[string]any{"resourceType": "Observation", "id": fmt.Sprintf("gen-o%d", i),
			"status":  pick([]string{"final", "amended", "preliminary"}),
			"code":    map[string]any{"coding": []any{map[string]any{"system": "http://loinc.org", "code": code}}, "text": "Blood " + pick(genNames)},
			"subject": map[string]any{"reference": fmt.Sprintf("Patient/gen-p%d", rng.IntN(6))},
		}
		switch rng.IntN(4) {
		case 0:
			o["effectivePeriod"] = period()
		case 1:
		default:
			o["effectiveDateTime"] = pick(genDates)
		}
		switch rng.IntN(5) {
		case 0:
			o["valueString"] = pick(genNames)
		case 1:
			lo, hi := numRange()
			o["valueRange"] = map[string]any{"low": map[string]any{"value": lo, "unit": "mg"}, "high": map[string]any{"value": hi, "unit": "mg"}}
		case 2:
		default:
			q := map[string]any{"value": num()}
			if rng.IntN(3) > 0 {
				u := pick(genUnits)
				q["system"], q["code"], q["unit"] = "http://unitsofmeasure.org", u, u
			}
			o["valueQuantity"] = q
		}
		if rng.IntN(4) == 0 {
			o["meta"] = map[string]any{"profile": []any{"http://example.org/fhir/StructureDefinition/obs"}}
		}
		put(o)
	}
	for i := range 30 {
		c := map[string]any{"resourceType": "Condition", "id": fmt.Sprintf("gen-c%d", i),
			"subject": map[string]any{"reference": fmt.Sprintf("Patient/gen-p%d", rng.IntN(6))},
			"code":    map[string]any{"coding": []any{map[string]any{"system": "http://snomed.info/sct", "code": pick([]string{"44054006", "38341003"})}}}}
		switch rng.IntN(3) {
		case 0:
			c["onsetPeriod"] = period()
		case 1:
			c["onsetDateTime"] = pick(genDates)
		}
		if rng.IntN(2) == 0 {
			c["recordedDate"] = pick(genDates)
		}
		put(c)
		ra := map[string]any{"resourceType": "RiskAssessment", "id": fmt.Sprintf("gen-r%d", i), "status": "final",
			"subject": map[string]any{"reference": fmt.Sprintf("Patient/gen-p%d", rng.IntN(6))}}
		if rng.IntN(2) == 0 {
			ra["prediction"] = []any{map[string]any{"probabilityDecimal": num()}}
		} else {
			lo, hi := numRange()
			ra["prediction"] = []any{map[string]any{"probabilityRange": map[string]any{"low": map[string]any{"value": lo}, "high": map[string]any{"value": hi}}}}
		}
		put(ra)
	}
	for _, res := range fixed {
		put(res)
	}
	return testkit.MustJSON(t, map[string]any{"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

// data is what the searches are generated from: every stored resource.
type data struct {
	byType map[string][]map[string]any
}

// readAll reads every resource of the given types back from srv.
func readAll(t *testing.T, srv fhirServer, types []string) *data {
	t.Helper()
	d := &data{byType: map[string][]map[string]any{}}
	for _, typ := range types {
		a, err := searchAll(srv, "/"+typ+"?_count=500")
		if err != nil || a.status != http.StatusOK {
			t.Fatalf("reading %s back: %v %v", typ, err, a)
		}
		for _, ref := range a.matches {
			d.byType[typ] = append(d.byType[typ], a.bodies[ref])
		}
	}
	return d
}

// values returns the values of parameter code over every resource of typ.
func (d *data) values(typ, code string) []fhirpath.Node {
	p, ok := searchparam.Lookup(typ, code)
	if !ok {
		panic(typ + " has no parameter " + code)
	}
	var out []fhirpath.Node
	for _, res := range d.byType[typ] {
		nodes, err := p.Evaluate(res)
		if err == nil {
			out = append(out, nodes...)
		}
	}
	return out
}

// The searches. Each parameter a generator knows gets values taken from
// the data (so that most searches find something), with the prefixes,
// precisions and modifiers of its type.
var (
	// "ap" is left out: R4 leaves its width to the server ("systems may
	// choose other values").
	datePrefixes   = []string{"", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"}
	numberPrefixes = []string{"", "eq", "ne", "gt", "lt", "ge", "le"}
)

// params lists, per type, the parameters searched with values from the
// data.
var params = map[string][]string{
	"Observation":          {"code", "category", "status", "subject", "patient", "encounter", "date", "value-quantity", "value-string", "value-concept", "combo-code", "component-code", "_profile"},
	"Patient":              {"name", "family", "given", "birthdate", "gender", "address-city", "address-state", "identifier", "general-practitioner", "_profile"},
	"Encounter":            {"class", "type", "status", "date", "patient", "participant", "service-provider", "reason-code"},
	"Condition":            {"code", "clinical-status", "verification-status", "onset-date", "abatement-date", "recorded-date", "subject", "encounter"},
	"Procedure":            {"code", "date", "subject", "status", "encounter"},
	"Immunization":         {"vaccine-code", "date", "patient", "status"},
	"MedicationRequest":    {"code", "authoredon", "intent", "status", "subject", "encounter", "requester"},
	"Claim":                {"created", "patient", "provider", "use", "priority", "status"},
	"ExplanationOfBenefit": {"created", "patient", "provider", "status", "claim"},
	"DiagnosticReport":     {"code", "date", "subject", "result", "status", "issued"},
	"CarePlan":             {"category", "date", "subject", "status"},
	"Organization":         {"name", "address-city", "identifier"},
	"Practitioner":         {"name", "family", "identifier", "gender"},
	"RiskAssessment":       {"probability", "subject"},
}

// sorts lists, per type, the _sort values tried.
var sorts = map[string][]string{
	"Observation":          {"date", "-date", "value-quantity", "-value-quantity", "code", "date,code"},
	"Patient":              {"birthdate", "-birthdate", "family", "gender,-birthdate"},
	"Encounter":            {"date", "-date"},
	"Condition":            {"onset-date", "-recorded-date"},
	"Immunization":         {"date", "-date"},
	"Claim":                {"created", "-created"},
	"DiagnosticReport":     {"-date", "issued"},
	"RiskAssessment":       {"probability", "-probability"},
	"ExplanationOfBenefit": {"-created"},
}

type generator struct {
	rng *rand.Rand
	d   *data
}

func (g *generator) pick(xs []string) string { return xs[g.rng.IntN(len(xs))] }

// value returns one search value for typ's parameter code, with a
// modifier, or "" when the data has none.
func (g *generator) value(typ, code string) (name, value string) {
	p, _ := searchparam.Lookup(typ, code)
	nodes := g.d.values(typ, code)
	if len(nodes) == 0 {
		return "", ""
	}
	n := nodes[g.rng.IntN(len(nodes))]
	switch p.Type {
	case searchparam.TypeToken:
		sys, c := tokenOf(n.Value)
		if c == "" {
			return "", ""
		}
		switch g.rng.IntN(6) {
		case 0:
			return code + ":not", c
		case 1:
			if sys != "" {
				return code, sys + "|"
			}
		case 2:
			if sys != "" {
				return code, sys + "|" + c
			}
		case 3:
			_, c2 := tokenOf(nodes[g.rng.IntN(len(nodes))].Value)
			return code, c + "," + c2
		}
		return code, c
	case searchparam.TypeReference:
		ref := refString(n.Value)
		if ref == "" {
			return "", ""
		}
		typ, id, _ := strings.Cut(ref, "/")
		switch g.rng.IntN(4) {
		case 0:
			return code, id
		case 1:
			return code + ":" + typ, id
		}
		return code, ref
	case searchparam.TypeString:
		s := stringOf(n.Value)
		if s == "" {
			return "", ""
		}
		switch g.rng.IntN(5) {
		case 0:
			return code + ":exact", s
		case 1:
			r := []rune(s)
			i := g.rng.IntN(len(r))
			return code + ":contains", strings.ToLower(string(r[i:min(len(r), i+3)]))
		case 2:
			return code + ":exact", strings.ToLower(s)
		}
		r := []rune(s)
		return code, strings.ToLower(string(r[:1+g.rng.IntN(len(r))]))
	case searchparam.TypeURI:
		s, _ := n.Value.(string)
		if g.rng.IntN(3) == 0 {
			return code + ":below", s[:strings.LastIndex(s, "/")]
		}
		return code, s
	case searchparam.TypeDate:
		s := dateOf(n.Value)
		if s == "" {
			return "", ""
		}
		if g.rng.IntN(8) == 0 {
			return code + ":missing", g.pick([]string{"true", "false"})
		}
		return code, g.pick(datePrefixes) + truncateDate(g.rng, s)
	case searchparam.TypeNumber, searchparam.TypeQuantity:
		v, unit := numberOf(n.Value)
		if v == "" {
			return "", ""
		}
		if g.rng.IntN(3) == 0 {
			v = g.pick(genNumbers)
		}
		v = g.pick(numberPrefixes) + v
		if p.Type == searchparam.TypeQuantity && unit != "" {
			switch g.rng.IntN(3) {
			case 0:
				v += "|http://unitsofmeasure.org|" + unit
			case 1:
				v += "||" + unit
			}
		}
		return code, v
	}
	return "", ""
}

// truncateDate cuts a date(time) to a random precision the data allows.
func truncateDate(rng *rand.Rand, s string) string {
	var cuts []string
	for _, n := range []int{4, 7, 10} {
		if len(s) >= n {
			cuts = append(cuts, s[:n])
		}
	}
	if len(s) > 10 {
		cuts = append(cuts, s)
	}
	return cuts[rng.IntN(len(cuts))]
}

func tokenOf(v any) (system, code string) {
	switch v := v.(type) {
	case string:
		return "", v
	case bool:
		return "", fmt.Sprint(v)
	case map[string]any:
		if cs, ok := v["coding"].([]any); ok && len(cs) > 0 {
			return tokenOf(cs[0])
		}
		if c, ok := v["code"].(string); ok {
			s, _ := v["system"].(string)
			return s, c
		}
		if c, ok := v["value"].(string); ok { // Identifier, ContactPoint
			s, _ := v["system"].(string)
			return s, c
		}
	}
	return "", ""
}

func refString(v any) string {
	m, ok := v.(map[string]any)
	if !ok {
		return ""
	}
	s, _ := m["reference"].(string)
	if strings.Count(s, "/") != 1 {
		return ""
	}
	return s
}

func stringOf(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case map[string]any:
		for _, k := range []string{"family", "city", "state", "text", "name"} {
			if s, ok := v[k].(string); ok {
				return s
			}
		}
		if g, ok := v["given"].([]any); ok && len(g) > 0 {
			s, _ := g[0].(string)
			return s
		}
	}
	return ""
}

func dateOf(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case map[string]any:
		for _, k := range []string{"start", "end"} {
			if s, ok := v[k].(string); ok {
				return s
			}
		}
	}
	return ""
}

func numberOf(v any) (value, unit string) {
	switch v := v.(type) {
	case json.Number:
		return v.String(), ""
	case map[string]any:
		if n, ok := v["value"].(json.Number); ok {
			u, _ := v["code"].(string)
			return n.String(), u
		}
		if low, ok := v["low"].(map[string]any); ok {
			if n, ok := low["value"].(json.Number); ok {
				return n.String(), ""
			}
		}
	}
	return "", ""
}

// query is one generated search.
type query struct {
	typ, params string
}

func (q query) String() string { return q.typ + "?" + q.params }

// queries generates n searches over d.
func (g *generator) queries(n int) []query {
	types := make([]string, 0, len(params))
	for typ := range params {
		types = append(types, typ)
	}
	slices.Sort(types)
	// Joins, includes and paging, on the shapes the data has.
	special := []func() query{
		func() query {
			_, v := g.value("Patient", "family")
			return query{"Observation", "subject:Patient.family=" + url.QueryEscape(v) + "&code=" + g.oneCode()}
		},
		func() query {
			_, v := g.value("Patient", "birthdate")
			return query{"Observation", "patient.birthdate=" + v}
		},
		func() query {
			_, v := g.value("Encounter", "class")
			return query{"Observation", "encounter.class=" + url.QueryEscape(v)}
		},
		func() query {
			return query{"DiagnosticReport", "result.code=" + g.oneCode()}
		},
		func() query {
			_, v := g.value("Practitioner", "family")
			return query{"Encounter", "participant:Practitioner.family=" + url.QueryEscape(v)}
		},
		func() query {
			return query{"Patient", "_has:Observation:patient:code=" + g.oneCode()}
		},
		func() query {
			_, v := g.value("Condition", "code")
			return query{"Patient", "_has:Condition:subject:code=" + url.QueryEscape(v)}
		},
		func() query {
			return query{"Encounter", "_has:Observation:encounter:code=" + g.oneCode()}
		},
		func() query {
			_, v := g.value("Observation", "value-quantity")
			return query{"Patient", "_has:Observation:subject:value-quantity=" + url.QueryEscape(v)}
		},
		func() query {
			return query{"Observation", "code=" + g.oneCode() + "&_include=Observation:patient"}
		},
		func() query {
			return query{"Observation", "code=" + g.oneCode() + "&_include=Observation:encounter&_count=7"}
		},
		func() query {
			_, v := g.value("Encounter", "class")
			return query{"Encounter", "class=" + url.QueryEscape(v) + "&_include=Encounter:participant&_include=Encounter:service-provider"}
		},
		func() query {
			return query{"DiagnosticReport", "_include=DiagnosticReport:result&_include:iterate=Observation:encounter"}
		},
		func() query {
			_, v := g.value("Patient", "gender")
			return query{"Patient", "gender=" + v + "&_revinclude=Encounter:patient&_count=3"}
		},
		func() query {
			_, v := g.value("Condition", "code")
			return query{"Condition", "code=" + url.QueryEscape(v) + "&_include=Condition:subject&_revinclude:iterate=Encounter:patient"}
		},
		func() query { // composite
			_, v := g.value("Observation", "value-quantity")
			v = strings.Split(v, "|")[0]
			return query{"Observation", "code-value-quantity=" + g.oneCode() + "$" + url.QueryEscape(v)}
		},
		func() query {
			_, v := g.value("Claim", "patient")
			return query{"Claim", "patient=" + v + "&_revinclude=ExplanationOfBenefit:claim"}
		},
	}
	var out []query
	for len(out) < n {
		if g.rng.IntN(6) == 0 {
			out = append(out, special[g.rng.IntN(len(special))]())
			continue
		}
		typ := g.pick(types)
		var parts []string
		for range 1 + g.rng.IntN(2) { // one or two filters, ANDed
			name, v := g.value(typ, g.pick(params[typ]))
			if name != "" {
				parts = append(parts, name+"="+url.QueryEscape(v))
			}
		}
		if s := sorts[typ]; len(s) > 0 && g.rng.IntN(3) == 0 {
			parts = append(parts, "_sort="+g.pick(s))
		}
		if g.rng.IntN(4) == 0 { // paging
			parts = append(parts, "_count="+fmt.Sprint(3+g.rng.IntN(8)))
		}
		if len(parts) > 0 {
			out = append(out, query{typ, strings.Join(parts, "&")})
		}
	}
	return out
}

func (g *generator) oneCode() string {
	_, c := tokenOf(g.d.values("Observation", "code")[g.rng.IntN(len(g.d.values("Observation", "code")))].Value)
	return url.QueryEscape(c)
}

// pairQueries generates n searches the store answers from its pair
// indexes (search.IndexFilters): Observation's code-value-concept and
// code-value-quantity composites and the conjunctions of code with
// value-concept or value-quantity, on the code and value of one
// Observation, with every prefix an index answers. They come from their
// own generator so that queries' battery stays as it was.
func (g *generator) pairQueries(n int) []query {
	prefix := func() string { return g.pick([]string{"gt", "ge", "lt", "le", ""}) } // HAPI refuses sa and eb on quantities
	var out []query
	for len(out) < n {
		var q query
		switch g.rng.IntN(4) {
		case 0:
			code, concept := g.observationWith("valueCodeableConcept")
			q = query{"Observation", "code-value-concept=" + code + "$" + concept}
		case 1:
			code, concept := g.observationWith("valueCodeableConcept")
			q = query{"Observation", "code=" + code + "&value-concept=" + concept}
		case 2:
			code, v := g.observationWith("valueQuantity")
			q = query{"Observation", "code-value-quantity=" + code + "$" + prefix() + v}
		default:
			code, v := g.observationWith("valueQuantity")
			q = query{"Observation", "code=" + code + "&value-quantity=" + prefix() + v}
		}
		out = append(out, q)
	}
	return out
}

// observationWith returns the code of a random Observation with element
// value (valueQuantity, valueCodeableConcept) and that value (a
// quantity's number, a concept's first code), query-escaped; both are
// "" when no Observation has it.
func (g *generator) observationWith(value string) (code, v string) {
	var with []map[string]any
	for _, res := range g.d.byType["Observation"] {
		if res[value] != nil && res["code"] != nil {
			with = append(with, res)
		}
	}
	if len(with) == 0 {
		return "", ""
	}
	res := with[g.rng.IntN(len(with))]
	_, code = tokenOf(res["code"])
	switch value {
	case "valueQuantity":
		v, _ = numberOf(res[value])
	default:
		_, v = tokenOf(res[value])
	}
	return url.QueryEscape(code), url.QueryEscape(v)
}

// fewerPages raises a small _count so that q has at most 40 pages (HAPI
// answers each page in tens of milliseconds).
func fewerPages(st storeServer, q query) query {
	params, _ := url.ParseQuery(q.params)
	count, _ := strconv.Atoi(params.Get("_count"))
	if count == 0 {
		return q
	}
	_, raw, _ := st.do(http.MethodGet, "/"+q.typ+"?"+q.params+"&_summary=count", nil)
	var b struct{ Total int }
	_ = json.Unmarshal(raw, &b)
	if b.Total > 40*count {
		params.Set("_count", strconv.Itoa(b.Total/40+1))
		q.params = params.Encode()
	}
	return q
}

// result of one query on both servers.
type result struct {
	q           query
	hapi, store *answer
	err         error
}

// searches is how many generated searches run on both servers (HAPI takes
// 100–300 ms per search here: under a minute).
const searches = 350

// pairSearches is how many more searches answered by pair indexes
// (pairQueries) run on both.
const pairSearches = 40

// TestStoreAgreesWithHAPI loads the six Synthea histories and generated
// resources into the store and into HAPI FHIR JPA, runs several hundred
// generated searches on both and compares the answers.
func TestStoreAgreesWithHAPI(t *testing.T) {
	testkit.Needs(t, "Java and the HAPI FHIR test server (test/hapi)")
	started := time.Now()
	db, err := store.Open(filepath.Join(t.TempDir(), "store.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	h, err := store.NewHandler(db, store.Config{})
	if err != nil {
		t.Fatal(err)
	}
	st := storeServer{h}
	var bundles [][]byte
	var names []string
	for name, raw := range testkit.Synthea(t) {
		names = append(names, name)
		bundles = append(bundles, syntheaAsPUT(t, raw))
	}
	names = append(names, "generated")
	bundles = append(bundles, generated(t, rand.New(rand.NewPCG(14, 2))))
	// The store loads while HAPI starts.
	storeLoaded := make(chan error, 1)
	go func() {
		for i, b := range bundles {
			if err := load(st, b); err != nil {
				storeLoaded <- fmt.Errorf("loading %s into the store: %w", names[i], err)
				return
			}
		}
		storeLoaded <- nil
	}()
	base := os.Getenv("PFR_HAPIDIFF_HAPI") // a HAPI the developer runs (header mode)
	if base == "" {
		base = hapitest.StartT(t, hapitest.Options{Mode: "header", Dir: t.TempDir(), Jar: hapitest.JarIn(testkit.Root(t))}).Base
	}
	if err := <-storeLoaded; err != nil {
		t.Fatal(err)
	}
	t.Logf("HAPI answered %.1fs after start", time.Since(started).Seconds())
	hapi := hapiServer{base: base, client: &http.Client{Timeout: 2 * time.Minute}}
	loadStart := time.Now()
	// One at a time: the Bundles share Organizations and Practitioners,
	// which HAPI cannot create from two transactions at once.
	for i, b := range bundles {
		if err := load(hapi, b); err != nil {
			t.Fatalf("loading %s into HAPI: %v", names[i], err)
		}
	}
	t.Logf("loaded into HAPI in %.1fs", time.Since(loadStart).Seconds())

	types := make([]string, 0, len(params))
	for typ := range params {
		types = append(types, typ)
	}
	slices.Sort(types)
	d := readAll(t, st, types)
	for _, list := range d.byType {
		for _, res := range list {
			stored[fmt.Sprintf("%v/%v", res["resourceType"], res["id"])] = res
		}
	}
	g := &generator{rng: rand.New(rand.NewPCG(14, 1)), d: d}
	qs := g.queries(searches)
	qs = append(qs, (&generator{rng: rand.New(rand.NewPCG(14, 6)), d: d}).pairQueries(pairSearches)...)

	searchStart := time.Now()
	var wg sync.WaitGroup
	results := make([]result, len(qs))
	work := make(chan int)
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				r := result{q: fewerPages(st, qs[i])}
				if r.hapi, r.err = searchAll(hapi, "/"+r.q.String()); r.err == nil {
					r.store, r.err = searchAll(st, "/"+r.q.String())
				}
				results[i] = r
			}
		}()
	}
	for i := range qs {
		work <- i
	}
	close(work)
	wg.Wait()
	t.Logf("%d searches on both in %.1fs", len(qs), time.Since(searchStart).Seconds())

	agree, deviating := 0, map[string]int{}
	for _, r := range results {
		if r.err != nil {
			t.Errorf("%s: %v", r.q, r.err)
			continue
		}
		diff := compare(r)
		if diff != "" && hapiPagingLost(t, hapi, &r) {
			diff = compare(r)
		}
		if diff == "" {
			agree++
			continue
		}
		if devs := classify(r); devs != nil {
			for _, d := range devs {
				deviating[d.name]++
			}
			continue
		}
		t.Errorf("%s: %s", r.q, diff)
	}
	t.Logf("%d of %d searches agree; HAPI departs from R4 in the others: %v", agree, len(results), deviating)

	// Each deviation on its pinned example: the store gives the R4
	// answer, and HAPI still another (else the deviation is gone and
	// its entry should go too).
	for _, d := range deviations {
		if d.pinned.typ == "" {
			continue // R4 leaves it open: nothing to pin
		}
		target := "/" + d.pinned.String()
		sa, err := searchAll(st, target)
		if err != nil || sa.status != http.StatusOK {
			t.Errorf("%s: pinned %s on the store: %v %v", d.name, target, err, sa)
			continue
		}
		if got := slices.Sorted(slices.Values(sa.matches)); len(got)+len(d.r4) > 0 && !slices.Equal(got, d.r4) {
			t.Errorf("%s: %s: store answers %v, R4 reads %v", d.name, target, got, d.r4)
		}
		ha, err := searchAll(hapi, target)
		if err != nil {
			t.Errorf("%s: pinned %s on HAPI: %v", d.name, target, err)
			continue
		}
		if got := slices.Sorted(slices.Values(ha.matches)); ha.status == http.StatusOK && (len(got)+len(d.r4) == 0 || slices.Equal(got, d.r4)) {
			t.Errorf("%s: %s: HAPI now answers as R4 reads (%v): drop the deviation", d.name, target, got)
		}
		t.Logf("deviation %q: %s: R4 and the store %v; HAPI %d %v", d.name, d.pinned, d.r4, ha.status, ha.matches)
	}
}

// hapiPagingLost checks an answer that disagrees with the store against
// HAPI's own count of the search (_summary=count: one synchronous query,
// no paging). HAPI loads a search's results in the background while it
// serves the first page; on a loaded machine its pages have lost matches
// (seen once: RiskAssessment?probability=ge5&_sort=probability gave one
// page of 10 without a next link, the store and HAPI's count 26). When
// HAPI's pages hold another number of matches than its count, the search
// is asked again, once, and r.hapi replaced; it reports whether it was.
// Asked again the same way, HAPI lost the same matches again under load
// (two runs in four, session 6), so it is asked for one page that holds
// them all (_count set to its count): without a second page there is
// nothing for its background loading to lose. A disagreement HAPI's
// count confirms is never re-asked.
func hapiPagingLost(t *testing.T, hapi hapiServer, r *result) bool {
	params, _ := url.ParseQuery(r.q.params)
	for k := range params {
		if strings.HasPrefix(k, "_include") || strings.HasPrefix(k, "_revinclude") || k == "_count" || k == "_sort" {
			params.Del(k)
		}
	}
	params.Set("_summary", "count")
	status, raw, err := hapi.do(http.MethodGet, "/"+r.q.typ+"?"+params.Encode(), nil)
	var b struct{ Total *int }
	if err != nil || status != http.StatusOK || json.Unmarshal(raw, &b) != nil || b.Total == nil || *b.Total == len(r.hapi.matches) {
		return false
	}
	whole, _ := url.ParseQuery(r.q.params)
	if n, _ := strconv.Atoi(whole.Get("_count")); n < *b.Total {
		whole.Set("_count", strconv.Itoa(*b.Total))
	}
	again, err := searchAll(hapi, "/"+r.q.typ+"?"+whole.Encode())
	if err != nil {
		return false
	}
	t.Logf("%s: HAPI's pages held %d matches, its count %d: asked again, %d matches", r.q, len(r.hapi.matches), *b.Total, len(again.matches))
	r.hapi = again
	return true
}

// compare returns how the two answers differ ("" when they agree).
func compare(r result) string {
	h, s := r.hapi, r.store
	if h.status != s.status {
		return fmt.Sprintf("status: HAPI %d, store %d", h.status, s.status)
	}
	if h.status != http.StatusOK {
		return ""
	}
	onlyH, onlyS := setDiff(h.matches, s.matches)
	if len(onlyH)+len(onlyS) > 0 {
		return fmt.Sprintf("matches: %d HAPI, %d store; only HAPI %v; only store %v", len(h.matches), len(s.matches), cut(onlyH), cut(onlyS))
	}
	oh, os := setDiff(keys(h.included), keys(s.included))
	if len(oh)+len(os) > 0 {
		return fmt.Sprintf("included: only HAPI %v; only store %v", cut(oh), cut(os))
	}
	params, _ := url.ParseQuery(r.q.params)
	if params.Get("_sort") != "" {
		q, err := search.Parse(r.q.typ, params, false)
		if err != nil {
			return "parse: " + err.Error()
		}
		if bad := outOfOrder(q, h); bad != "" {
			return "HAPI's order: " + bad
		}
		if bad := outOfOrder(q, s); bad != "" {
			return "store's order: " + bad
		}
	}
	return ""
}

// outOfOrder checks that a's matches follow the _sort keys (ties in any
// order: R4 does not say how they are broken).
func outOfOrder(q *search.Query, a *answer) string {
	for i := 1; i < len(a.matches); i++ {
		// Compared by the keys alone (no id tie-break).
		if q.Less(noID(a.bodies[a.matches[i]]), noID(a.bodies[a.matches[i-1]])) {
			return fmt.Sprintf("%s before %s", a.matches[i-1], a.matches[i])
		}
	}
	return ""
}

func maps(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func setDiff(a, b []string) (onlyA, onlyB []string) {
	inA, inB := map[string]bool{}, map[string]bool{}
	for _, x := range a {
		inA[x] = true
	}
	for _, x := range b {
		inB[x] = true
		if !inA[x] {
			onlyB = append(onlyB, x)
		}
	}
	for _, x := range a {
		if !inB[x] {
			onlyA = append(onlyA, x)
		}
	}
	sort.Strings(onlyA)
	sort.Strings(onlyB)
	return onlyA, onlyB
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func cut(xs []string) []string {
	if len(xs) > 6 {
		return append(xs[:6:6], fmt.Sprintf("… %d more", len(xs)-6))
	}
	return xs
}

// A deviation is a way HAPI FHIR JPA (8.8, stock settings) departs from
// the R4 search text. A search whose answers differ is accepted only when
// every difference is explained by one deviation (explains), and each
// deviation pins its R4 reading on a fixed example (check) that the store
// must answer as R4 says. docs/upstreams.md lists them (pfr_store, "Where
// it reads R4 differently from HAPI").
type deviation struct {
	name string
	// explains reports whether the deviation accounts for resource res
	// being in one answer and not the other (onlyStore: in the store's).
	explains func(q query, res map[string]any, onlyStore bool) bool
	// status, when set, explains a search HAPI refuses with this status
	// class (4xx/5xx) while the store answers it.
	status func(q query, hapiStatus int) bool
	// order explains a different order of two matches a and b.
	order func(q query, a, b map[string]any) bool
	// pinned is a search on the fixed resources and the ids R4 gives.
	pinned query
	r4     []string
}

// A filterHit is one filter of a search as it applies to one resource:
// typ?code=value decides on res (the resource itself, or for a chain the
// resources it refers to, for _has those referring to it).
type filterHit struct {
	typ, code, value string
	res              map[string]any
}

// stored is every resource loaded, by "Type/id" (the searches' data).
var stored = map[string]map[string]any{}

// hits returns the filters of q on parameters of the given types, as they
// apply to res.
func hits(q query, res map[string]any, types ...string) []filterHit {
	var out []filterHit
	for name, vs := range mustQuery(q.params) {
		typ, rs := q.typ, []map[string]any{res}
		if rest, ok := strings.CutPrefix(name, "_has:"); ok {
			parts := strings.SplitN(rest, ":", 3)
			if len(parts) != 3 {
				continue
			}
			p, ok := searchparam.Lookup(parts[0], parts[1])
			if !ok {
				continue
			}
			typ, rs, name = parts[0], nil, parts[2]
			self := fmt.Sprintf("%v/%v", res["resourceType"], res["id"])
			for ref, cand := range stored {
				if !strings.HasPrefix(ref, typ+"/") {
					continue
				}
				nodes, _ := p.Evaluate(cand)
				if slices.ContainsFunc(nodes, func(n fhirpath.Node) bool { return refString(n.Value) == self }) {
					rs = append(rs, cand)
				}
			}
		} else if head, rest, ok := strings.Cut(name, "."); ok {
			code, _, _ := strings.Cut(head, ":")
			p, ok := searchparam.Lookup(typ, code)
			if !ok {
				continue
			}
			nodes, _ := p.Evaluate(res)
			rs, name = nil, rest
			for _, n := range nodes {
				if t := stored[refString(n.Value)]; t != nil {
					rs = append(rs, t)
				}
			}
			if len(rs) == 0 {
				continue
			}
			typ, _ = rs[0]["resourceType"].(string)
		}
		code, _, _ := strings.Cut(name, ":")
		p, ok := searchparam.Lookup(typ, code)
		if !ok || !slices.Contains(types, p.Type) {
			continue
		}
		for _, v := range vs {
			for _, r := range rs {
				out = append(out, filterHit{typ, code, v, r})
			}
		}
	}
	return out
}

// match tells whether res matches typ?params by the store's own reading.
func match(typ, params string, res map[string]any) bool {
	v, _ := url.ParseQuery(params)
	q, err := search.Parse(typ, v, true)
	return err == nil && q.Match(res)
}

var deviations = []*deviation{{
	// R4 3.1.1.4.1: a Range is one interval; eq means the search range
	// contains it, gt that it extends above the value, and so on. HAPI
	// indexes a Range's low and high as two separate numbers, each
	// compared on its own.
	name: "number or quantity target that is a Range",
	explains: func(q query, res map[string]any, _ bool) bool {
		for _, h := range hits(q, res, searchparam.TypeNumber, searchparam.TypeQuantity) {
			p, _ := searchparam.Lookup(h.typ, h.code)
			nodes, _ := p.Evaluate(h.res)
			for _, n := range nodes {
				if m, ok := n.Value.(map[string]any); ok && (m["low"] != nil || m["high"] != nil) {
					return true
				}
			}
		}
		return false
	},
	pinned: query{"RiskAssessment", "_id=fix-r-range&probability=5.0"},
	r4:     []string{},
}, {
	// R4 3.1.1.4.1: "100" without a prefix or with eq means [99.5,
	// 100.5), "5.0" [4.95, 5.05): the value's implicit precision, and ne
	// is its negation. HAPI keeps a number parameter's values to two
	// decimals (123.456 is stored as 123.46) and compares them exactly,
	// and a quantity written without decimals too: targets inside the
	// implicit range come out differently under eq and ne.
	name: "implicit precision of the search number",
	explains: func(q query, res map[string]any, _ bool) bool {
		for _, h := range hits(q, res, searchparam.TypeNumber, searchparam.TypeQuantity) {
			for _, one := range strings.Split(h.value, ",") {
				num := strings.Split(one, "|")[0]
				if len(num) > 1 && num[0] >= 'a' && num[0] <= 'z' {
					if num[:2] != "eq" && num[:2] != "ne" {
						continue // no implicit range
					}
					num = num[2:]
				}
				// The target lies in the search number's implicit range.
				if match(h.typ, h.code+"=eq"+url.QueryEscape(num), h.res) {
					return true
				}
			}
		}
		return false
	},
	pinned: query{"RiskAssessment", "_id=fix-r-decimal&probability=5"},
	r4:     []string{"RiskAssessment/fix-r-decimal"},
}, {
	// R4 3.1.1.4.2: a date is a range at its precision; ge2022 matches a
	// target inside 2022 ("the range of the search value fully contains
	// the range of the target value"), le2016 too, and lt/gt compare
	// with the search range's start/end. HAPI compares a prefixed date
	// given at year, month or day precision with one end of its range
	// only (and le/ge with an instant by that instant), so targets that
	// overlap the search value's own range come out differently.
	name: "date prefix compared with one end of the search value's range",
	explains: func(q query, res map[string]any, _ bool) bool {
		for _, h := range hits(q, res, searchparam.TypeDate) {
			if len(h.value) < 3 || !strings.Contains("gtltgelesaeb", h.value[:2]) {
				continue
			}
			val := url.QueryEscape(h.value[2:])
			// The target overlaps the search value's own range:
			// neither starts after it nor ends before it.
			if !match(h.typ, h.code+"=sa"+val, h.res) && !match(h.typ, h.code+"=eb"+val, h.res) {
				return true
			}
		}
		return false
	},
	pinned: query{"Condition", "_id=fix-c-2022,fix-c-2021&recorded-date=ge2022"},
	r4:     []string{"Condition/fix-c-2022"},
}, {
	// R4 does not say which value of an element with several (a
	// Patient's names, a Range's ends) a _sort orders by. The store takes
	// the first; HAPI the lowest for an ascending sort, the highest for
	// a descending one (R5's later rule). Only the order differs.
	name: "sort by an element with several values",
	order: func(q query, a, b map[string]any) bool {
		for _, key := range strings.Split(mustQuery(q.params).Get("_sort"), ",") {
			p, ok := searchparam.Lookup(q.typ, strings.TrimPrefix(key, "-"))
			if !ok {
				continue
			}
			for _, res := range []map[string]any{a, b} {
				nodes, _ := p.Evaluate(res)
				if len(nodes) > 1 || len(nodes) == 1 && isRange(nodes[0].Value) {
					return true
				}
			}
		}
		return false
	},
}, {
	// R4 lists :contains for strings; HAPI's stock settings refuse it
	// (405, "allowContainsSearches" off).
	name: "string :contains refused",
	status: func(q query, status int) bool {
		return status == http.StatusMethodNotAllowed && strings.Contains(q.params, ":contains=")
	},
	pinned: query{"Patient", "_id=fix-p-mueller,fix-p-other&name:contains=%C3%9CLL"},
	r4:     []string{"Patient/fix-p-mueller"},
}, {
	// R4 defines :missing on every parameter type; HAPI's stock settings
	// do not index missing fields, and its answer to :missing on a date
	// is a 400 or 500.
	name: ":missing on a date parameter refused",
	status: func(q query, status int) bool {
		if status < 400 {
			return false
		}
		for name := range mustQuery(q.params) {
			code, mod, _ := strings.Cut(name, ":")
			if p, ok := searchparam.Lookup(q.typ, code); ok && mod == "missing" && p.Type == searchparam.TypeDate {
				return true
			}
		}
		return false
	},
	pinned: query{"Condition", "_id=fix-c-2022,fix-c-none&recorded-date:missing=true"},
	r4:     []string{"Condition/fix-c-none"},
}}

func isRange(v any) bool {
	m, ok := v.(map[string]any)
	return ok && (m["low"] != nil || m["high"] != nil)
}

func mustQuery(s string) url.Values {
	v, _ := url.ParseQuery(s)
	return v
}

// fixed are the resources the pinned examples search.
var fixed = []map[string]any{
	{"resourceType": "RiskAssessment", "id": "fix-r-range", "status": "final",
		"prediction": []any{map[string]any{"probabilityRange": map[string]any{"low": map[string]any{"value": json.Number("5")}, "high": map[string]any{"value": json.Number("6")}}}}},
	{"resourceType": "RiskAssessment", "id": "fix-r-decimal", "status": "final",
		"prediction": []any{map[string]any{"probabilityDecimal": json.Number("5.04")}}},
	{"resourceType": "Condition", "id": "fix-c-2022", "recordedDate": "2022-01-01T00:00:00.500Z", "subject": map[string]any{"reference": "Patient/fix-p-other"}},
	{"resourceType": "Condition", "id": "fix-c-2021", "recordedDate": "2021-12-31", "subject": map[string]any{"reference": "Patient/fix-p-other"}},
	{"resourceType": "Condition", "id": "fix-c-none", "subject": map[string]any{"reference": "Patient/fix-p-other"}},
	{"resourceType": "Patient", "id": "fix-p-mueller", "name": []any{map[string]any{"family": "Müller"}}},
	{"resourceType": "Patient", "id": "fix-p-other", "name": []any{map[string]any{"family": "Miller"}}},
}

// classify returns the deviations that explain every difference between
// r's answers, nil when something is left unexplained (or the store errs
// where HAPI answers).
func classify(r result) []*deviation {
	h, s := r.hapi, r.store
	if h.status != s.status {
		for _, d := range deviations {
			if d.status != nil && s.status == http.StatusOK && d.status(r.q, h.status) {
				return []*deviation{d}
			}
		}
		return nil
	}
	var out []*deviation
	explained := func(res map[string]any, onlyStore bool) bool {
		for _, d := range deviations {
			if d.explains != nil && d.explains(r.q, res, onlyStore) {
				if !slices.Contains(out, d) {
					out = append(out, d)
				}
				return true
			}
		}
		return false
	}
	onlyH, onlyS := setDiff(h.matches, s.matches)
	for _, ref := range onlyH {
		if !explained(h.bodies[ref], false) {
			return nil
		}
	}
	for _, ref := range onlyS {
		if !explained(s.bodies[ref], true) {
			return nil
		}
	}
	if len(out) > 0 {
		return out
	}
	for _, d := range deviations {
		if d.order != nil && orderExplained(r, d) {
			return []*deviation{d}
		}
	}
	return nil
}

// orderExplained reports whether every pair HAPI orders differently from
// the store's keys involves what d explains.
func orderExplained(r result, d *deviation) bool {
	oh, os := setDiff(keys(r.hapi.included), keys(r.store.included))
	if len(oh)+len(os) > 0 {
		return false
	}
	q, err := search.Parse(r.q.typ, mustQuery(r.q.params), false)
	if err != nil {
		return false
	}
	for _, a := range []*answer{r.hapi, r.store} {
		for i := 1; i < len(a.matches); i++ {
			x, y := a.bodies[a.matches[i-1]], a.bodies[a.matches[i]]
			if q.Less(noID(y), noID(x)) && !d.order(r.q, x, y) {
				return false
			}
		}
	}
	return true
}

func noID(res map[string]any) map[string]any {
	out := maps(res)
	out["id"] = ""
	return out
}
