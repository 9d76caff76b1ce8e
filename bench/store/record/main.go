// Command record measures the embedded store on one large record: a
// person's PFR holding n generated device Observations (a glucose sensor,
// a heart-rate watch, steps, weight, blood pressure; several years) beside
// their Synthea history, and the five other Synthea patients each in their
// own partition. The same searches and writes run first with the search
// indexes off (store.Options.NoIndexes: every search reads every resource
// of its type, as before the indexes) and then with them, in one run, and
// the table gives p50 and p99 of each.
//
//	go run ./bench/store/record [-n 100000] [-runs 30] [-scanruns 3] [-writes 100]
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/hapitest"
	"github.com/pfrgateway/caddy-pfr/store"
)

type options struct {
	n, runs, scanRuns, writes, bulk int
	synthea, cpuProfile             string
	hapiN, hapiParallel             int
	dbDir, writeProfile             string
	writesOnly                      bool
	only                            string
	hapiJVM                         string
	hapiWarmup                      int
}

func main() {
	var o options
	flag.IntVar(&o.n, "n", 100000, "generated Observations in the large record")
	flag.IntVar(&o.runs, "runs", 30, "measured runs of each search with indexes")
	flag.IntVar(&o.scanRuns, "scanruns", 3, "measured runs of each search without indexes (each reads the whole record); 0 measures with indexes only")
	flag.IntVar(&o.writes, "writes", 100, "single-Observation writes measured per mode")
	flag.IntVar(&o.bulk, "bulk", 5000, "Observations written in transactions of 1000 per mode")
	flag.StringVar(&o.synthea, "synthea", "testdata/fhir/synthea", "directory of the six Synthea transaction Bundles")
	flag.IntVar(&o.hapiN, "hapi", 0, "also load the first Synthea patient and this many generated Observations into HAPI FHIR JPA (test/hapi, started here) and run the same searches there; 0: no HAPI")
	flag.IntVar(&o.hapiParallel, "hapi-parallel", 2, "transactions of 1000 Observations sent to HAPI at once while loading")
	flag.StringVar(&o.hapiJVM, "hapi-jvm", "-Xmx4g -XX:+UseParallelGC", "JVM options of HAPI (the tests' server has a 768 MB heap and the quick compiler only: too small for 100 000 Observations and slower than a deployment)")
	flag.IntVar(&o.hapiWarmup, "hapi-warmup", 5, "runs of each search on HAPI before the measured ones (its JIT compiler at work)")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the measured searches and writes with indexes to this file")
	flag.StringVar(&o.dbDir, "db", "", "keep the loaded record (without and with indexes) in this directory and reuse it in later runs (a changed index layout is rebuilt at Open, timed, and the rebuilt file kept); the measured writes go to copies")
	flag.BoolVar(&o.writesOnly, "writesonly", false, "measure the writes only (no searches, no HAPI)")
	flag.StringVar(&o.only, "only", "", "measure only the searches whose name contains this text (e.g. value-quantity), to profile one")
	flag.StringVar(&o.writeProfile, "writeprofile", "", "write a CPU profile (PREFIX.cpu) and an allocation profile (PREFIX.alloc) of the measured writes of both modes")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "record:", err)
		os.Exit(1)
	}
}

// server is the store's handler on one database file.
type server struct {
	db *store.DB
	h  http.Handler
	// worked is true when Open reported long work (store.Options.Logf:
	// building the indexes of another version).
	worked bool
}

func open(path string, noIndexes bool) (*server, time.Duration, error) {
	start := time.Now()
	worked := false
	db, err := store.Open(path, &store.Options{NoIndexes: noIndexes, Logf: func(f string, a ...any) {
		worked = true
		fmt.Fprintf(os.Stderr, f+"\n", a...)
	}})
	if err != nil {
		return nil, 0, err
	}
	took := time.Since(start)
	h, err := store.NewHandler(db, store.Config{})
	if err != nil {
		return nil, 0, err
	}
	return &server{db, h, worked}, took, nil
}

// do sends one request and checks the status.
func (s *server) do(want int, method, target, partition string, body []byte) ([]byte, error) {
	rec, err := s.doRec(want, method, target, partition, body)
	if err != nil {
		return nil, err
	}
	return rec.Body.Bytes(), nil
}

func (s *server) doRec(want int, method, target, partition string, body []byte) (*httptest.ResponseRecorder, error) {
	req := httptest.NewRequest(method, target, bytes.NewReader(body))
	req.Header.Set("X-Request-Partition-IDs", partition)
	if body != nil {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	rec := httptest.NewRecorder()
	s.h.ServeHTTP(rec, req)
	if rec.Code != want {
		return nil, fmt.Errorf("%s %s: %d: %.300s", method, target, rec.Code, rec.Body.String())
	}
	return rec, nil
}

// measure runs fn n times and returns the durations.
func measure(n int, fn func(i int) error) ([]time.Duration, error) {
	var out []time.Duration
	for i := range n {
		start := time.Now()
		if err := fn(i); err != nil {
			return nil, err
		}
		out = append(out, time.Since(start))
	}
	return out, nil
}

func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0 // nothing measured (-writes 0)
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p)
	return s[i]
}

func mean(ds []time.Duration) time.Duration {
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return sum / time.Duration(max(len(ds), 1))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d.Microseconds())/1000) }

// kinds of generated Observation: a code, its share, and how its value looks.
var kinds = []struct {
	code, display, unit string
	share               float64
	mean, spread        float64
	category            string
}{
	{"2339-0", "Glucose [Mass/volume] in Blood", "mg/dL", 0.60, 115, 40, "laboratory"},
	{"8867-4", "Heart rate", "/min", 0.25, 72, 15, "vital-signs"},
	{"55423-8", "Number of steps", "{steps}", 0.10, 600, 400, "activity"},
	{"29463-7", "Body weight", "kg", 0.03, 81, 3, "vital-signs"},
	{"85354-9", "Blood pressure panel", "", 0.02, 0, 0, "vital-signs"},
}

// observations returns n Observations of patient, one every span/n from
// start, as transaction Bundles of 1000 entries.
func observations(rng *rand.Rand, patient string, n int, start time.Time, span time.Duration) [][]byte {
	return observationsOf(rng, patient, "", n, start, span)
}

// observationsOf is observations of one code only ("" for the mix).
func observationsOf(rng *rand.Rand, patient, only string, n int, start time.Time, span time.Duration) [][]byte {
	if n <= 0 {
		return nil // -writes 0 or -bulk 0: nothing to write
	}
	var out [][]byte
	var entries []any
	step := span / time.Duration(n)
	for i := range n {
		at := start.Add(time.Duration(i)*step + time.Duration(rng.IntN(60))*time.Second)
		r := rng.Float64()
		k := kinds[len(kinds)-1]
		for _, kk := range kinds {
			if only == kk.code || only == "" && r < kk.share {
				k = kk
				break
			}
			r -= kk.share
		}
		obs := map[string]any{
			"resourceType": "Observation", "status": "final",
			"category":          []any{map[string]any{"coding": []any{map[string]any{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": k.category}}}},
			"code":              map[string]any{"coding": []any{map[string]any{"system": "http://loinc.org", "code": k.code, "display": k.display}}, "text": k.display},
			"subject":           map[string]any{"reference": "Patient/" + patient},
			"effectiveDateTime": at.Format(time.RFC3339),
			"device":            map[string]any{"display": "sensor"},
		}
		if k.code == "85354-9" {
			obs["component"] = []any{
				map[string]any{"code": map[string]any{"coding": []any{map[string]any{"system": "http://loinc.org", "code": "8480-6"}}},
					"valueQuantity": quantity(120+rng.NormFloat64()*12, "mm[Hg]")},
				map[string]any{"code": map[string]any{"coding": []any{map[string]any{"system": "http://loinc.org", "code": "8462-4"}}},
					"valueQuantity": quantity(78+rng.NormFloat64()*8, "mm[Hg]")},
			}
		} else {
			obs["valueQuantity"] = quantity(max(0, k.mean+rng.NormFloat64()*k.spread), k.unit)
		}
		entries = append(entries, map[string]any{"resource": obs, "request": map[string]any{"method": "POST", "url": "Observation"}})
		if len(entries) == 1000 || i == n-1 {
			raw, _ := json.Marshal(map[string]any{"resourceType": "Bundle", "type": "transaction", "entry": entries})
			out = append(out, raw)
			entries = nil
		}
	}
	return out
}

func quantity(v float64, unit string) map[string]any {
	return map[string]any{"value": json.Number(fmt.Sprintf("%.1f", v)), "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}
}

type query struct{ name, partition, target string }

// searches are the measured searches on the large record of patient
// (family name family), whose generated Observations end at end and
// whose last 1000 were written between lastBatch and afterLastBatch.
func searches(patient, family string, end, lastBatch, afterLastBatch time.Time) []query {
	day := end.Add(-24 * time.Hour).Format("2006-01-02T15:04:05Z")
	month := end.AddDate(0, -1, 0).Format("2006-01-02")
	return []query{
		{"Observation?patient=…&code=2339-0&date=ge{last day}&_count=50", "1", "/fhir/Observation?patient=Patient/" + patient + "&code=http://loinc.org|2339-0&date=ge" + day + "&_count=50"},
		{"Observation?patient=…&code=29463-7&date=ge{last month}&_count=50", "1", "/fhir/Observation?patient=" + patient + "&code=29463-7&date=ge" + month + "&_count=50"},
		{"Observation?code=2339-0&value-quantity=gt250&_count=50", "1", "/fhir/Observation?code=2339-0&value-quantity=gt250&_count=50"},
		{"Observation?code-value-quantity=http://loinc.org|2339-0$gt250&_count=50 (composite)", "1", "/fhir/Observation?code-value-quantity=" + url.QueryEscape("http://loinc.org|2339-0$gt250") + "&_count=50"},
		{"Observation?_sort=-date&_count=10", "1", "/fhir/Observation?_sort=-date&_count=10"},
		{"Observation?code=8867-4&_sort=-date&_count=10 (a quarter of the record, newest first)", "1", "/fhir/Observation?code=8867-4&_sort=-date&_count=10"},
		{"Observation?_lastUpdated=gt{before the last 1000}&_lastUpdated=lt{after}&_count=10", "1", "/fhir/Observation?_lastUpdated=gt" + url.QueryEscape(lastBatch.Format(time.RFC3339Nano)) + "&_lastUpdated=lt" + url.QueryEscape(afterLastBatch.Format(time.RFC3339Nano)) + "&_count=10"},
		{"Observation?subject:Patient.name={family}&code=85354-9&date=ge{last month}&_count=10 (chain)", "1", "/fhir/Observation?subject:Patient.name=" + url.QueryEscape(family) + "&code=85354-9&date=ge" + month + "&_count=10"},
		{"Patient?_has:Observation:patient:code=85354-9 (_has)", "1", "/fhir/Patient?_has:Observation:patient:code=85354-9"},
		{"Observation?_count=50 (a Synthea record, partition 2)", "2", "/fhir/Observation?_count=50"},
	}
}

type row struct {
	name               string
	scanP50, scanP99   time.Duration
	indexP50, indexP99 time.Duration
	matches            string
}

// prepared is what a loaded record needs to be searched again: the first
// Synthea patient, its family name, and when the last 1000 were written.
type prepared struct {
	Patient, Family           string
	LastBatch, AfterLastBatch time.Time
}

// load writes the record into a new file at path with the indexes off.
func load(o options, files []string, path string) (prepared, error) {
	var pr prepared
	s, _, err := open(path, true)
	if err != nil {
		return pr, err
	}
	defer s.db.Close()
	for i, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return pr, err
		}
		part := fmt.Sprint(i + 1)
		body := fmt.Sprintf(`{"resourceType":"Parameters","parameter":[{"name":"id","valueInteger":%d},{"name":"name","valueCode":"p%d"}]}`, i+1, i+1)
		if _, err := s.do(http.StatusOK, http.MethodPost, "/fhir/$partition-management-create-partition", "DEFAULT", []byte(body)); err != nil {
			return pr, err
		}
		resp, err := s.do(http.StatusOK, http.MethodPost, "/fhir", part, raw)
		if err != nil {
			return pr, err
		}
		if i == 0 {
			pr.Patient = firstPatient(resp)
			pr.Family = familyOf(raw)
		}
	}
	if pr.Patient == "" || pr.Family == "" {
		return pr, fmt.Errorf("no Patient in %s", files[0])
	}
	rng := rand.New(rand.NewPCG(14, 100000))
	start := recordEnd.AddDate(-3, 0, 0)
	loadStart := time.Now()
	for _, b := range observations(rng, pr.Patient, o.n, start, recordEnd.Sub(start)) {
		if _, err := s.do(http.StatusOK, http.MethodPost, "/fhir", "1", b); err != nil {
			return pr, err
		}
	}
	fmt.Fprintf(os.Stderr, "loaded %d Observations in %s\n", o.n, time.Since(loadStart).Round(time.Millisecond))
	// The last 1000 written: what _lastUpdated=gt selects.
	pr.LastBatch = time.Now().UTC()
	time.Sleep(10 * time.Millisecond)
	for _, b := range observations(rng, pr.Patient, 1000, recordEnd, time.Hour) {
		if _, err := s.do(http.StatusOK, http.MethodPost, "/fhir", "1", b); err != nil {
			return pr, err
		}
	}
	time.Sleep(10 * time.Millisecond)
	pr.AfterLastBatch = time.Now().UTC()
	return pr, nil
}

// recordEnd is when the generated Observations of the large record end.
var recordEnd = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

// copyFile copies the file at from to to.
func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// prepare gives a file holding the record without indexes at noIndex and
// the same record with indexes at index (their build timed), loading it,
// or copying both from o.dbDir when an earlier run kept them there.
func prepare(o options, files []string, noIndex, index string) (pr prepared, build time.Duration, err error) {
	cached := func(name string) string { return filepath.Join(o.dbDir, name) }
	if o.dbDir != "" {
		if raw, err := os.ReadFile(cached("record.json")); err == nil {
			if err := json.Unmarshal(raw, &pr); err != nil {
				return pr, 0, err
			}
			fmt.Fprintf(os.Stderr, "reusing the record kept in %s\n", o.dbDir)
			if err := copyFile(cached("noindex.db"), noIndex); err != nil {
				return pr, 0, err
			}
			if err := copyFile(cached("index.db"), index); err != nil {
				return pr, 0, err
			}
			// Opened once: a changed key layout is rebuilt (and timed)
			// here, and the rebuilt file kept for the next run.
			s, took, err := open(index, false)
			if err != nil {
				return pr, 0, err
			}
			if err := s.db.Close(); err != nil {
				return pr, 0, err
			}
			if s.worked {
				if err := copyFile(index, cached("index.db")); err != nil {
					return pr, 0, err
				}
				fmt.Fprintf(os.Stderr, "kept the rebuilt indexes in %s\n", o.dbDir)
			}
			return pr, took, nil
		}
	}
	if pr, err = load(o, files, noIndex); err != nil {
		return pr, 0, err
	}
	if err := copyFile(noIndex, index); err != nil {
		return pr, 0, err
	}
	s, took, err := open(index, false)
	if err != nil {
		return pr, 0, err
	}
	if err := s.db.Close(); err != nil {
		return pr, 0, err
	}
	fmt.Fprintf(os.Stderr, "indexes built at Open in %s\n", took.Round(time.Millisecond))
	if o.dbDir != "" {
		if err := os.MkdirAll(o.dbDir, 0o700); err != nil {
			return pr, 0, err
		}
		raw, _ := json.Marshal(pr)
		for _, c := range [][2]string{{noIndex, cached("noindex.db")}, {index, cached("index.db")}} {
			if err := copyFile(c[0], c[1]); err != nil {
				return pr, 0, err
			}
		}
		if err := os.WriteFile(cached("record.json"), raw, 0o600); err != nil {
			return pr, 0, err
		}
	}
	return pr, took, nil
}

func run(o options) error {
	files, err := filepath.Glob(filepath.Join(o.synthea, "*.json"))
	if err != nil || len(files) != 6 {
		return fmt.Errorf("want the six Synthea bundles in %s, found %d (%v)", o.synthea, len(files), err)
	}
	dir, err := os.MkdirTemp("", "pfr-bench-record-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	noIndexPath, indexPath := filepath.Join(dir, "noindex.db"), filepath.Join(dir, "index.db")
	pr, took, err := prepare(o, files, noIndexPath, indexPath)
	if err != nil {
		return err
	}
	patient, family, end := pr.Patient, pr.Family, recordEnd
	start := end.AddDate(-3, 0, 0)
	sNo, _, err := open(noIndexPath, true)
	if err != nil {
		return err
	}
	defer sNo.db.Close()
	sIdx, _, err := open(indexPath, false)
	if err != nil {
		return err
	}
	defer sIdx.db.Close()

	queries := searches(patient, family, end, pr.LastBatch, pr.AfterLastBatch)
	if o.writesOnly {
		queries = nil
	}
	if o.only != "" {
		queries = slices.DeleteFunc(queries, func(q query) bool { return !strings.Contains(q.name, o.only) })
	}
	rows := make([]row, len(queries))
	measureAll := func(s *server, runs int, set func(r *row, p50, p99 time.Duration)) error {
		for i, q := range queries {
			var body []byte
			ds, err := measure(runs, func(int) error {
				var err error
				body, err = s.do(http.StatusOK, http.MethodGet, q.target, q.partition, nil)
				return err
			})
			if err != nil {
				return err
			}
			rows[i].name = q.name
			set(&rows[i], pct(ds, 0.5), pct(ds, 0.99))
			total := totalOf(body)
			if rows[i].matches != "" && rows[i].matches != total {
				return fmt.Errorf("%s: %s matches without indexes, %s with", q.name, rows[i].matches, total)
			}
			rows[i].matches = total
			fmt.Fprintf(os.Stderr, "%s: p50 %s ms (%s matches)\n", q.name, ms(pct(ds, 0.5)), total)
		}
		return nil
	}
	if o.scanRuns > 0 {
		if err := measureAll(sNo, o.scanRuns, func(r *row, p50, p99 time.Duration) { r.scanP50, r.scanP99 = p50, p99 }); err != nil {
			return err
		}
	}
	if o.cpuProfile != "" {
		stop, err := startCPUProfile(o.cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	if err := measureAll(sIdx, o.runs, func(r *row, p50, p99 time.Duration) { r.indexP50, r.indexP99 = p50, p99 }); err != nil {
		return err
	}
	writeRows, err := measureWrites(o, sNo, sIdx, patient, start, end)
	if err != nil {
		return err
	}
	// The same searches again: the single writes and their deletions are
	// now in partition 1's index log, which every search reads over the
	// index.
	after := make([]time.Duration, len(queries))
	for i, q := range queries {
		var body []byte
		ds, err := measure(o.runs, func(int) error {
			var err error
			body, err = sIdx.do(http.StatusOK, http.MethodGet, q.target, q.partition, nil)
			return err
		})
		if err != nil {
			return err
		}
		if total := totalOf(body); total != rows[i].matches {
			return fmt.Errorf("%s: %s matches before the writes, %s after", q.name, rows[i].matches, total)
		}
		after[i] = pct(ds, 0.5)
	}

	fmt.Printf("Large record: %d generated Observations + a Synthea history in partition 1, five Synthea patients in partitions 2-6; indexes built at Open in %s.\n\n", o.n, took.Round(time.Millisecond))
	fmt.Println("| request | matches | no index p50 / p99 ms | index p50 / p99 ms | ratio p50 |")
	fmt.Println("|---|---|---|---|---|")
	for _, r := range rows {
		fmt.Printf("| `%s` | %s | %s / %s | %s / %s | %.0f× |\n", r.name, r.matches, ms(r.scanP50), ms(r.scanP99), ms(r.indexP50), ms(r.indexP99), float64(r.scanP50)/float64(max(r.indexP50, 1)))
	}
	for _, r := range writeRows {
		fmt.Printf("| %s | | %s / %s | %s / %s | %.2f× slower |\n", r.name, ms(r.scanP50), ms(r.scanP99), ms(r.indexP50), ms(r.indexP99), float64(r.indexP50)/float64(max(r.scanP50, 1)))
	}
	fmt.Printf("\nruns: %d per search without indexes, %d with; %d single writes and %d Observations in transactions per mode, the two modes alternating (two files open at once).\n", o.scanRuns, o.runs, o.writes, o.bulk)
	fmt.Printf("write ratio (index / no index, p50): single POST %.2f×, transaction of 1000 %.2f×\n",
		float64(writeRows[0].indexP50)/float64(max(writeRows[0].scanP50, 1)), float64(writeRows[1].indexP50)/float64(max(writeRows[1].scanP50, 1)))
	if len(queries) > 0 {
		fmt.Println("\nThe indexed searches again after the writes (their changes in the store's index log), p50 ms before → after:")
		for i, r := range rows {
			fmt.Printf("- `%s`: %s → %s\n", r.name, ms(r.indexP50), ms(after[i]))
		}
	}
	if o.hapiN == 0 || o.writesOnly {
		return nil
	}
	hrows, hload, err := measureHAPI(o, files[0], family, end)
	if err != nil {
		return fmt.Errorf("HAPI: %w", err)
	}
	fmt.Printf("\nThe same searches against HAPI FHIR JPA (test/hapi: in-memory H2, stock settings, `Cache-Control: no-cache` so that its one-minute search cache does not answer repeats) on the first Synthea patient and %d generated Observations (the store above holds %d): loaded in %s (transactions of 1000, %d at once).\n\n", o.hapiN, o.n, hload.Round(time.Second), o.hapiParallel)
	fmt.Println("| request | store matches | store p50 / p99 ms | HAPI matches | HAPI p50 / p99 ms | HAPI / store p50 |")
	fmt.Println("|---|---|---|---|---|---|")
	for i, r := range hrows {
		var st row
		switch {
		case i < len(hrows)-2:
			for _, sr := range rows {
				if sr.name == r.name {
					st = sr
				}
			}
		default: // the two writes, in order
			st = writeRows[i-(len(hrows)-2)]
		}
		fmt.Printf("| %s | %s | %s / %s | %s | %s / %s | %.1f× |\n", r.name, st.matches, ms(st.indexP50), ms(st.indexP99), r.matches, ms(r.indexP50), ms(r.indexP99), float64(r.indexP50)/float64(max(st.indexP50, 1)))
	}
	return nil
}

// startCPUProfile profiles the CPU into file until stop.
func startCPUProfile(file string) (stop func(), err error) {
	f, err := os.Create(file)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// measureWrites measures single POSTs on the large record (partition 1)
// and transactions of 1000 Observations into a fresh partition, without
// indexes (sNo) and with (sIdx): the two files are open at once and the
// modes alternate write by write, so load on the machine weighs on both
// alike. The same resources are written to both.
func measureWrites(o options, sNo, sIdx *server, patient string, start, end time.Time) ([]row, error) {
	rng := rand.New(rand.NewPCG(14, 4))
	// Heart rates dated before the record starts: no search measured
	// here matches them, so both modes answer the same.
	var single [][]byte
	var b struct {
		Entry []struct {
			Resource json.RawMessage `json:"resource"`
		} `json:"entry"`
	}
	for _, raw := range observationsOf(rng, patient, "8867-4", o.writes, start.AddDate(-1, 0, 0), time.Hour) {
		if err := json.Unmarshal(raw, &b); err != nil {
			return nil, err
		}
		for _, e := range b.Entry {
			single = append(single, e.Resource)
		}
	}
	batches := observations(rng, patient, o.bulk, start, end.Sub(start))
	servers := []*server{sNo, sIdx}
	// alternate runs fn(s, i) for every i on both servers, the first in
	// turns, and returns the durations of each.
	// The process's CPU time during each mode's writes (every thread:
	// the index keys' workers, GC) is summed in cpu: on a busy machine
	// the wall-clock ratio tends to the CPU ratio (no core is free for
	// the workers).
	var cpu [2]time.Duration
	alternate := func(n int, fn func(s *server, i int) error) (no, idx []time.Duration, err error) {
		out := [2][]time.Duration{}
		cpu = [2]time.Duration{}
		for i := range n {
			for j := range 2 {
				k := (i + j) % 2
				c0, _ := processCPU()
				t := time.Now()
				if err := fn(servers[k], i); err != nil {
					return nil, nil, err
				}
				out[k] = append(out[k], time.Since(t))
				c1, _ := processCPU()
				cpu[k] += c1 - c0
			}
		}
		return out[0], out[1], nil
	}
	if o.writeProfile != "" {
		stop, err := startCPUProfile(o.writeProfile + ".cpu")
		if err != nil {
			return nil, err
		}
		defer stop()
		// What was allocated before (load, Open) is in PREFIX.alloc.base:
		// go tool pprof -diff_base PREFIX.alloc.base PREFIX.alloc
		writeHeapProfile(o.writeProfile + ".alloc.base")
		defer writeHeapProfile(o.writeProfile + ".alloc")
	}
	created := map[*server][]string{}
	no, idx, err := alternate(len(single), func(s *server, i int) error {
		rec, err := s.doRec(http.StatusCreated, http.MethodPost, "/fhir/Observation", "1", single[i])
		if err == nil {
			created[s] = append(created[s], strings.Split(rec.Header().Get("Location"), "/_history")[0])
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	rows := []row{{name: "POST Observation (one, fsync) on the large record"}, {name: "transaction of 1000 Observations"}}
	rows[0].scanP50, rows[0].scanP99, rows[0].indexP50, rows[0].indexP99 = pct(no, 0.5), pct(no, 0.99), pct(idx, 0.5), pct(idx, 0.99)
	// The mean counts the writes that merge the store's index log into
	// the indexes (about one in every 200 single writes).
	fmt.Fprintf(os.Stderr, "single POST mean: no index %s ms, index %s ms (%.2f×)\n", ms(mean(no)), ms(mean(idx)), float64(mean(idx))/float64(max(mean(no), 1)))
	// Deleted again (not measured), so both files hold the record searched.
	for _, s := range servers {
		for _, loc := range created[s] {
			i := strings.Index(loc, "/Observation/")
			if _, err := s.do(http.StatusOK, http.MethodDelete, "/fhir"+loc[i:], "1", nil); err != nil {
				if _, err2 := s.do(http.StatusNoContent, http.MethodDelete, "/fhir"+loc[i:], "1", nil); err2 != nil {
					return nil, err
				}
			}
		}
		body := `{"resourceType":"Parameters","parameter":[{"name":"id","valueInteger":100},{"name":"name","valueCode":"w100"}]}`
		if _, err := s.do(http.StatusOK, http.MethodPost, "/fhir/$partition-management-create-partition", "DEFAULT", []byte(body)); err != nil {
			return nil, err
		}
	}
	no, idx, err = alternate(len(batches), func(s *server, i int) error {
		_, err := s.do(http.StatusOK, http.MethodPost, "/fhir", "100", batches[i])
		return err
	})
	if err != nil {
		return nil, err
	}
	rows[1].scanP50, rows[1].scanP99, rows[1].indexP50, rows[1].indexP99 = pct(no, 0.5), pct(no, 0.99), pct(idx, 0.5), pct(idx, 0.99)
	if _, ok := processCPU(); ok && len(batches) > 0 && cpu[0] > 0 {
		per := func(d time.Duration) time.Duration { return d / time.Duration(len(batches)) }
		fmt.Fprintf(os.Stderr, "transaction of 1000, process CPU per transaction: no index %s ms, index %s ms (%.2f×)\n",
			ms(per(cpu[0])), ms(per(cpu[1])), float64(cpu[1])/float64(cpu[0]))
	}
	return rows, nil
}

// writeHeapProfile writes the allocation profile to file.
func writeHeapProfile(file string) {
	f, err := os.Create(file)
	if err != nil {
		fmt.Fprintln(os.Stderr, "record:", err)
		return
	}
	defer f.Close()
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		fmt.Fprintln(os.Stderr, "record:", err)
	}
}

// hapi is HAPI FHIR JPA over HTTP, answering the store's requests.
type hapi struct {
	base string // http://127.0.0.1:port
	c    *http.Client
}

func (h *hapi) do(want int, method, target, partition string, body []byte) ([]byte, error) {
	req, err := http.NewRequest(method, h.base+target, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set(hapitest.PartitionHeader, partition)
	req.Header.Set("Accept", "application/fhir+json")
	req.Header.Set("Cache-Control", "no-cache") // no reuse of an earlier search's results
	if body != nil {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	res, err := h.c.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, err
	}
	if res.StatusCode != want {
		return nil, fmt.Errorf("%s %s: %d: %.300s", method, target, res.StatusCode, raw)
	}
	return raw, nil
}

// measureHAPI starts HAPI, loads the first Synthea patient and o.hapiN
// generated Observations into its partition 1 (and the last 1000 apart,
// for _lastUpdated), and measures the searches and writes as on the
// store. It returns one row per search, then the two write rows, and how
// long the load took.
func measureHAPI(o options, synthea, family string, end time.Time) ([]row, time.Duration, error) {
	dir, err := os.MkdirTemp("", "pfr-bench-hapi-")
	if err != nil {
		return nil, 0, err
	}
	defer os.RemoveAll(dir)
	srv, err := hapitest.Start(context.Background(), hapitest.Options{Mode: "header", Dir: dir, Jar: hapitest.JarIn("."), JVMArgs: strings.Fields(o.hapiJVM)})
	if err != nil {
		return nil, 0, err
	}
	defer srv.Stop()
	h := &hapi{base: "http://" + srv.Addr, c: &http.Client{Timeout: 10 * time.Minute}}
	body := `{"resourceType":"Parameters","parameter":[{"name":"id","valueInteger":1},{"name":"name","valueCode":"p1"}]}`
	if _, err := h.do(http.StatusOK, http.MethodPost, "/fhir/$partition-management-create-partition", "DEFAULT", []byte(body)); err != nil {
		return nil, 0, err
	}
	raw, err := os.ReadFile(synthea)
	if err != nil {
		return nil, 0, err
	}
	resp, err := h.do(http.StatusOK, http.MethodPost, "/fhir", "1", raw)
	if err != nil {
		return nil, 0, err
	}
	patient := firstPatient(resp)
	if patient == "" {
		return nil, 0, fmt.Errorf("no Patient in HAPI's answer to %s", synthea)
	}
	rng := rand.New(rand.NewPCG(14, 100000))
	start := end.AddDate(-3, 0, 0)
	loadStart := time.Now()
	batches := observations(rng, patient, o.hapiN, start, end.Sub(start))
	work := make(chan []byte)
	errs := make(chan error, o.hapiParallel)
	var loaded atomic.Int64
	for range o.hapiParallel {
		go func() {
			var first error
			for b := range work {
				if _, err := h.do(http.StatusOK, http.MethodPost, "/fhir", "1", b); err != nil && first == nil {
					first = err
				}
				if n := loaded.Add(1); n%10 == 0 {
					fmt.Fprintf(os.Stderr, "HAPI: %d of %d transactions in %s\n", n, len(batches), time.Since(loadStart).Round(time.Second))
				}
			}
			errs <- first
		}()
	}
	for _, b := range batches {
		work <- b
	}
	close(work)
	for range o.hapiParallel {
		if err := <-errs; err != nil {
			return nil, 0, err
		}
	}
	load := time.Since(loadStart)
	fmt.Fprintf(os.Stderr, "HAPI: loaded %d Observations in %s\n", o.hapiN, load.Round(time.Millisecond))
	lastBatch := time.Now().UTC()
	time.Sleep(10 * time.Millisecond)
	for _, b := range observations(rng, patient, 1000, end, time.Hour) {
		if _, err := h.do(http.StatusOK, http.MethodPost, "/fhir", "1", b); err != nil {
			return nil, 0, err
		}
	}
	time.Sleep(10 * time.Millisecond)
	afterLastBatch := time.Now().UTC()

	var rows []row
	for _, q := range searches(patient, family, end, lastBatch, afterLastBatch) {
		if q.partition != "1" {
			continue // the other records are not loaded into HAPI
		}
		if _, err := measure(o.hapiWarmup, func(int) error {
			_, err := h.do(http.StatusOK, http.MethodGet, q.target, q.partition, nil)
			return err
		}); err != nil {
			return nil, 0, err
		}
		ds, err := measure(o.runs, func(int) error {
			_, err := h.do(http.StatusOK, http.MethodGet, q.target, q.partition, nil)
			return err
		})
		if err != nil {
			return nil, 0, err
		}
		count, err := h.do(http.StatusOK, http.MethodGet, q.target+"&_summary=count", q.partition, nil)
		if err != nil {
			return nil, 0, err
		}
		rows = append(rows, row{name: q.name, indexP50: pct(ds, 0.5), indexP99: pct(ds, 0.99), matches: totalOf(count)})
		fmt.Fprintf(os.Stderr, "HAPI %s: p50 %s ms (%s matches)\n", q.name, ms(pct(ds, 0.5)), totalOf(count))
	}
	one := observationsOf(rng, patient, "8867-4", o.writes, start.AddDate(-1, 0, 0), time.Hour)
	var single [][]byte
	for _, raw := range one {
		var b struct {
			Entry []struct {
				Resource json.RawMessage `json:"resource"`
			} `json:"entry"`
		}
		if err := json.Unmarshal(raw, &b); err != nil {
			return nil, 0, err
		}
		for _, e := range b.Entry {
			single = append(single, e.Resource)
		}
	}
	ds, err := measure(len(single), func(i int) error {
		_, err := h.do(http.StatusCreated, http.MethodPost, "/fhir/Observation", "1", single[i])
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	rows = append(rows, row{name: "POST Observation (one)", indexP50: pct(ds, 0.5), indexP99: pct(ds, 0.99)})
	bulk := observations(rng, patient, o.bulk, start, end.Sub(start))
	ds, err = measure(len(bulk), func(i int) error {
		// Into the record itself (HAPI checks the reference to its
		// Patient), after the searches were measured.
		_, err := h.do(http.StatusOK, http.MethodPost, "/fhir", "1", bulk[i])
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	rows = append(rows, row{name: "transaction of 1000 Observations", indexP50: pct(ds, 0.5), indexP99: pct(ds, 0.99)})
	return rows, load, nil
}

// firstPatient returns the id of the Patient a transaction response created.
func firstPatient(resp []byte) string {
	var b struct {
		Entry []struct {
			Response struct{ Location string } `json:"response"`
		} `json:"entry"`
	}
	_ = json.Unmarshal(resp, &b)
	for _, e := range b.Entry {
		if id, ok := strings.CutPrefix(e.Response.Location, "Patient/"); ok {
			return strings.Split(id, "/")[0]
		}
	}
	return ""
}

// familyOf returns the family name of the Bundle's Patient.
func familyOf(raw []byte) string {
	var b struct {
		Entry []struct {
			Resource struct {
				ResourceType string `json:"resourceType"`
				Name         []struct {
					Family string `json:"family"`
				} `json:"name"`
			} `json:"resource"`
		} `json:"entry"`
	}
	_ = json.Unmarshal(raw, &b)
	for _, e := range b.Entry {
		if e.Resource.ResourceType == "Patient" && len(e.Resource.Name) > 0 {
			return e.Resource.Name[0].Family
		}
	}
	return ""
}

// totalOf returns Bundle.total of a searchset as text.
func totalOf(body []byte) string {
	var b struct {
		Total *int `json:"total"`
	}
	if json.Unmarshal(body, &b) != nil || b.Total == nil {
		return "?"
	}
	return fmt.Sprint(*b.Total)
}
