package crashtest

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sort"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// largestSynthea is the largest Synthea transaction Bundle of the test data.
const largestSynthea = "synthea/Alda_Carter_ee1034c9-cb75-413c-8f36-da7e4268d2b5.json"

// bundleContents returns a Bundle's Patient (without its id) and how many
// resources of each other type it holds.
func bundleContents(t *testing.T, raw []byte) (map[string]any, map[string]int) {
	t.Helper()
	var b struct {
		Entry []struct {
			Resource map[string]any `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	var patient map[string]any
	counts := map[string]int{}
	for _, e := range b.Entry {
		typ, _ := e.Resource["resourceType"].(string)
		if typ == "Patient" {
			patient = e.Resource
			delete(patient, "id")
			continue
		}
		counts[typ]++
	}
	if patient == nil {
		t.Fatal("no Patient in the Bundle")
	}
	return patient, counts
}

// recordCounts searches the record for each type and returns the totals.
func (g *gatewayProcess) recordCounts(token, slug string, types []string) map[string]int {
	g.t.Helper()
	out := make(map[string]int, len(types))
	for _, typ := range types {
		q := url.Values{"_summary": {"count"}}.Encode()
		res := g.do("GET", g.recordURL(slug, "/"+typ+"?"+q), token, nil).Expect(g.t, http.StatusOK, "count "+typ+" in "+slug)
		total, ok := res.Body["total"].(float64)
		if !ok {
			g.t.Fatalf("count %s in %s: no total in %.300s", typ, slug, res.Raw)
		}
		out[typ] = int(total)
	}
	return out
}

// dopuTagSystem is the meta.tag system a pick-up puts on every resource it
// imports, with the drop-off id as code.
const dopuTagSystem = "urn:pfr:dopu"

// taggedCount counts the record's resources of typ that a pick-up of the
// drop-off imported.
func (g *gatewayProcess) taggedCount(token, slug, typ, dropOff string) int {
	g.t.Helper()
	q := url.Values{"_tag": {dopuTagSystem + "|" + dropOff}, "_summary": {"count"}}.Encode()
	res := g.do("GET", g.recordURL(slug, "/"+typ+"?"+q), token, nil).Expect(g.t, http.StatusOK, "tagged "+typ+" in "+slug)
	total, _ := res.Body["total"].(float64)
	return int(total)
}

// importState is how much of a drop-off a record holds.
type importState string

const (
	importedNone    importState = "none"
	importedAll     importState = "all"
	importedPartial importState = "partial"
	importedTwice   importState = "more than once"
)

// classify compares the record's counts with the Bundle's.
func classify(got, want map[string]int) importState {
	zero, full := 0, 0
	for typ, n := range want {
		switch got[typ] {
		case 0:
			zero++
		case n:
			full++
		default:
			if got[typ] > n {
				return importedTwice
			}
			return importedPartial
		}
	}
	switch {
	case zero == len(want):
		return importedNone
	case full == len(want):
		return importedAll
	}
	return importedPartial
}

// pickupPath is the management API path of a drop-off's pick-up.
func pickupPath(slug, id string) string {
	return "/pfr/v1/records/" + slug + "/dropoffs/" + id + "/pickup"
}

// pickupFixture is a gateway, its owner, the largest Synthea Bundle and
// what one uninterrupted pick-up of it looks like.
type pickupFixture struct {
	t       *testing.T
	g       *gatewayProcess
	owner   string
	raw     []byte
	patient map[string]any
	// want counts the Bundle's resources by type, its Patient aside;
	// countTypes are those types and Patient.
	want       map[string]int
	countTypes []string
	// took is how long the uninterrupted pick-up took.
	took time.Duration
}

// newPickupFixture starts a gateway and picks the Bundle up once without
// interruption: the reference for the kill delays, and a check that the
// counting sees a complete import.
func newPickupFixture(t *testing.T, owner string) *pickupFixture {
	t.Helper()
	g := newGateway(t)
	f := &pickupFixture{t: t, g: g, owner: g.token(owner), raw: testkit.ReadFHIR(t, largestSynthea)}
	f.patient, f.want = bundleContents(t, f.raw)
	for typ := range f.want {
		f.countTypes = append(f.countTypes, typ)
	}
	sort.Strings(f.countTypes)
	f.countTypes = append(f.countTypes, "Patient")

	g.createRecord(f.owner, "reference", f.patient)
	ref := g.dropOffReceipt("reference", f.raw)
	started := time.Now()
	g.do("POST", g.apex(pickupPath("reference", ref)), f.owner, nil).Expect(t, http.StatusOK, "reference pick-up")
	f.took = time.Since(started)
	if got := f.counts("reference"); classify(got, f.want) != importedAll || got["Patient"] != 1 {
		t.Fatalf("an uninterrupted pick-up left %v, want %v and one Patient", got, f.want)
	}
	t.Logf("an uninterrupted pick-up of %d bytes takes %s", len(f.raw), f.took.Round(time.Millisecond))
	return f
}

// counts counts the record's resources of the Bundle's types and Patients.
func (f *pickupFixture) counts(slug string) map[string]int {
	return f.g.recordCounts(f.owner, slug, f.countTypes)
}

// crash is what one killed pick-up left behind.
type crash struct {
	slug, receipt string
	delay         time.Duration
	// first is the pick-up's answer, when it came before the kill.
	first    *response
	counts   map[string]int
	state    importState
	status   string
	describe string
}

// killWhen waits for the moment to kill a pick-up in progress: done is
// closed when the pick-up has answered (or failed). It returns what it
// waited for, in words.
type killWhen func(f *pickupFixture, slug, receipt string, done <-chan struct{}) string

// afterDelay kills after a fixed delay.
func afterDelay(d time.Duration) killWhen {
	return func(*pickupFixture, string, string, <-chan struct{}) string {
		time.Sleep(d)
		return "after " + d.Round(time.Millisecond).String()
	}
}

// onceImported kills as soon as the imported resources show in the record
// (a search for the drop-off's tag finds them), which is right between the
// upstream transaction and the marking of the drop-off, unless the marking
// wins the race. Polling is bounded.
func onceImported(f *pickupFixture, slug, receipt string, done <-chan struct{}) string {
	q := "/Observation?_summary=count&_tag=" + dopuTagSystem + "%7C" + receipt
	for range 5000 {
		select {
		case <-done:
			return "once imported (too late: the pick-up had answered)"
		default:
		}
		res, err := f.g.send(context.Background(), "GET", f.g.recordURL(slug, q), f.owner, nil)
		if err != nil {
			return "once imported (the search failed: " + err.Error() + ")"
		}
		if total, _ := res.Body["total"].(float64); total > 0 {
			return "once imported"
		}
	}
	return "once imported (never seen)"
}

// crashPickup creates a record, drops the Bundle off for it, starts the
// pick-up, SIGKILLs the gateway when kill says, restarts it and looks at
// what is left.
func (f *pickupFixture) crashPickup(slug string, kill killWhen) crash {
	f.t.Helper()
	g := f.g
	g.createRecord(f.owner, slug, f.patient)
	c := crash{slug: slug, receipt: g.dropOffReceipt(slug, f.raw)}

	done := make(chan struct{})
	var first response
	answered := false
	ctx, cancel := context.WithCancel(testkit.WaitContext(f.t))
	defer cancel()
	started := time.Now()
	go func() {
		defer close(done)
		res, err := g.send(ctx, "POST", g.apex(pickupPath(slug, c.receipt)), f.owner, nil)
		first, answered = res, err == nil
	}()
	when := kill(f, slug, c.receipt, done)
	c.delay = time.Since(started)
	g.kill()
	<-done
	if answered {
		c.first = &first
	}
	c.describe = fmt.Sprintf("%s (kill %s, at %s)", slug, when, c.delay.Round(time.Millisecond))
	g.start()

	c.counts = f.counts(slug)
	c.state = classify(c.counts, f.want)
	c.status = g.receiptStatus(c.receipt)
	return c
}

// check asserts what must hold after any crash: all or nothing, one
// Patient, nothing imported means pending, an answered pick-up means all
// imported and picked up, and an import carries the drop-off's tag (what
// a resumed pick-up searches for).
func (f *pickupFixture) check(c crash) {
	t := f.t
	t.Helper()
	if c.first != nil && c.first.Status != http.StatusOK {
		t.Errorf("%s: the pick-up answered %d before the kill: %.300s", c.describe, c.first.Status, c.first.Raw)
	}
	switch {
	case c.state == importedPartial || c.state == importedTwice:
		t.Errorf("%s: the record holds %s of the drop-off after SIGKILL: %v, the Bundle has %v", c.describe, c.state, c.counts, f.want)
	case c.counts["Patient"] != 1:
		t.Errorf("%s: the record holds %d Patients after SIGKILL, want its own only", c.describe, c.counts["Patient"])
	case c.state == importedNone && c.status != "pending":
		t.Errorf("%s: nothing was imported but the drop-off is %q, want pending", c.describe, c.status)
	case c.first != nil && c.first.Status == http.StatusOK && (c.state != importedAll || c.status != "picked-up"):
		t.Errorf("%s: the pick-up answered 200 before the kill, yet the record holds %s and the drop-off is %q", c.describe, c.state, c.status)
	case c.status != "pending" && c.status != "picked-up":
		t.Errorf("%s: the drop-off is %q after SIGKILL", c.describe, c.status)
	case c.state == importedAll:
		if tagged := f.g.taggedCount(f.owner, c.slug, "Observation", c.receipt); tagged != f.want["Observation"] {
			t.Errorf("%s: %d of %d imported Observations carry the tag %s|%s", c.describe, tagged, f.want["Observation"], dopuTagSystem, c.receipt)
		}
	}
}

// killAim chooses kill delays. It aims between the longest delay that left
// nothing imported and the shortest that left it all: where the upstream
// transaction commits and the drop-off is marked picked up.
type killAim struct {
	longestNone, shortestAll time.Duration
}

func newKillAim(took time.Duration) *killAim { return &killAim{shortestAll: 2 * took} }

// next returns a delay drawn from the window. Timing noise can leave the
// longest "none" after the shortest "all": the window is then between
// them the other way round.
func (a *killAim) next() time.Duration {
	lo, hi := min(a.longestNone, a.shortestAll), max(a.longestNone, a.shortestAll)+time.Millisecond
	return lo + rand.N(hi-lo+1)
}

// learn narrows the window with what a kill after delay left.
func (a *killAim) learn(c crash) {
	switch c.state {
	case importedNone:
		a.longestNone = max(a.longestNone, c.delay)
	case importedAll:
		a.shortestAll = min(a.shortestAll, c.delay)
	}
}

// TestClassify shows that the all-or-none check can fail: a partial or a
// doubled import is told apart from none and all.
func TestClassify(t *testing.T) {
	want := map[string]int{"Observation": 3, "Encounter": 2}
	for _, c := range []struct {
		got  map[string]int
		want importState
	}{
		{map[string]int{}, importedNone},
		{map[string]int{"Observation": 3, "Encounter": 2}, importedAll},
		{map[string]int{"Observation": 3}, importedPartial},
		{map[string]int{"Observation": 1, "Encounter": 2}, importedPartial},
		{map[string]int{"Observation": 6, "Encounter": 4}, importedTwice},
	} {
		if got := classify(c.got, want); got != c.want {
			t.Errorf("classify(%v) = %s, want %s", c.got, got, c.want)
		}
	}
}
