package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

const syntheaDir = "../../testdata/fhir/synthea"

// TestBenchSmoke runs the whole harness with a handful of requests: cmd/pfr
// built, Caddy started, records created, drop-offs of both sizes from two
// sender counts answered with new receipts and listed in the inbox, a
// pick-up that imported everything, the table printed, a profile written,
// Caddy stopped. It asserts what was measured, never how fast.
func TestBenchSmoke(t *testing.T) {
	testkit.Needs(t, "the pfr binary run as a separate process")
	ctx, cancel := context.WithCancel(testkit.WaitContext(t))
	defer cancel()
	profile := t.TempDir() + "/cpu.pprof"
	o := options{concurrency: []int{1, 3}, small: 4, large: 2, warmup: 1, duration: time.Minute, rounds: 1,
		synthea: syntheaDir, cpuProfile: profile, profileLoad: "intake", profileTime: time.Second}
	var out, log bytes.Buffer
	if err := run(ctx, o, &out, &log); err != nil {
		t.Fatalf("run: %v\nlog:\n%s", err, log.String())
	}
	text := out.String()
	t.Log("\n" + text)
	for _, row := range []struct {
		size  string
		c     int
		count int
	}{{"50 KB", 1, 4}, {"50 KB", 3, 4}, {"2 MB", 1, 2}, {"2 MB", 3, 2}} {
		re := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(row.size) + `\s+(\d+)\s+\d+\s+` + strconv.Itoa(row.c) +
			`\s+(\d+)\s+(\d+)\s+[\d.]+\s+[\d.]+\s+[\d.]+ms\s+[\d.]+ms\s+[\d.]+ms\s+[\d.]+ms\s*$`)
		m := re.FindStringSubmatch(text)
		if m == nil {
			t.Errorf("no intake row for %s with %d senders", row.size, row.c)
			continue
		}
		if m[2] != strconv.Itoa(row.count) || m[3] != "0" {
			t.Errorf("%s c=%d: %s accepted, %s failed; want %d and 0", row.size, row.c, m[2], m[3], row.count)
		}
		if n, _ := strconv.Atoi(m[1]); (row.size == "50 KB" && (n < smallBundle || n > 2*smallBundle)) || (row.size == "2 MB" && (n < largeBundle || n > largeBundle+largeBundle/4)) {
			t.Errorf("%s Bundle of %d bytes", row.size, n)
		}
	}
	if !regexp.MustCompile(`(?m)^\s*pick-up\s+1\s+419\s+[\d.]+ms\s+[\d.]+ms\s+[\d.]+ms\s*$`).MatchString(text) {
		t.Errorf("no pick-up row with 1 round and 419 entries imported")
	}
	if !strings.Contains(text, "pick-up of CA_VeroSource_colorful_balloon.json") {
		t.Errorf("the pick-up did not use the largest real document (VeroSource's IPS)")
	}
	if fi, err := os.Stat(profile); err != nil || fi.Size() == 0 || !strings.Contains(text, "CPU profile of Caddy under intake load") {
		t.Errorf("no CPU profile written or reported: %v", err)
	}
}

// testAnswer is a drop-off answer as the gateway gives it.
func testAnswer(status int, receipt, body string) *answer {
	h := http.Header{}
	if receipt != "" {
		h.Set(receiptHeader, receipt)
	}
	return &answer{status: status, header: h, body: []byte(body)}
}

func TestCheckReceiptRefusesWrongAnswers(t *testing.T) {
	const id = "Zk3pQ0x9vY2mN4bC8dE1fA"
	good := `{"resourceType":"OperationOutcome","issue":[{"diagnostics":"Receipt ` + id + `; status pending"}]}`
	if got, err := checkReceipt(testAnswer(202, id, good)); err != nil || got != id {
		t.Fatalf("a good receipt: %q, %v", got, err)
	}
	for name, a := range map[string]*answer{
		"429":                 testAnswer(429, "", `{"resourceType":"OperationOutcome"}`),
		"200":                 testAnswer(200, id, good),
		"no receipt header":   testAnswer(202, "", good),
		"short receipt":       testAnswer(202, "abc", strings.ReplaceAll(good, id, "abc")),
		"not an outcome":      testAnswer(202, id, `{"resourceType":"Bundle","id":"`+id+`"}`),
		"invalid JSON":        testAnswer(202, id, `{"resourceType":"OperationOutcome"`),
		"another receipt":     testAnswer(202, id, strings.ReplaceAll(good, id, "Xk3pQ0x9vY2mN4bC8dE1fA")),
		"empty body with 202": testAnswer(202, id, ``),
	} {
		if _, err := checkReceipt(a); err == nil {
			t.Errorf("%s is accepted", name)
		}
	}
}

func TestReceiptsCountDuplicates(t *testing.T) {
	var r receipts
	if !r.add("a") || !r.add("b") || r.add("a") || r.count() != 2 {
		t.Errorf("receipts: a duplicate was not seen (count %d)", r.count())
	}
}

func TestCheckPickupRefusesWrongAnswers(t *testing.T) {
	ok := func(imported int, extra string) string {
		return fmt.Sprintf(`{"dropoff":"x","status":"picked-up","imported":%d%s}`, imported, extra)
	}
	if n, err := checkPickup(testAnswer(200, "", ok(177, "")), 177); err != nil || n != 177 {
		t.Fatalf("a good pick-up: %d, %v", n, err)
	}
	for name, a := range map[string]*answer{
		"409":            testAnswer(409, "", `{"resourceType":"OperationOutcome"}`),
		"422":            testAnswer(422, "", ok(177, "")),
		"fewer imported": testAnswer(200, "", ok(176, "")),
		"resumed":        testAnswer(200, "", ok(177, `,"resumed":true`)),
		"unresolved":     testAnswer(200, "", ok(177, `,"unresolved":["Practitioner?identifier=x"]`)),
		"still pending":  testAnswer(200, "", `{"status":"pending","imported":177}`),
		"not JSON":       testAnswer(200, "", `picked-up`),
	} {
		if _, err := checkPickup(a, 177); err == nil {
			t.Errorf("%s is accepted", name)
		}
	}
}

// TestCheckRecordHoldsCountsEveryType serves counts from a fake record:
// one type short, a missing total, or an error status fails the check.
func TestCheckRecordHoldsCountsEveryType(t *testing.T) {
	want := map[string]int{"Patient": 1, "Observation": 87, "Encounter": 15}
	for name, c := range map[string]struct {
		serve func(typ string) (int, string)
		ok    bool
	}{
		"all there": {func(typ string) (int, string) { return 200, fmt.Sprintf(`{"total":%d}`, want[typ]) }, true},
		"one Observation short": {func(typ string) (int, string) {
			if typ == "Observation" {
				return 200, `{"total":86}`
			}
			return 200, fmt.Sprintf(`{"total":%d}`, want[typ])
		}, false},
		"a second Patient": {func(typ string) (int, string) {
			if typ == "Patient" {
				return 200, `{"total":2}`
			}
			return 200, fmt.Sprintf(`{"total":%d}`, want[typ])
		}, false},
		"no total":     {func(string) (int, string) { return 200, `{"resourceType":"Bundle"}` }, false},
		"forbidden":    {func(string) (int, string) { return 403, `{"resourceType":"OperationOutcome"}` }, false},
		"invalid JSON": {func(string) (int, string) { return 200, `{"total":` }, false},
	} {
		var asked []string
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			typ := strings.TrimPrefix(r.URL.Path, "/fhir/")
			asked = append(asked, typ)
			if !strings.HasPrefix(r.Host, "rec.pfr.localhost:") || r.URL.Query().Get("_summary") != "count" ||
				r.Header.Get("Authorization") != "Bearer tok" {
				http.Error(w, "wrong request", http.StatusBadRequest)
				return
			}
			status, body := c.serve(typ)
			w.WriteHeader(status)
			_, _ = w.Write([]byte(body))
		}))
		u, _ := url.Parse(srv.URL)
		port, _ := strconv.Atoi(u.Port())
		g := &gateway{client: newClient(1), port: port, token: "tok"}
		err := checkRecordHolds(context.Background(), g, "rec", want)
		srv.Close()
		if (err == nil) != c.ok {
			t.Errorf("%s: err = %v", name, err)
		}
		if c.ok && len(asked) != len(want) {
			t.Errorf("%s: asked for %v, want every type of %v", name, asked, want)
		}
	}
}

// TestFillEntries: the intake Bundles reach their size with one Patient,
// unique entry names, and references that stay inside each copy or point
// at the one Patient.
func TestFillEntries(t *testing.T) {
	src, err := largestSynthea(syntheaDir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(src.name, "Alda_Carter_") || len(src.entries) != 178 || src.counts["Observation"] != 87 || src.patient["id"] != nil {
		t.Fatalf("largest Synthea Bundle: %s, %d entries, %v, patient id %v", src.name, len(src.entries), src.counts, src.patient["id"])
	}
	for _, size := range []int{smallBundle, largeBundle} {
		entries := fillEntries(src, size)
		body := newBodyMaker(entries, "n").body(1)
		if len(body) < size {
			t.Errorf("a Bundle for %d bytes has %d", size, len(body))
		}
		var b struct {
			Entry []struct {
				FullURL  string         `json:"fullUrl"`
				Resource map[string]any `json:"resource"`
			} `json:"entry"`
		}
		if err := json.Unmarshal(body, &b); err != nil {
			t.Fatalf("%d bytes: invalid JSON: %v", size, err)
		}
		names := map[string]bool{}
		patients := 0
		for _, e := range b.Entry {
			if names[e.FullURL] {
				t.Fatalf("%d bytes: fullUrl %s twice", size, e.FullURL)
			}
			names[e.FullURL] = true
			if e.Resource["resourceType"] == "Patient" {
				patients++
			}
		}
		if patients != 1 {
			t.Errorf("%d bytes: %d Patients", size, patients)
		}
		if size == largeBundle {
			if len(b.Entry) <= len(src.entries) {
				t.Fatalf("the 2 MB Bundle did not need copies: %d entries", len(b.Entry))
			}
			// Every urn:uuid reference names an entry of the Bundle.
			for _, urn := range uuidURN.FindAll(body, -1) {
				if !names[string(urn)] {
					t.Errorf("reference %s names no entry", urn)
					break
				}
			}
		}
	}
}

func TestBodyMakerMakesDistinctBundles(t *testing.T) {
	src, err := largestSynthea(syntheaDir)
	if err != nil {
		t.Fatal(err)
	}
	m := newBodyMaker(fillEntries(src, smallBundle), "abc")
	a, b := m.body(1), m.body(2)
	if bytes.Equal(a, b) || len(a) != m.size() {
		t.Errorf("bodies equal or size wrong: %d vs size %d", len(a), m.size())
	}
	var bundle struct {
		Type       string `json:"type"`
		Identifier struct {
			Value string `json:"value"`
		} `json:"identifier"`
	}
	if err := json.Unmarshal(b, &bundle); err != nil || bundle.Type != "transaction" || bundle.Identifier.Value != "abc-2" {
		t.Errorf("body: %+v, %v", bundle, err)
	}
	if other := newBodyMaker(fillEntries(src, smallBundle), "xyz").body(1); bytes.Equal(a, other) {
		t.Errorf("two runs make the same Bundle")
	}
}

func TestParseSyntheaRefusesOtherBundles(t *testing.T) {
	for name, raw := range map[string]string{
		"not JSON":    `{`,
		"a Patient":   `{"resourceType":"Patient"}`,
		"no entries":  `{"resourceType":"Bundle","entry":[]}`,
		"no Patient":  `{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Observation"}}]}`,
		"two":         `{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Patient"}},{"resource":{"resourceType":"Patient"}}]}`,
		"no type":     `{"resourceType":"Bundle","entry":[{"resource":{"id":"x"}}]}`,
		"bad entries": `{"resourceType":"Bundle","entry":[7]}`,
	} {
		if _, err := parseSynthea([]byte(raw)); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
	if _, err := largestSynthea(t.TempDir()); err == nil {
		t.Errorf("an empty directory gave a Bundle")
	}
}

func TestOptions(t *testing.T) {
	good := options{concurrency: []int{1}, small: 1, large: 1, duration: time.Second, rounds: 1}
	if err := good.validate(); err != nil {
		t.Fatalf("good options refused: %v", err)
	}
	for name, mutate := range map[string]func(*options){
		"no c":        func(o *options) { o.concurrency = nil },
		"c 0":         func(o *options) { o.concurrency = []int{4, 0} },
		"n50k 0":      func(o *options) { o.small = 0 },
		"n2m 0":       func(o *options) { o.large = 0 },
		"warmup -1":   func(o *options) { o.warmup = -1 },
		"rounds 0":    func(o *options) { o.rounds = 0 },
		"duration 0":  func(o *options) { o.duration = 0 },
		"profileload": func(o *options) { o.cpuProfile, o.profileLoad = "x", "both" },
	} {
		o := good
		mutate(&o)
		if err := o.validate(); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
	if c, err := parseConcurrency("1, 4,16"); err != nil || joinInts(c) != "1,4,16" {
		t.Errorf("parseConcurrency: %v, %v", c, err)
	}
	for _, bad := range []string{"", "0", "4,", "a", "-1", "1;4"} {
		if _, err := parseConcurrency(bad); err == nil {
			t.Errorf("-c %q accepted", bad)
		}
	}
}

func TestCaddyfileTurnsTheLimitsOff(t *testing.T) {
	cfg := caddyfile(ports{gateway: 1001, admin: 1002}, "/w")
	for _, want := range []string{"admin 127.0.0.1:1002", "default_bind 127.0.0.1", "auto_https off",
		"http://pfr.localhost:1001, http://*.pfr.localhost:1001 {", "base_domain pfr.localhost", "data_dir /w/gateway",
		"dev_issuer", "source_rate -1", "record_rate -1", "pending_per_record 100000",
		"pending_bytes_per_record " + strconv.Itoa(pendingBytes), "upstream pfr_store {\n\t\t\tpath /w/store.db", "root /w/caddy"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("Caddyfile lacks %q:\n%s", want, cfg)
		}
	}
	if strings.Contains(cfg, "https://") {
		t.Errorf("the bench Caddyfile serves HTTPS:\n%s", cfg)
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 200; i++ {
		d = append(d, time.Duration(i))
	}
	for q, want := range map[int]time.Duration{50: 100, 99: 198, 100: 200, 0: 1} {
		if got := percentile(d, q); got != want {
			t.Errorf("p%d = %d, want %d", q, got, want)
		}
	}
	if percentile(nil, 50) != 0 || percentile(d[:1], 99) != 1 {
		t.Errorf("percentile of none or one")
	}
}
