package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// TestBenchSmoke runs the whole harness with a handful of requests: Caddy
// built and started, the record created, data loaded, every target
// answering verified responses, the table printed, a profile written, and
// Caddy stopped. It asserts what was measured, never how fast.
// TestBenchCallgrind counts a few requests per window under callgrind:
// eight windows, each a dump with a positive count per request.
func TestBenchCallgrind(t *testing.T) {
	testkit.Needs(t, "valgrind (Debian's package) and the pfr binary run as a separate process")
	ctx := testkit.WaitContext(t)
	dir := t.TempDir()
	var out, log bytes.Buffer
	o := options{requests: 1, concurrency: 1, duration: time.Minute, warmup: 2, roundSize: 1, callgrind: dir, callgrindN: 3, callFill: 10,
		embedded: true}
	if err := run(ctx, o, &out, &log); err != nil {
		t.Fatalf("run: %v\nlog:\n%s", err, log.String())
	}
	t.Log("\n" + out.String())
	rows := regexp.MustCompile(`(?m)^\s*(read|search)\s+\((b|c|f)\) \S+ ?\S*\s+(\d+)\s+(\d+)\s+(\S+)$`).FindAllStringSubmatch(out.String(), -1)
	if len(rows) != 12 {
		t.Fatalf("%d counted windows, want 12 (two each of (b), (c) and (f), reads and searches)", len(rows))
	}
	for _, r := range rows {
		if n, _ := strconv.Atoi(r[3]); n <= 0 {
			t.Errorf("%s %s: %s instructions a request", r[1], r[2], r[3])
		}
		if n, _ := strconv.Atoi(r[4]); n <= 0 {
			t.Errorf("%s %s: %s bytes allocated a request", r[1], r[2], r[4])
		}
		if _, err := os.Stat(r[5]); err != nil {
			t.Errorf("dump: %v", err)
		}
	}
}

func TestBenchSmoke(t *testing.T) {
	testkit.Needs(t, "the pfr binary run as a separate process")
	ctx, cancel := context.WithCancel(testkit.WaitContext(t))
	defer cancel()
	profile := filepath.Join(t.TempDir(), "cpu.pprof")
	allocs := filepath.Join(t.TempDir(), "allocs.pprof")
	var out, log bytes.Buffer
	o := options{
		requests: 12, concurrency: 2, duration: time.Minute, warmup: 4, roundSize: 5,
		https: true, trusted: true, embedded: true, cpuProfile: profile, memProfile: allocs, profileTime: time.Second, profileKind: "both",
		profileOf: "b",
	}
	if err := run(ctx, o, &out, &log); err != nil {
		t.Fatalf("run: %v\nlog:\n%s", err, log.String())
	}
	text := out.String()
	t.Log("\n" + text)
	for _, k := range []string{"read", "search"} {
		for _, target := range []string{"(a) pfr_store", "(b) reverse_proxy", "(c) gateway", "(d) gateway https", "(e) gateway trusting", "(f) gateway embedded"} {
			row := regexp.MustCompile(`(?m)^\s*` + k + `\s+` + regexp.QuoteMeta(target) + `\s+(\d+)\s+[\d.]+ms\s+[\d.]+ms\s+\d+\s+([\d.]+)ms\s*$`)
			m := row.FindStringSubmatch(text)
			if m == nil {
				t.Errorf("no %s row for %s", k, target)
				continue
			}
			if m[1] != "12" {
				t.Errorf("%s %s: %s requests measured, want 12", k, target, m[1])
			}
			if m[2] == "0.000" {
				t.Errorf("%s %s: no CPU time measured", k, target)
			}
		}
		for _, r := range []string{"(c)/(b)", "(b)/(a)", "(c)/(a)", "(d)/(b)", "(d)/(c)", "(e)/(b)", "(c)/(e)", "(f)/(b)", "(f)/(a)"} {
			if !regexp.MustCompile(`(?m)^\s*` + k + `\s+` + regexp.QuoteMeta(r) + `\s+[\d.]+×\s+[\d.]+×\s+[\d.]+×\s+[\d.]+×\s*$`).MatchString(text) {
				t.Errorf("no %s ratio row %s", k, r)
			}
		}
	}
	for _, p := range []string{profile, allocs} {
		if fi, err := os.Stat(p); err != nil || fi.Size() == 0 {
			t.Errorf("no profile written to %s: %v", filepath.Base(p), err)
		}
	}
	if !strings.Contains(text, "50 Observations") {
		t.Errorf("the header does not report the 50 Observations loaded")
	}
}

// testFixture is a fixture with n Observations of Patient p1.
func testFixture(n int) *fixture {
	fx := &fixture{partition: "7", patientID: "p1", readID: "o0"}
	for i := range n {
		fx.obsIDs = append(fx.obsIDs, fmt.Sprintf("o%d", i))
	}
	slices.Sort(fx.obsIDs) // as prepare keeps them
	return fx
}

// observationJSON is a generated Observation with an id.
func observationJSON(t *testing.T, id, patient string) json.RawMessage {
	t.Helper()
	var o map[string]any
	if err := json.Unmarshal(observation(3, patient), &o); err != nil {
		t.Fatal(err)
	}
	o["id"] = id
	raw, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// searchset builds a searchset body as the store writes it: compact JSON,
// total before link. fullBase names the entries; ids their resources.
func searchset(t *testing.T, fullBase string, ids []string, total int, patient string, next bool) []byte {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, `{"resourceType":"Bundle","type":"searchset","total":%d,"link":[{"relation":"self","url":"%s/Observation"}`, total, fullBase)
	if next {
		fmt.Fprintf(&b, `,{"relation":"next","url":"%s?_getpages=x"}`, fullBase)
	}
	b.WriteString(`],"entry":[`)
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"fullUrl":"%s/Observation/%s","resource":%s,"search":{"mode":"match"}}`, fullBase, id, observationJSON(t, id, patient))
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

// TestChecksRefuseWrongAnswers feeds the verification answers a broken or
// misrouted server could give: none may be counted as a measurement.
func TestChecksRefuseWrongAnswers(t *testing.T) {
	const base = "http://bench.pfr.localhost:1/fhir"
	tg := &target{label: "(c) gateway", base: base}
	fx := testFixture(searchSize)
	goodRead := observationJSON(t, "o0", "p1")
	goodSearch := searchset(t, base, fx.obsIDs, searchSize, "p1", false)

	for name, check := range map[string]checkFunc{"fast": (*target).checkFast, "full": (*target).checkFull} {
		if err := check(tg, readKind, fx, 200, goodRead); err != nil {
			t.Errorf("%s: a good read is refused: %v", name, err)
		}
		if err := check(tg, searchKind, fx, 200, goodSearch); err != nil {
			t.Errorf("%s: a good search is refused: %v", name, err)
		}
		bad := []struct {
			what   string
			k      kind
			status int
			body   []byte
		}{
			{"error status", readKind, 500, goodRead},
			{"401 with a body", readKind, 401, []byte(`{"resourceType":"OperationOutcome"}`)},
			{"another Observation", readKind, 200, observationJSON(t, "o9", "p1")},
			{"an OperationOutcome with 200", readKind, 200, []byte(`{"resourceType":"OperationOutcome","id":"o0"}`)},
			{"49 entries", searchKind, 200, searchset(t, base, fx.obsIDs[:49], searchSize, "p1", false)},
			{"wrong total", searchKind, 200, searchset(t, base, fx.obsIDs, 51, "p1", false)},
			{"a next page", searchKind, 200, searchset(t, base, fx.obsIDs, searchSize, "p1", true)},
			{"upstream URLs not rewritten", searchKind, 200, searchset(t, "http://127.0.0.1:2/fhir", fx.obsIDs, searchSize, "p1", false)},
			{"empty search", searchKind, 200, nil},
		}
		for _, b := range bad {
			if err := check(tg, b.k, fx, b.status, b.body); err == nil {
				t.Errorf("%s: %s is accepted", name, b.what)
			}
		}
	}

	// What only the full check sees.
	other := testFixture(searchSize)
	other.obsIDs[7] = "z7"
	if err := tg.checkFull(searchKind, other, 200, goodSearch); err == nil {
		t.Errorf("full: a searchset of other Observations is accepted")
	}
	if err := tg.checkFull(readKind, fx, 200, observationJSON(t, "o0", "someone-else")); err == nil {
		t.Errorf("full: another patient's Observation is accepted")
	}
	if err := tg.checkFull(searchKind, fx, 200, searchset(t, base, fx.obsIDs, searchSize, "someone-else", false)); err == nil {
		t.Errorf("full: a searchset of another patient's Observations is accepted")
	}
	if err := tg.checkFull(searchKind, fx, 200, append(goodSearch[:len(goodSearch)-2:len(goodSearch)-2], '}')); err == nil {
		t.Errorf("full: truncated JSON is accepted")
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 200; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		q    int
		want time.Duration
	}{{50, 100 * time.Millisecond}, {99, 198 * time.Millisecond}, {100, 200 * time.Millisecond}, {0, time.Millisecond}} {
		if got := percentile(d, c.q); got != c.want {
			t.Errorf("p%d = %s, want %s", c.q, got, c.want)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("p50 of nothing = %s", got)
	}
	if got := percentile(d[:1], 99); got != time.Millisecond {
		t.Errorf("p99 of one = %s", got)
	}
	st := summarize(sample{latencies: []time.Duration{3, 1, 2}, busy: time.Second})
	if st.count != 3 || st.p50 != 2 || st.rps != 3 {
		t.Errorf("summarize = %+v", st)
	}
}

func TestRecordPartitions(t *testing.T) {
	list := `{"resourceType":"Parameters","parameter":[
		{"name":"partition","part":[{"name":"id","valueInteger":1},{"name":"name","valueCode":"pfr-abc"}]},
		{"name":"partition","part":[{"name":"id","valueInteger":77},{"name":"name","valueCode":"other"}]},
		{"name":"partition","part":[{"name":"name","valueCode":"pfr-no-id"}]},
		{"name":"partition","part":[{"name":"id","valueInteger":3},{"name":"name","valueCode":"pfr-def"}]}]}`
	ids, err := recordPartitions([]byte(list))
	if err != nil || strings.Join(ids, ",") != "1,3" {
		t.Errorf("recordPartitions = %v, %v; want [1 3]", ids, err)
	}
	for _, bad := range []string{``, `[]`, `{"resourceType":"OperationOutcome"}`, `{"resourceType":"Parameters","parameter":7}`} {
		if _, err := recordPartitions([]byte(bad)); err == nil {
			t.Errorf("recordPartitions(%q) accepted", bad)
		}
	}
}

func TestCreatedID(t *testing.T) {
	const base = "http://bench.pfr.localhost:1/fhir/Observation/"
	if id, err := createdID(base+"abc-1/_history/1", base); err != nil || id != "abc-1" {
		t.Errorf("createdID = %q, %v", id, err)
	}
	for _, bad := range []string{
		"http://127.0.0.1:2/fhir/Observation/abc/_history/1", // not rewritten to the record's address
		base,                         // no id
		base + "a b/_history/1",      // not a FHIR id
		"Observation/abc/_history/1", // relative
		"",
	} {
		if _, err := createdID(bad, base); err == nil {
			t.Errorf("createdID(%q) accepted", bad)
		}
	}
}

func TestOptionsValidate(t *testing.T) {
	good := options{requests: 1, concurrency: 1, duration: time.Second, warmup: 1, roundSize: 1}
	if err := good.validate(); err != nil {
		t.Fatalf("good options refused: %v", err)
	}
	for _, k := range []string{"read", "search", "both"} {
		for _, of := range []string{"b", "c"} {
			o := good
			o.cpuProfile, o.profileKind, o.profileOf = "cpu.pprof", k, of
			if err := o.validate(); err != nil {
				t.Errorf("-profilekind %s -profiletarget %s refused: %v", k, of, err)
			}
		}
	}
	for name, mutate := range map[string]func(*options){
		"n 0":            func(o *options) { o.requests = 0 },
		"c 0":            func(o *options) { o.concurrency = 0 },
		"warmup 0":       func(o *options) { o.warmup = 0 },
		"round 0":        func(o *options) { o.roundSize = 0 },
		"duration 0":     func(o *options) { o.duration = 0 },
		"callgrind n 0":  func(o *options) { o.callgrind, o.callgrindN = "cg", 0 },
		"profile kind":   func(o *options) { o.cpuProfile, o.profileKind, o.profileOf = "cpu.pprof", "reads", "c" },
		"profile target": func(o *options) { o.cpuProfile, o.profileKind, o.profileOf = "cpu.pprof", "read", "a" },
	} {
		o := good
		mutate(&o)
		if err := o.validate(); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}

func TestCaddyfileHasEveryPath(t *testing.T) {
	p := ports{store: 1001, proxy: 1002, gateway: 1003, gatewayTLS: 1004, trusted: 1005, admin: 1006, embedded: 1007}
	plain := caddyfile(p, "/w", sites{})
	for _, want := range []string{"admin 127.0.0.1:1006", "default_bind 127.0.0.1", "http://:1001 {", "path /w/store.db",
		"http://:1002 {\n\treverse_proxy 127.0.0.1:1001", "http://pfr.localhost:1003, http://*.pfr.localhost:1003",
		"upstream reverse_proxy 127.0.0.1:1001", "dev_issuer", "data_dir /w/gateway", "root /w/caddy"} {
		if !strings.Contains(plain, want) {
			t.Errorf("Caddyfile lacks %q:\n%s", want, plain)
		}
	}
	if strings.Contains(plain, "https://") || strings.Contains(plain, "trust_upstream_isolation") || strings.Contains(plain, ":1007") {
		t.Errorf("optional sites are there unasked:\n%s", plain)
	}
	hapi := caddyfile(p, "/w", sites{tls: true, trusted: true, embedded: true, external: true})
	if strings.Contains(hapi, "pfr_store") || !strings.Contains(hapi, "http://:1002 {\n\treverse_proxy 127.0.0.1:1001") ||
		!strings.Contains(hapi, "upstream reverse_proxy 127.0.0.1:1001") {
		t.Errorf("in front of HAPI on 1001, want no store site and (b), (c) proxying to it:\n%s", hapi)
	}
	all := caddyfile(p, "/w", sites{tls: true, trusted: true, embedded: true})
	for _, want := range []string{"http://pfr.localhost:1007, http://*.pfr.localhost:1007 {\n\tpfr {",
		"\t\tupstream pfr_store {\n\t\t\tpath /w/store.db\n\t\t}\n", "https://pfr.localhost:1004, https://*.pfr.localhost:1004 {\n\ttls {\n\t\ton_demand",
		"http://pfr.localhost:1005, http://*.pfr.localhost:1005 {\n\tpfr {", "\t\ttrust_upstream_isolation\n"} {
		if !strings.Contains(all, want) {
			t.Errorf("Caddyfile lacks %q:\n%s", want, all)
		}
	}
	if n := strings.Count(all, "trust_upstream_isolation"); n != 1 {
		t.Errorf("trust_upstream_isolation in %d sites, want only (e)", n)
	}
	if strings.Contains(all, "direct_upstream") {
		t.Errorf("direct_upstream set unasked:\n%s", all)
	}
	// -direct=false: (c), (d) and (e) through the handler; (f) has no
	// reverse_proxy.
	handler := caddyfile(p, "/w", sites{tls: true, trusted: true, embedded: true, handler: true})
	if n := strings.Count(handler, "\t\tdirect_upstream off\n"); n != 3 {
		t.Errorf("direct_upstream off in %d sites, want (c), (d) and (e):\n%s", n, handler)
	}
}

func TestComparisons(t *testing.T) {
	names := func(labels ...string) string {
		var ts []*target
		for _, l := range labels {
			ts = append(ts, &target{label: l})
		}
		var out []string
		for _, c := range comparisons(ts) {
			out = append(out, fmt.Sprintf("%s=%d/%d", c.name, c.x, c.y))
		}
		return strings.Join(out, " ")
	}
	if got := names("(a) s", "(b) p", "(c) g"); got != "(c)/(b)=2/1 (b)/(a)=1/0 (c)/(a)=2/0" {
		t.Errorf("three targets: %s", got)
	}
	if got := names("(a) s", "(b) p", "(c) g", "(e) t"); got != "(c)/(b)=2/1 (b)/(a)=1/0 (c)/(a)=2/0 (e)/(b)=3/1 (c)/(e)=2/3" {
		t.Errorf("without (d): %s", got)
	}
	if got := names("(a) s", "(b) p", "(c) g", "(d) h"); got != "(c)/(b)=2/1 (b)/(a)=1/0 (c)/(a)=2/0 (d)/(b)=3/1 (d)/(c)=3/2" {
		t.Errorf("with (d), HTTPS against the bare proxy too: %s", got)
	}
}
