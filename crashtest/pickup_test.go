package crashtest

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"
)

// largestSynthea is the largest Synthea transaction Bundle of the test data.
const largestSynthea = "../testdata/fhir/synthea/Alda_Carter_ee1034c9-cb75-413c-8f36-da7e4268d2b5.json"

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
		res := g.do("GET", g.recordURL(slug, "/"+typ+"?"+q), token, nil).expect(g.t, http.StatusOK, "count "+typ+" in "+slug)
		total, ok := res.body["total"].(float64)
		if !ok {
			g.t.Fatalf("count %s in %s: no total in %.300s", typ, slug, res.raw)
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
	res := g.do("GET", g.recordURL(slug, "/"+typ+"?"+q), token, nil).expect(g.t, http.StatusOK, "tagged "+typ+" in "+slug)
	total, _ := res.body["total"].(float64)
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

// TestSIGKILLDuringPickup drops off the largest Synthea Bundle, starts its
// pick-up and kills the gateway after a random delay, spread from before
// the pick-up starts to after it ends (a first, uninterrupted pick-up
// measures how long one takes). After each restart the record holds all
// of the Bundle's resources or none, never a part; with none the drop-off
// is still pending; a picked-up drop-off holds all. Then the owner retries:
// a pending drop-off must be picked up (resumed, without a second import,
// when the data is already in), and the counts never double.
func TestSIGKILLDuringPickup(t *testing.T) {
	t.Parallel()
	g := newGateway(t)
	raw := readFixture(t, largestSynthea)
	patient, want := bundleContents(t, raw)
	types := make([]string, 0, len(want)+1)
	for typ := range want {
		types = append(types, typ)
	}
	sort.Strings(types)
	countTypes := append(types, "Patient")
	owner := g.token("alda")

	// An uninterrupted pick-up: the reference for the kill delays, and a
	// check that the counting sees a complete import.
	g.createRecord(owner, "alda-ref", patient)
	ref := g.dropOffReceipt("alda-ref", raw)
	started := time.Now()
	g.do("POST", g.apex(pickupPath("alda-ref", ref)), owner, nil).expect(t, http.StatusOK, "reference pick-up")
	took := time.Since(started)
	if got := g.recordCounts(owner, "alda-ref", countTypes); classify(got, want) != importedAll || got["Patient"] != 1 {
		t.Fatalf("an uninterrupted pick-up left %v, want %v and one Patient", got, want)
	}
	t.Logf("an uninterrupted pick-up of %d bytes takes %s", len(raw), took.Round(time.Millisecond))

	// The first rounds spread the kill from before the request leaves (0)
	// through the pick-up to after it has answered (1.5 times the
	// reference), jittered; the later ones aim between the longest delay
	// that left nothing imported and the shortest that left it all, where
	// the upstream transaction commits and the drop-off is marked.
	const spread, rounds = 8, 16
	outcomes := map[string]int{}
	blocked := 0
	longestNone, shortestAll := time.Duration(0), 2*took
	for round := range rounds {
		slug := fmt.Sprintf("alda-%d", round)
		g.createRecord(owner, slug, patient)
		receipt := g.dropOffReceipt(slug, raw)
		var delay time.Duration
		switch {
		case round == 0:
		case round < spread:
			delay = time.Duration((1.5*float64(round-1)/(spread-2) + rand.Float64()*0.1) * float64(took))
		default:
			lo, hi := longestNone, max(shortestAll, longestNone+time.Millisecond)
			delay = lo + rand.N(hi-lo+1)
		}

		answered := make(chan response, 1)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		go func() {
			defer close(answered)
			if res, err := g.send(ctx, "POST", g.apex(pickupPath(slug, receipt)), owner, nil); err == nil {
				answered <- res
			}
		}()
		time.Sleep(delay)
		g.kill()
		first, completed := <-answered
		cancel()
		g.start()

		got := g.recordCounts(owner, slug, countTypes)
		state := classify(got, want)
		status := g.receiptStatus(receipt)
		what := fmt.Sprintf("round %d (kill after %s)", round, delay.Round(time.Millisecond))
		if completed && first.status != http.StatusOK {
			t.Errorf("%s: the pick-up answered %d before the kill: %.300s", what, first.status, first.raw)
		}
		switch {
		case state == importedPartial || state == importedTwice:
			t.Errorf("%s: the record holds %s of the drop-off after SIGKILL: %v, the Bundle has %v", what, state, got, want)
		case got["Patient"] != 1:
			t.Errorf("%s: the record holds %d Patients after SIGKILL, want its own only", what, got["Patient"])
		case state == importedNone && status != "pending":
			t.Errorf("%s: nothing was imported but the drop-off is %q, want pending", what, status)
		case completed && first.status == http.StatusOK && (state != importedAll || status != "picked-up"):
			t.Errorf("%s: the pick-up answered 200 before the kill, yet the record holds %s and the drop-off is %q", what, state, status)
		case status != "pending" && status != "picked-up":
			t.Errorf("%s: the drop-off is %q after SIGKILL", what, status)
		case state == importedAll:
			// What a resumed pick-up looks for: the drop-off's tag on what
			// the crashed one wrote.
			if tagged := g.taggedCount(owner, slug, "Observation", receipt); tagged != want["Observation"] {
				t.Errorf("%s: %d of %d imported Observations carry the tag %s|%s", what, tagged, want["Observation"], dopuTagSystem, receipt)
			}
		}

		if state == importedNone {
			longestNone = max(longestNone, delay)
		} else if state == importedAll {
			shortestAll = min(shortestAll, delay)
		}
		outcome, leased := retryPickup(t, g, owner, slug, receipt, what, state, status)
		outcomes[outcome]++
		if leased {
			blocked++
		} else if after := g.recordCounts(owner, slug, countTypes); classify(after, want) != importedAll || after["Patient"] != 1 {
			t.Errorf("%s: after the retry the record holds %v, want exactly %v and one Patient", what, after, want)
		}
		t.Logf("%s: after restart %s imported, drop-off %s; retry: %s", what, state, status, outcome)
	}
	t.Logf("outcomes: %v", outcomes)
	if blocked > 0 {
		// The crashed pick-up's lease (dopu Options.LeaseTTL, 10 minutes by
		// default and not configurable) outlives the process that held it:
		// the owner can neither pick up nor reject the drop-off until then.
		t.Errorf("in %d of %d rounds the owner could not retry the pick-up after the crash: "+
			"409 \"a pick-up of this drop-off is in progress\" from a pick-up that died with the process; "+
			"its lease blocks pick-up and reject for 10 minutes", blocked, rounds)
	}
}

// retryPickup is the owner picking the drop-off up again after the crash.
// It returns what happened, in words, and whether a dead pick-up's lease
// refused it.
func retryPickup(t *testing.T, g *gatewayProcess, owner, slug, receipt, what string, state importState, status string) (string, bool) {
	t.Helper()
	res := g.do("POST", g.apex(pickupPath(slug, receipt)), owner, nil)
	switch {
	case status == "picked-up":
		if res.status != http.StatusConflict {
			t.Errorf("%s: picking up a picked-up drop-off answered %d: %.300s", what, res.status, res.raw)
		}
		return "already picked up (409)", false
	case res.status == http.StatusConflict && strings.Contains(outcomeText(res), "in progress"):
		// The same lease keeps the owner from rejecting it too.
		rej := g.do("POST", g.apex("/pfr/v1/records/"+slug+"/dropoffs/"+receipt+"/reject"), owner, map[string]any{"reason": "crash test"})
		return fmt.Sprintf("blocked by the dead pick-up's lease (409; reject: %d %s)", rej.status, outcomeText(rej)), true
	case res.status != http.StatusOK:
		t.Errorf("%s: retrying the pick-up answered %d: %.300s", what, res.status, res.raw)
		return fmt.Sprintf("refused (%d)", res.status), false
	}
	resumed, _ := res.body["resumed"].(bool)
	if resumed != (state == importedAll) {
		t.Errorf("%s: the retry answered resumed=%v with %s already imported: %.300s", what, resumed, state, res.raw)
	}
	if st := g.receiptStatus(receipt); st != "picked-up" {
		t.Errorf("%s: the retry answered 200 but the drop-off is %q", what, st)
	}
	if resumed {
		return "resumed (200, marked picked up without a second import)", false
	}
	return "picked up (200)", false
}

// outcomeText is the diagnostics of an OperationOutcome answer.
func outcomeText(r response) string {
	var parts []string
	issues, _ := r.body["issue"].([]any)
	for _, i := range issues {
		m, _ := i.(map[string]any)
		if d, ok := m["diagnostics"].(string); ok {
			parts = append(parts, d)
		}
	}
	return strings.Join(parts, "; ")
}

// dropOffReceipt drops raw off for the record without a token and returns
// the receipt.
func (g *gatewayProcess) dropOffReceipt(slug string, raw []byte) string {
	g.t.Helper()
	res := g.do("POST", g.recordURL(slug, ""), "", raw).expect(g.t, http.StatusAccepted, "drop off for "+slug)
	id := res.header.Get("X-Pfr-Receipt")
	if id == "" {
		g.t.Fatalf("drop off for %s: no receipt header", slug)
	}
	return id
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
