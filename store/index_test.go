package store

import (
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/url"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/pfrgateway/caddy-pfr/fhir/search"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// The index is an optimization only: for every query, the ids a search
// finds through the index are exactly those a scan of every resource
// finds, in the same order. Generated data covers each parameter type
// (token, reference, string, uri, date, number, quantity) with the awkward
// values (precisions, time zones, open and inverted periods, Ranges,
// absolute and urn references, accents, long strings, booleans); the
// generated queries cover every prefix and modifier, OR lists and ANDs.

var (
	ixCodes    = []string{"2339-0", "8867-4", "29463-7", "8480-6", "85354-9", "true"}
	ixSystems  = []string{"http://loinc.org", "http://snomed.info/sct", "urn:oid:1.2.3"}
	ixDates    = []string{"2019", "2020-02", "2020-02-29", "2021-06-15T10:00:00Z", "2021-06-15T23:30:00+05:00", "2021-06-15T01:15:00-08:00", "2022-01-01T00:00:00.123Z", "2023-12-31", "1999-12-31T23:59:59Z"}
	ixNames    = []string{"Müller", "muller", "Mueller", "Ångström", "O'Brien", "van der Berg", "Zoë", strings.Repeat("Verylongname", 20)}
	ixNumbers  = []string{"0", "5", "5.0", "5.00", "-3.2", "100", "1e2", "0.001", "123456789.123456789", "7.25"}
	ixPrefixes = []string{"", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"}
)

// ixData writes generated resources into the default partition of db:
// Patients, Observations, Conditions and RiskAssessments.
func ixData(t *testing.T, db *DB, rng *rand.Rand, n int) {
	t.Helper()
	pick := func(xs []string) string { return xs[rng.IntN(len(xs))] }
	date := func() string {
		d := pick(ixDates)
		if rng.IntN(3) == 0 { // a spread of instants too
			return time.Date(2018+rng.IntN(6), time.Month(1+rng.IntN(12)), 1+rng.IntN(28), rng.IntN(24), rng.IntN(60), rng.IntN(60), 0, time.UTC).Format(time.RFC3339)
		}
		return d
	}
	num := func() any {
		return jsonNumber(pick(ixNumbers))
	}
	coding := func() map[string]any {
		c := map[string]any{"code": pick(ixCodes), "display": "Glucose " + pick(ixNames)}
		if rng.IntN(4) > 0 {
			c["system"] = pick(ixSystems)
		}
		return c
	}
	period := func() map[string]any {
		p := map[string]any{}
		switch rng.IntN(4) {
		case 0:
			p["start"] = date()
		case 1:
			p["end"] = date()
		default: // both, possibly inverted
			p["start"], p["end"] = date(), date()
		}
		return p
	}
	ref := func(typ string, i int) map[string]any {
		switch rng.IntN(5) {
		case 0:
			return map[string]any{"reference": fmt.Sprintf("http://other.example/fhir/%s/p%d", typ, i)}
		case 1:
			return map[string]any{"reference": fmt.Sprintf("urn:uuid:0000000%d-0000-4000-8000-000000000000", i)}
		case 2:
			return map[string]any{"reference": fmt.Sprintf("%s/p%d/_history/2", typ, i)}
		}
		return map[string]any{"reference": fmt.Sprintf("%s/p%d", typ, i)}
	}
	err := db.update(defaultPartitionKey, func(p *ptx) error {
		for i := range 12 {
			pat := resource{"resourceType": "Patient", "gender": pick([]string{"male", "female", "other"}),
				"name":       []any{map[string]any{"family": pick(ixNames), "given": []any{pick(ixNames), pick(ixNames)}}},
				"identifier": []any{map[string]any{"system": pick(ixSystems), "value": fmt.Sprintf("MRN%d", i%5), "type": map[string]any{"coding": []any{map[string]any{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": pick([]string{"MR", "SS"})}}}}},
				"telecom":    []any{map[string]any{"system": "email", "value": fmt.Sprintf("p%d@example.org", i%4)}},
				"active":     rng.IntN(2) == 0,
				"meta":       map[string]any{"profile": []any{pick([]string{"http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient", "http://example.org/p/" + pick(ixNames)})}},
			}
			if rng.IntN(4) > 0 {
				pat["birthDate"] = pick([]string{"1970", "1980-05", "1990-07-14", "2001-01-01"})
			}
			if _, err := p.write("Patient", fmt.Sprintf("p%d", i), pat, nil); err != nil {
				return err
			}
		}
		for i := range n {
			obs := resource{"resourceType": "Observation", "status": pick([]string{"final", "amended", "preliminary"}),
				"code":    map[string]any{"coding": []any{coding(), coding()}[:1+rng.IntN(2)], "text": "Blood " + pick(ixNames)},
				"subject": ref("Patient", rng.IntN(12)),
			}
			switch rng.IntN(4) {
			case 0:
				obs["effectivePeriod"] = period()
			case 1:
			default:
				obs["effectiveDateTime"] = date()
			}
			switch rng.IntN(9) {
			case 0:
				obs["valueString"] = pick(ixNames)
			case 1:
				obs["valueRange"] = map[string]any{"low": map[string]any{"value": num(), "unit": "mg"}, "high": map[string]any{"value": num(), "unit": "mg"}}
			case 2:
			case 3:
				obs["valueCodeableConcept"] = map[string]any{"coding": []any{coding()}, "text": pick(ixNames)}
			case 4:
				obs["valueDateTime"] = date()
			case 5:
				obs["valuePeriod"] = period()
			case 6: // value-quantity names it, code-value-quantity does not
				obs["valueSampledData"] = map[string]any{"origin": map[string]any{"value": num()}, "period": 1, "dimensions": 1,
					"lowerLimit": num(), "upperLimit": num(), "data": "1 2 3"}
			default:
				q := map[string]any{"value": num()}
				if rng.IntN(3) > 0 {
					q["system"], q["code"], q["unit"] = "http://unitsofmeasure.org", pick([]string{"mg/dL", "mmol/L"}), "mg/dL"
				}
				obs["valueQuantity"] = q
			}
			if rng.IntN(3) == 0 {
				obs["performer"] = []any{map[string]any{"identifier": map[string]any{"system": pick(ixSystems), "value": "doc" + fmt.Sprint(rng.IntN(3))}}}
			}
			if rng.IntN(4) == 0 { // a panel: the combo-* parameters read its parts too
				var comps []any
				for range 1 + rng.IntN(3) {
					c := map[string]any{"code": map[string]any{"coding": []any{coding()}}}
					switch rng.IntN(3) {
					case 0:
						c["valueQuantity"] = map[string]any{"value": num(), "unit": "mg/dL"}
					case 1:
						c["valueCodeableConcept"] = map[string]any{"coding": []any{coding()}}
					default:
						c["dataAbsentReason"] = map[string]any{"coding": []any{coding()}}
					}
					comps = append(comps, c)
				}
				obs["component"] = comps
			}
			if rng.IntN(8) == 0 {
				obs["dataAbsentReason"] = map[string]any{"coding": []any{coding()}}
			}
			if _, err := p.write("Observation", fmt.Sprintf("o%d", i), obs, nil); err != nil {
				return err
			}
		}
		for i := range n / 4 {
			c := resource{"resourceType": "Condition", "subject": ref("Patient", rng.IntN(12)),
				"code": map[string]any{"coding": []any{coding()}}}
			switch rng.IntN(3) {
			case 0:
				c["onsetPeriod"] = period()
			case 1:
				c["onsetDateTime"] = date()
			}
			if rng.IntN(2) == 0 {
				c["recordedDate"] = date()
			}
			if _, err := p.write("Condition", fmt.Sprintf("c%d", i), c, nil); err != nil {
				return err
			}
			ra := resource{"resourceType": "RiskAssessment", "status": "final", "subject": ref("Patient", rng.IntN(12))}
			if rng.IntN(2) == 0 {
				ra["prediction"] = []any{map[string]any{"probabilityDecimal": num()}}
			} else {
				ra["prediction"] = []any{map[string]any{"probabilityRange": map[string]any{"low": map[string]any{"value": num()}, "high": map[string]any{"value": num()}}}}
			}
			if _, err := p.write("RiskAssessment", fmt.Sprintf("r%d", i), ra, nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// ixQueries generates searches over ixData's resources.
func ixQueries(rng *rand.Rand, n int) []struct{ typ, query string } {
	pick := func(xs []string) string { return xs[rng.IntN(len(xs))] }
	one := map[string][]func() string{
		"Observation": {
			func() string { return "code=" + pick(ixCodes) },
			func() string { return "code=" + pick(ixSystems) + "|" + pick(ixCodes) },
			func() string { return "code=|" + pick(ixCodes) },
			func() string { return "code=" + pick(ixSystems) + "|" },
			func() string { return "code:not=" + pick(ixCodes) },
			func() string { return "code:text=blood" },
			func() string { return "code=" + pick(ixCodes) + "," + pick(ixCodes) },
			func() string { return "status=" + pick([]string{"final", "amended", "final,amended"}) },
			func() string { return "subject=Patient/p" + fmt.Sprint(rng.IntN(13)) },
			func() string { return "subject=p" + fmt.Sprint(rng.IntN(13)) },
			func() string { return "patient=p" + fmt.Sprint(rng.IntN(13)) },
			func() string { return "subject:Patient=p" + fmt.Sprint(rng.IntN(13)) },
			func() string { return "subject=http://other.example/fhir/Patient/p" + fmt.Sprint(rng.IntN(13)) },
			func() string {
				return "subject=" + url.QueryEscape(fmt.Sprintf("urn:uuid:0000000%d-0000-4000-8000-000000000000", rng.IntN(12)))
			},
			func() string { return "performer:identifier=" + pick(ixSystems) + "|doc" + fmt.Sprint(rng.IntN(3)) },
			func() string { return "date=" + pick(ixPrefixes) + url.QueryEscape(pick(ixDates)) },
			func() string {
				return "date=" + pick(ixPrefixes) + pick(ixDates) + "&date=" + pick(ixPrefixes) + pick(ixDates)
			},
			func() string { return "date:missing=" + pick([]string{"true", "false"}) },
			func() string { return "value-quantity=" + pick(ixPrefixes) + pick(ixNumbers) },
			func() string {
				return "value-quantity=" + pick(ixPrefixes) + pick(ixNumbers) + "|http://unitsofmeasure.org|" + pick([]string{"mg/dL", "mmol/L"})
			},
			func() string { return "value-quantity=" + pick(ixPrefixes) + pick(ixNumbers) + "||mg/dL" },
			func() string { return "value-string=" + url.QueryEscape(pick(ixNames)[:3]) },
			func() string { return "value-string:exact=" + url.QueryEscape(pick(ixNames)) },
			func() string { return "value-string:contains=" + url.QueryEscape("er") },
			func() string { return "value-string=" + url.QueryEscape(strings.Repeat("verylongname", 15)) },
			func() string {
				return "_lastUpdated=" + pick(ixPrefixes) + "2024-03-01T10:00:0" + fmt.Sprint(rng.IntN(10)) + "Z"
			},
			func() string { return "_id=o" + fmt.Sprint(rng.IntN(40)) + ",o" + fmt.Sprint(rng.IntN(40)) },
			func() string { return "combo-code=" + pick(ixCodes) },
			// Unions whose keys are their parts' (search.KeysOf).
			func() string { return "combo-code=" + pick(ixSystems) + "|" + pick(ixCodes) + "," + pick(ixCodes) },
			func() string { return "component-code=" + pick(ixCodes) },
			func() string { return "combo-value-quantity=" + pick(ixPrefixes) + pick(ixNumbers) },
			func() string { return "combo-value-concept=" + pick(ixCodes) },
			func() string { return "combo-data-absent-reason=" + pick(ixSystems) + "|" + pick(ixCodes) },
			func() string {
				return "combo-code=" + pick(ixCodes) + "&date=" + pick(ixPrefixes) + url.QueryEscape(pick(ixDates))
			},
			func() string { return "combo-code=" + pick(ixCodes) + "&subject=p" + fmt.Sprint(rng.IntN(13)) },
			func() string {
				return "code-value-quantity=" + pick(ixCodes) + "$" + pick(ixPrefixes) + pick(ixNumbers)
			},
			func() string {
				return "code-value-quantity=" + pick(ixSystems) + "|" + pick(ixCodes) + "$" + pick(ixPrefixes) + pick(ixNumbers) + "," +
					pick(ixCodes) + "$" + pick(ixPrefixes) + pick(ixNumbers) + "|http://unitsofmeasure.org|mg/dL"
			},
			func() string {
				return "code-value-concept=" + pick(ixCodes) + "$" + pick(ixSystems) + "|" + pick(ixCodes)
			},
			func() string {
				return "code-value-date=" + pick(ixCodes) + "$" + pick(ixPrefixes) + url.QueryEscape(pick(ixDates))
			},
			func() string { return "code-value-string=" + pick(ixCodes) + "$" + url.QueryEscape(pick(ixNames)[:3]) },
			func() string {
				return "combo-code-value-quantity=" + pick(ixCodes) + "$" + pick(ixPrefixes) + pick(ixNumbers)
			},
			func() string { return "value-concept=" + pick(ixCodes) },
			func() string { return "value-date=" + pick(ixPrefixes) + url.QueryEscape(pick(ixDates)) },
			// Conjunctions a pair index answers, and some it must not.
			func() string {
				return "code=" + pick(ixCodes) + "&value-quantity=" + pick(ixPrefixes) + pick(ixNumbers)
			},
			func() string {
				return "code=" + pick(ixSystems) + "|" + pick(ixCodes) + "," + pick(ixCodes) + "&value-quantity=" + pick(ixPrefixes) + pick(ixNumbers)
			},
			func() string {
				return "code=" + pick(ixCodes) + "&value-concept=" + pick(ixSystems) + "|" + pick(ixCodes)
			},
			func() string {
				return "code=" + pick(ixCodes) + "&value-date=" + pick(ixPrefixes) + url.QueryEscape(pick(ixDates))
			},
			func() string { return "code=" + pick(ixCodes) + "&value-string=" + url.QueryEscape(pick(ixNames)[:3]) },
			func() string {
				return "code:not=" + pick(ixCodes) + "&value-quantity=" + pick(ixPrefixes) + pick(ixNumbers)
			},
			func() string { return "code:missing=false&value-quantity:missing=false" },
		},
		"Patient": {
			func() string { return "name=" + url.QueryEscape(strings.ToLower(pick(ixNames)[:2])) },
			func() string { return "name:exact=" + url.QueryEscape(pick(ixNames)) },
			func() string { return "name:contains=" + url.QueryEscape("ll") },
			func() string { return "family=mu" },
			func() string { return "given=" + url.QueryEscape(pick(ixNames)) },
			func() string {
				return "birthdate=" + pick(ixPrefixes) + pick([]string{"1970", "1980-05-01", "1990", "2001-01"})
			},
			func() string { return "birthdate:missing=true" },
			func() string { return "gender=" + pick([]string{"male", "female", "other,male"}) },
			func() string { return "identifier=MRN" + fmt.Sprint(rng.IntN(5)) },
			func() string { return "identifier=" + pick(ixSystems) + "|MRN" + fmt.Sprint(rng.IntN(5)) },
			func() string {
				return "identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|MRN" + fmt.Sprint(rng.IntN(5))
			},
			func() string { return "telecom=p" + fmt.Sprint(rng.IntN(4)) + "@example.org" },
			func() string { return "email=p" + fmt.Sprint(rng.IntN(4)) + "@example.org" },
			func() string { return "active=" + pick([]string{"true", "false"}) },
			func() string { return "_profile=http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient" },
			func() string { return "_profile:below=http://example.org/p/" },
			func() string { return "_profile:above=http://example.org/p/Zoë/x" },
			func() string { return "_has:Observation:patient:code=" + pick(ixCodes) },
			func() string { return "_has:Observation:subject:date=" + pick(ixPrefixes) + pick(ixDates) },
			func() string { return "_has:RiskAssessment:subject:probability=" + pick(ixPrefixes) + pick(ixNumbers) },
			func() string { return "_has:Condition:subject:code:not=" + pick(ixCodes) },
		},
		"Condition": {
			func() string { return "onset-date=" + pick(ixPrefixes) + pick(ixDates) },
			func() string { return "recorded-date=" + pick(ixPrefixes) + pick(ixDates) },
			func() string { return "code=" + pick(ixCodes) },
			func() string { return "subject=p" + fmt.Sprint(rng.IntN(12)) },
			func() string { return "subject.name=" + url.QueryEscape(strings.ToLower(pick(ixNames)[:2])) },
		},
		"RiskAssessment": {
			func() string { return "probability=" + pick(ixPrefixes) + pick(ixNumbers) },
			func() string { return "subject=p" + fmt.Sprint(rng.IntN(12)) },
		},
	}
	sorts := map[string][]string{
		"Observation":    {"", "", "-date", "date", "_lastUpdated", "-_lastUpdated", "-value-quantity", "code", "-date,code"},
		"Patient":        {"", "birthdate", "-birthdate", "name"},
		"Condition":      {"", "onset-date", "-recorded-date"},
		"RiskAssessment": {"", "-probability"},
	}
	types := []string{"Observation", "Observation", "Observation", "Patient", "Condition", "RiskAssessment"}
	var out []struct{ typ, query string }
	for range n {
		typ := pick(types)
		gens := one[typ]
		var parts []string
		for range rng.IntN(4) { // 0 to 3 filters, ANDed
			parts = append(parts, gens[rng.IntN(len(gens))]())
		}
		if s := pick(sorts[typ]); s != "" {
			parts = append(parts, "_sort="+s)
		}
		out = append(out, struct{ typ, query string }{typ, strings.Join(parts, "&")})
	}
	return out
}

// ixCompare runs every query through the index and as a scan, and fails on
// any difference. It returns how many queries the index served.
func ixCompare(t *testing.T, db *DB, queries []struct{ typ, query string }) (indexed, vouched, hits int) {
	t.Helper()
	e := newSearchEngine()
	for _, q := range queries {
		params, err := url.ParseQuery(q.query)
		if err != nil {
			t.Fatalf("%s?%s: %v", q.typ, q.query, err)
		}
		plan, err := e.plan(q.typ, params, false)
		if err != nil {
			continue // an invalid generated value (400) is the same either way
		}
		// The scan reads and evaluates every resource and sorts with
		// the query's own order (not the record headers).
		scan := *plan
		scan.orderOnly = false
		scan.orderParam = ""
		scan.lastUpdatedOrder = false
		scan.bind = func(src includeSource) (search.Bound, error) {
			b, err := plan.bind(scanOnly{src})
			return search.Bound{Match: b.Match}, err
		}
		var filters []search.IndexFilter
		_ = db.view(defaultPartitionKey, func(p *ptx) error {
			b, _ := plan.bind(partitionSource{p, nil})
			filters = b.Filters
			_, exact, _, _ := p.indexCandidates(q.typ, b.Filters)
			if b.Covered && slices.Contains(exact, true) {
				vouched++
			}
			return nil
		})
		if len(filters) > 0 || plan.orderOnly {
			indexed++
		}
		err = db.view(defaultPartitionKey, func(p *ptx) error {
			gotList, err := run(p, q.typ, plan, nil)
			if err != nil {
				return err
			}
			wantList, err := run(p, q.typ, &scan, nil)
			if err != nil {
				return err
			}
			got, want := gotList.bareAll(), wantList.bareAll()
			hits += len(want)
			if !slices.Equal(got, want) {
				t.Errorf("%s?%s: index gives %d %v, scan gives %d %v", q.typ, q.query, len(got), got, len(want), want)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s?%s: %v", q.typ, q.query, err)
		}
	}
	return indexed, vouched, hits
}

// scanOnly hides ScanIndexed: joins read every resource.
type scanOnly struct{ includeSource }

func jsonNumber(s string) any { return json.Number(s) }

// openSteppingDB opens a store in a temporary folder whose clock moves on
// by a third of a second at every reading: a few writes per second, so
// _lastUpdated keys differ and some share a second.
func openSteppingDB(t *testing.T) *DB {
	t.Helper()
	var mu sync.Mutex
	clock := time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC)
	now := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		clock = clock.Add(333 * time.Millisecond)
		return clock
	}
	db, err := Open(filepath.Join(t.TempDir(), "store.db"), &Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func TestIndexAgreesWithScan(t *testing.T) {
	t.Run("delta", func(t *testing.T) { indexAgreesWithScan(t, false) })
	// The first commit's keys placed by value (~150) merged into the
	// index, the second's (updates, ~90) kept in the delta: the
	// searches after it read both.
	t.Run("delta merged", func(t *testing.T) {
		withDeltaBound(t, 120)
		indexAgreesWithScan(t, true)
	})
}

// indexAgreesWithScan is TestIndexAgreesWithScan; merged says that the
// first commit's keys placed by value are merged into the index and the
// second's are not.
func indexAgreesWithScan(t *testing.T, merged bool) {
	db := openSteppingDB(t)
	rng := rand.New(rand.NewPCG(14, 2026))
	ixData(t, db, rng, 240)
	if _, delta, _ := deltaState(t, db); merged != (len(delta) == 0) {
		t.Fatalf("after the first commit %d keys in the delta (merged: %v)", len(delta), merged)
	}
	queries := ixQueries(rng, 700)
	indexed, vouched, hits := ixCompare(t, db, queries)
	t.Logf("%d queries, %d served by the index (%d with candidates it vouches for, not evaluated), %d hits in all", len(queries), indexed, vouched, hits)
	if indexed < len(queries)/2 || vouched < len(queries)/10 || hits < len(queries) {
		t.Fatalf("the generated queries do not exercise the index: %d of %d indexed, %d vouched, %d hits", indexed, len(queries), vouched, hits)
	}

	// Updates and deletions move and drop index entries in the same
	// transaction: rewrite half with other values, delete a quarter.
	ixData(t, db, rng, 120)
	if index, delta, _ := deltaState(t, db); len(delta) == 0 || merged != slices.ContainsFunc(index, func(k string) bool {
		return k[0] > 0 && search.ValuePlaced("Observation")[k[0]-1]
	}) {
		t.Fatalf("after the second commit %d keys in the delta (merged: %v)", len(delta), merged)
	}
	err := db.update(defaultPartitionKey, func(p *ptx) error {
		for i := 0; i < 240; i += 4 {
			prev, err := p.current("Observation", fmt.Sprintf("o%d", i))
			if err != nil {
				return err
			}
			if _, err := p.write("Observation", fmt.Sprintf("o%d", i), nil, prev); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ixCompare(t, db, queries)
}

// The candidates of a filter with few values are the same whether its
// values' keys are walked (joinValues) or the candidates looked up in id
// order (lookupSorted), or the walk gives up half-way.
func TestIndexLookupsAgree(t *testing.T) {
	db := openSteppingDB(t)
	rng := rand.New(rand.NewPCG(14, 4))
	ixData(t, db, rng, 240)
	queries := ixQueries(rng, 400)
	old := joinKeys
	t.Cleanup(func() { joinKeys = old })
	for _, budget := range []int{0, 1, 7, 1 << 30} {
		joinKeys = func(int) int { return budget }
		ixCompare(t, db, queries)
	}
}

// estimateKeys counts a value with few keys and estimates a large one
// within a factor of two, from its first keys and the candidates, whether
// the ids are random or sequential (the candidates and the value's keys
// drawn from the same ids); with very few candidates it says at least that
// the value's keys cost more to read than a lookup of each candidate. The
// ids are drawn from a seeded generator: an estimate from 8 candidates
// passed spreads by about a third, so some draws of random ids land
// beyond twice (the choice it makes has a margin of 16).
func TestEstimateKeys(t *testing.T) {
	bdb, err := bolt.Open(filepath.Join(t.TempDir(), "ix.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bdb.Close() })
	rng := rand.New(rand.NewPCG(14, 7))
	for _, idOf := range []func(i int) string{
		func(int) string { // random, as newID's, but the same in every run
			return fmt.Sprintf("%08x-%04x-4%03x-%04x-%012x", rng.Uint32(), rng.IntN(1<<16), rng.IntN(1<<12), 0x8000|rng.IntN(1<<14), rng.Uint64()&(1<<48-1))
		},
		func(i int) string { return fmt.Sprintf("obs-%07d", i) },
	} {
		ids := make([]string, 20000)
		for i := range ids {
			ids[i] = idOf(i)
		}
		for _, c := range []struct {
			keys, candidates int
			atLeast          bool // too few candidates to estimate
		}{{3, 500, false}, {15, 500, false}, {64, 500, false}, {2000, 100, false}, {12000, 1000, false}, {20000, 300, false}, {20000, 20, true}} {
			err := bdb.Update(func(tx *bolt.Tx) error {
				_ = tx.DeleteBucket([]byte("ix"))
				b, err := tx.CreateBucket([]byte("ix"))
				if err != nil {
					return err
				}
				for _, i := range rng.Perm(len(ids))[:c.keys] {
					if err := b.Put(indexKey(9, []byte("cv\x01*"), ids[i]), nil); err != nil {
						return err
					}
				}
				// A neighbour value, not counted.
				return b.Put(indexKey(9, []byte("cw\x01*"), ids[0]), nil)
			})
			if err != nil {
				t.Fatal(err)
			}
			cs := &candidates{index: newIDSet(c.candidates)}
			for _, i := range rng.Perm(len(ids))[:c.candidates] {
				cs.index.addString(ids[i])
			}
			cs.ids = cs.index.ids
			cs.n = len(cs.ids)
			cs.alive = make([]bool, cs.n)
			for i := range cs.alive {
				cs.alive[i] = true
			}
			var got int
			order := cs.inIDOrder()
			_ = bdb.View(func(tx *bolt.Tx) error {
				s := &rangeScan{param: "code", lookups: []search.KeyRange{{Lo: []byte("\x09cv\x01*\x00"), Hi: []byte("\x09cv\x01*\x01")}}}
				got = s.estimateKeys(&indexView{b: tx.Bucket([]byte("ix"))}, cs, order)
				return nil
			})
			switch {
			case c.atLeast:
				// The keys read pass too few candidates: what they
				// passed says that the value has more keys than a
				// lookup of each candidate costs.
				if got < joinKeys(c.candidates) {
					t.Errorf("%s…: %d keys, %d candidates: estimated %d, fewer than %d", ids[0][:4], c.keys, c.candidates, got, joinKeys(c.candidates))
				}
			case c.keys < 16 && got != c.keys || got < c.keys/2 || got > 2*c.keys:
				t.Errorf("%s…: %d keys, %d candidates: estimated %d", ids[0][:4], c.keys, c.candidates, got)
			}
		}
	}
}

// An existing database without indexes (or with another index version)
// is indexed once at Open, with progress in the log.
func TestIndexBuiltOnOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	db, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	ixData(t, db, rng, 600)
	queries := ixQueries(rng, 30)
	// Make it a database of the version before indexes.
	err = db.bolt.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(partitionBucketName(defaultPartitionKey))
		if err := b.DeleteBucket(bucketIndex); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Delete(metaIndexVersion)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	var logs []string
	logf := func(f string, a ...any) { logs = append(logs, fmt.Sprintf(f, a...)) }
	defer func(n int) { indexBatch = n }(indexBatch)
	indexBatch = 100
	db, err = Open(path, &Options{Logf: logf})
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(logs, "\n")
	for _, want := range []string{"building search indexes of 912 resources", "indexed 100 of 912 resources (partition DEFAULT, Condition)", "indexed 250 of 912", "indexed 912 of 912", "search indexes built"} {
		if !strings.Contains(joined, want) {
			t.Errorf("log lacks %q:\n%s", want, joined)
		}
	}
	if indexed, _, _ := ixCompare(t, db, queries); indexed == 0 {
		t.Error("no query used the rebuilt index")
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	logs = nil
	db, err = Open(path, &Options{Logf: logf})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if len(logs) != 0 {
		t.Errorf("a second Open indexed again: %v", logs)
	}
}

// _revinclude reads its sources through the index (one filter per
// reference parameter): it includes exactly what reading every resource
// of the source types includes, with references written relative,
// absolute, versioned and as urn:uuid.
func TestRevIncludeThroughIndex(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "store.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	ixData(t, db, rand.New(rand.NewPCG(14, 7)), 200)
	e := newSearchEngine()
	total := 0
	for _, q := range []string{
		"_revinclude=Observation:subject", "_revinclude=Observation:patient", "_revinclude=Observation:subject:Patient",
		"_revinclude=*", "_revinclude=Condition:subject&_revinclude:iterate=Observation:subject",
		"_revinclude=RiskAssessment:*", "gender=male&_revinclude=Condition:patient",
	} {
		params, _ := url.ParseQuery(q)
		plan, err := e.plan("Patient", params, true)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		err = db.view(defaultPartitionKey, func(p *ptx) error {
			ids, err := run(p, "Patient", plan, nil)
			if err != nil {
				return err
			}
			var page []map[string]any
			for _, id := range ids.bareAll() {
				res, err := decodeForSearch(p.currentBody("Patient", id))
				if err != nil {
					return err
				}
				page = append(page, res)
			}
			got, err := plan.include(page, partitionSource{p, nil})
			if err != nil {
				return err
			}
			want, err := plan.include(page, scanOnly{partitionSource{p, nil}})
			if err != nil {
				return err
			}
			refs := func(list []map[string]any) []string {
				var out []string
				for _, r := range list {
					out = append(out, refOf(r))
				}
				slices.Sort(out)
				return out
			}
			if g, w := refs(got), refs(want); !slices.Equal(g, w) {
				t.Errorf("%s: through the index %d %v, reading everything %d %v", q, len(g), g, len(w), w)
			}
			total += len(want)
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if total < 100 {
		t.Errorf("only %d resources included in all", total)
	}
}

// A compartment search without filters takes its candidates from the
// index (the compartment's reference parameters pointing at the patient):
// for every Synthea patient and every type of its compartment, the same
// ids as reading every resource of the type, with the other patients'
// resources in the same partition.
func TestCompartmentThroughIndex(t *testing.T) {
	s := newTestServer(t)
	var patients []string
	for _, f := range testkit.SyntheaPaths(t) {
		src, ids := loadSynthea(t, s, f, "DEFAULT")
		patients = append(patients, strings.TrimPrefix(ids[patientOf(t, src)], "Patient/"))
	}
	types := []string{"Patient", "Observation", "Encounter", "Condition", "Claim", "ExplanationOfBenefit", "Immunization", "Procedure", "DiagnosticReport", "MedicationRequest", "CarePlan", "Organization"}
	e := newSearchEngine()
	total := 0
	for _, id := range patients {
		for _, typ := range types {
			for _, q := range []string{"", "_sort=-_lastUpdated"} {
				params, _ := url.ParseQuery(q)
				plan, err := e.plan(typ, params, true)
				if err != nil {
					t.Fatal(err)
				}
				within := inPatientCompartment(id)
				plan.orderOnly = false // as searchWithin does
				bind := plan.bind
				plan.bind = func(src includeSource) (search.Bound, error) {
					b, err := bind(src)
					match := b.Match
					b.Match = func(res map[string]any) bool { return within(res) && match(res) }
					b.Covered = false
					return b, err
				}
				scan := *plan
				scan.orderParam = "" // sorted by decoding each
				plan.around = patientCompartmentFilters(typ, id)
				err = s.db.view(defaultPartitionKey, func(p *ptx) error {
					gotList, err := run(p, typ, plan, nil)
					if err != nil {
						return err
					}
					wantList, err := run(p, typ, &scan, nil)
					if err != nil {
						return err
					}
					got, want := gotList.bareAll(), wantList.bareAll()
					if !slices.Equal(got, want) {
						t.Errorf("Patient/%s/%s?%s: through the index %d, reading every resource %d", id, typ, q, len(got), len(want))
					}
					total += len(want)
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if total < 500 {
		t.Errorf("only %d compartment matches in all", total)
	}
}

// A _lastUpdated filter the index neither reads to the end nor can look
// up by value is checked on the record header (its keys as the write made
// them): a narrow window beside a wide bound gives what a scan gives.
func TestLastUpdatedFromHeader(t *testing.T) {
	clock := time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC)
	db, err := Open(filepath.Join(t.TempDir(), "store.db"), &Options{Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	var at []time.Time
	for i := range 600 {
		clock = clock.Add(time.Duration(1+i%3) * 333 * time.Millisecond)
		at = append(at, clock)
		err := db.update(defaultPartitionKey, func(p *ptx) error {
			_, err := p.write("Observation", fmt.Sprintf("o%03d", i), resource{"resourceType": "Observation", "status": "final",
				"code": map[string]any{"text": "x"}}, nil)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	iso := func(t time.Time) string { return url.QueryEscape(t.Format("2006-01-02T15:04:05.000Z07:00")) }
	var queries []struct{ typ, query string }
	for _, n := range []int{1, 2, 5, 9} {
		last := at[len(at)-n]
		for _, q := range []string{
			"_lastUpdated=gt" + iso(last.Add(-time.Millisecond)) + "&_lastUpdated=lt" + iso(at[len(at)-1].Add(time.Second)),
			"_lastUpdated=ge" + iso(last) + "&_lastUpdated=le" + iso(at[len(at)-2]),
			"_lastUpdated=sa" + iso(at[n]) + "&_lastUpdated=eb" + iso(at[n+3]) + "&status=final",
			"_lastUpdated=gt" + url.QueryEscape(last.Format("2006-01-02T15:04:05Z")) + "&_lastUpdated=ne2024",
		} {
			queries = append(queries, struct{ typ, query string }{"Observation", q})
		}
	}
	_, vouched, hits := ixCompare(t, db, queries)
	if vouched == 0 || hits == 0 {
		t.Errorf("%d searches vouched for, %d hits", vouched, hits)
	}
}

// TestTransactionReadsItsOwnIndexChanges: a transaction's index changes
// are written when it commits (ptx.flushIndex), so a search inside the
// same transaction must still see them: the GET entries of a transaction
// run after its writes, and find what the writes created, changed and
// deleted through the indexes.
func TestTransactionReadsItsOwnIndexChanges(t *testing.T) {
	s := newTestServer(t)
	s.createPartition(1)
	obs := func(id, code string) map[string]any {
		return map[string]any{"resourceType": "Observation", "id": id, "status": "final",
			"code": map[string]any{"coding": []any{map[string]any{"system": "http://loinc.org", "code": code}}}}
	}
	put := func(id, code string) map[string]any {
		return map[string]any{"resource": obs(id, code), "request": map[string]any{"method": "PUT", "url": "Observation/" + id}}
	}
	s.must(200, "POST", "/fhir", "1", map[string]any{"resourceType": "Bundle", "type": "transaction",
		"entry": []any{put("a", "1111-1"), put("b", "1111-1")}})
	r := s.must(200, "POST", "/fhir", "1", map[string]any{"resourceType": "Bundle", "type": "transaction",
		"entry": []any{
			put("a", "2222-2"), // changed: leaves 1111-1
			put("c", "1111-1"), // new
			map[string]any{"request": map[string]any{"method": "DELETE", "url": "Observation/b"}},
			map[string]any{"request": map[string]any{"method": "GET", "url": "Observation?code=1111-1"}},
			map[string]any{"request": map[string]any{"method": "GET", "url": "Observation?code=2222-2"}},
		}}).JSON(t)
	entries := r["entry"].([]any)
	for i, want := range map[int]string{3: "c", 4: "a"} {
		found := entries[i].(map[string]any)["resource"].(map[string]any)
		var ids []string
		es, _ := found["entry"].([]any)
		for _, e := range es {
			ids = append(ids, str(e, "resource", "id"))
		}
		if len(ids) != 1 || ids[0] != want {
			t.Errorf("entry %d: found %v, want [%s]", i, ids, want)
		}
	}
}

// The index keys of a transaction's writes are computed on other
// goroutines (keyWork) and folded in the order of the writes: the last
// change of a key wins whichever goroutine computed it; more jobs than
// the queue holds are computed by the transaction itself; a panic of a
// computation comes back to the transaction; stop leaves no worker.
func TestKeyWorkFoldsInOrder(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	body := func(code string) []byte {
		return []byte(`{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"` + code + `"}]}}`)
	}
	key := func(code string) string {
		for _, e := range entriesOf("Observation", body(code)) {
			if e.tag == 0 {
				t.Fatal("unreadable")
			}
			if k := string(e.key); strings.Contains(k, code) {
				return string(indexKey(e.tag, e.key, "x"))
			}
		}
		t.Fatalf("no key of code %s", code)
		return ""
	}
	p := &ptx{}
	n := 3 * keyQueue
	// Resource x is written n times, each with the code of the time
	// before as its old version: only the last code is left.
	for i := range n {
		var old []byte
		if i > 0 {
			old = body(fmt.Sprint(i - 1))
		}
		code := fmt.Sprint(i)
		if err := p.reindexEntries("Observation", "x", old, func() []indexEntry { return entriesOf("Observation", body(code)) }); err != nil {
			t.Fatal(err)
		}
	}
	p.foldKeys()
	m := p.pending["Observation"]
	for i := range n {
		present, ok := m[key(fmt.Sprint(i))]
		if !ok || present != (i == n-1) {
			t.Fatalf("code %d: present %v (known %v), want %v", i, present, ok, i == n-1)
		}
	}

	w := &keyWork{}
	for range 10 {
		w.add(&keyJob{typ: "Observation", id: "y", entries: func() []indexEntry { return nil }})
	}
	w.add(&keyJob{typ: "Observation", id: "z", entries: func() []indexEntry { panic("boom") }})
	w.stop() // as update does when a transaction fails
	if w.queue != nil {
		t.Fatal("the queue is still open after stop")
	}
	defer func() {
		if r := recover(); r != "boom" {
			t.Fatalf("finish panicked with %v, want boom", r)
		}
	}()
	w.finish()
	t.Fatal("finish did not re-raise the computation's panic")
}

// A transaction that creates resources folds their keys without a set
// (ptx.added) until it changes one of them again: updating and deleting
// resources it created, in transactions small enough for the index log
// and too large for it, leaves the index holding exactly the keys of the
// current resources.
func TestIndexAfterCreateThenChange(t *testing.T) {
	for _, n := range []int{5, maxLogCommit} {
		db := openSteppingDB(t)
		obs := func(code string) resource {
			return resource{"resourceType": "Observation", "status": "final",
				"code": map[string]any{"coding": []any{map[string]any{"system": "http://loinc.org", "code": code}}}}
		}
		err := db.update(defaultPartitionKey, func(p *ptx) error {
			recs := map[string]*record{}
			for i := range n {
				id := fmt.Sprint("o", i)
				rec, err := p.write("Observation", id, obs("1-1"), nil)
				if err != nil {
					return err
				}
				recs[id] = rec
			}
			if _, err := p.write("Observation", "o1", obs("2-2"), recs["o1"]); err != nil {
				return err
			}
			if _, err := p.write("Observation", "o2", nil, recs["o2"]); err != nil {
				return err
			}
			_, err := p.write("Observation", "new", obs("3-3"), nil)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		err = db.view(defaultPartitionKey, func(p *ptx) error {
			want := map[string]bool{}
			if err := p.scanCurrent("Observation", func(id string, raw []byte) error {
				for _, k := range entryKeys(entriesOf("Observation", raw), id) {
					want[k] = true
				}
				return nil
			}); err != nil {
				return err
			}
			ix, err := p.indexBucket("Observation")
			if err != nil {
				return err
			}
			got := map[string]bool{}
			c := ix.cursor()
			for k := c.Seek(nil); k != nil; k = c.Next() {
				got[string(k)] = true
			}
			if !maps.Equal(got, want) {
				t.Errorf("n=%d: the index holds %d keys, the resources %d", n, len(got), len(want))
				for k := range got {
					if !want[k] {
						t.Errorf("n=%d: stale key %q", n, k)
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// A pair index (search.IndexFilters' filter of a composite parameter)
// holds every resource that matches: read alone, its candidates include
// each match a scan finds, for the composite searches and for the
// conjunctions of their components' parameters, before and after the
// data changes (the index log's and the index's keys).
func TestPairIndexHoldsEveryMatch(t *testing.T) {
	db := openSteppingDB(t)
	rng := rand.New(rand.NewPCG(14, 3))
	ixData(t, db, rng, 300)
	var queries []string
	for _, code := range ixCodes {
		for _, pre := range ixPrefixes {
			n := ixNumbers[rng.IntN(len(ixNumbers))]
			d := url.QueryEscape(ixDates[rng.IntN(len(ixDates))])
			queries = append(queries,
				"code="+code+"&value-quantity="+pre+n,
				"code=http://loinc.org|"+code+"&value-quantity="+pre+n+"|http://unitsofmeasure.org|mg/dL",
				"code-value-quantity="+code+"$"+pre+n,
				"code="+code+"&value-date="+pre+d,
				"code-value-date="+code+"$"+pre+d)
		}
		queries = append(queries,
			"code="+code+"&value-concept="+ixCodes[rng.IntN(len(ixCodes))],
			"code-value-concept="+code+"$http://snomed.info/sct|"+ixCodes[rng.IntN(len(ixCodes))],
			"code="+code+"&value-string=m",
			"code-value-string="+code+"$m")
	}
	e := newSearchEngine()
	check := func() {
		paired, hits := 0, 0
		for _, query := range queries {
			params, err := url.ParseQuery(query)
			if err != nil {
				t.Fatal(err)
			}
			plan, err := e.plan("Observation", params, false)
			if err != nil {
				continue // an unindexable value ("ap")
			}
			err = db.view(defaultPartitionKey, func(p *ptx) error {
				b, err := plan.bind(partitionSource{p, nil})
				if err != nil {
					return err
				}
				scan := *plan
				scan.bind = func(src includeSource) (search.Bound, error) {
					b, err := plan.bind(scanOnly{src})
					return search.Bound{Match: b.Match}, err
				}
				list, err := run(p, "Observation", &scan, nil)
				if err != nil {
					return err
				}
				for _, f := range b.Filters {
					if !strings.Contains(f.Param, "-value-") {
						continue
					}
					paired++
					ids, _, ok, err := p.indexCandidates("Observation", []search.IndexFilter{f})
					if err != nil || !ok {
						return fmt.Errorf("pair filter %s not read: %v", f.Param, err)
					}
					for _, id := range list.bareAll() {
						hits++
						if _, found := slices.BinarySearch(ids, id); !found {
							t.Errorf("%s: %s matches, not among the %d candidates of %s", query, id, len(ids), f.Param)
						}
					}
				}
				return nil
			})
			if err != nil {
				t.Fatalf("%s: %v", query, err)
			}
		}
		if paired < len(queries)*3/4 || hits < len(queries) {
			t.Fatalf("%d of %d queries with a pair filter, %d matches checked", paired, len(queries), hits)
		}
	}
	check()
	// Single writes: their keys wait in the index log.
	for i := range 40 {
		err := db.update(defaultPartitionKey, func(p *ptx) error {
			other, err := p.current("Observation", fmt.Sprintf("o%d", 299-i))
			if err != nil {
				return err
			}
			prev, err := p.current("Observation", fmt.Sprintf("o%d", i))
			if err != nil {
				return err
			}
			var body resource
			if err := json.Unmarshal(other.Body, &body); err != nil {
				return err
			}
			_, err = p.write("Observation", fmt.Sprintf("o%d", i), body, prev)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	_ = db.view(defaultPartitionKey, func(p *ptx) error {
		if p.part.Bucket(bucketIndexLog) == nil {
			t.Error("no index log")
		}
		return nil
	})
	check()
}

// A database indexed by a store before pair keys (another index version:
// its indexes lack the composites' keys) is indexed again once at Open,
// with progress in the log; its pair indexes then answer searches.
func TestIndexRebuiltForPairKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	db, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 3))
	ixData(t, db, rng, 200)
	// What the previous version wrote: no key of a composite.
	err = db.bolt.Update(func(tx *bolt.Tx) error {
		ib := tx.Bucket(partitionBucketName(defaultPartitionKey)).Bucket(bucketIndex).Bucket([]byte("Observation"))
		for _, code := range []string{"code-value-concept", "code-value-date", "code-value-quantity", "code-value-string"} {
			tag, ok := search.IndexTag("Observation", code)
			if !ok {
				return fmt.Errorf("%s not indexed", code)
			}
			c := ib.Cursor()
			for k, _ := c.Seek([]byte{tag}); k != nil && k[0] == tag; k, _ = c.Seek([]byte{tag}) {
				if err := ib.Delete(k); err != nil {
					return err
				}
			}
		}
		return tx.Bucket(bucketMeta).Put(metaIndexVersion, []byte("3-00000000+"+indexLayout))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, joined := openLogged(t, path)
	defer db.Close()
	for _, want := range []string{"building search indexes of", "for index version " + indexVersion(), "search indexes built"} {
		if !strings.Contains(joined, want) {
			t.Errorf("log lacks %q:\n%s", want, joined)
		}
	}
	var queries []struct{ typ, query string }
	for _, code := range ixCodes {
		queries = append(queries,
			struct{ typ, query string }{"Observation", "code-value-quantity=" + code + "$gt1"},
			struct{ typ, query string }{"Observation", "code=" + code + "&value-quantity=lt6"})
	}
	if _, _, hits := ixCompare(t, db, queries); hits == 0 {
		t.Error("no pair search found anything")
	}
}

// openLogged opens the store at path and returns it with what Open logged,
// one line per message.
func openLogged(t *testing.T, path string) (*DB, string) {
	t.Helper()
	var logs []string
	db, err := Open(path, &Options{Logf: func(f string, a ...any) { logs = append(logs, fmt.Sprintf(f, a...)) }})
	if err != nil {
		t.Fatal(err)
	}
	return db, strings.Join(logs, "\n")
}
