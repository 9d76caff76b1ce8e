package crashtest

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestSIGKILLDuringPickup drops off the largest Synthea Bundle, starts its
// pick-up and kills the gateway after a random delay, spread from before
// the pick-up starts to after it ends (a first, uninterrupted pick-up
// measures how long one takes), then aimed at where the import commits.
// After each restart the record holds all of the Bundle's resources or
// none, never a part; with none the drop-off is still pending; a picked-up
// drop-off holds all. Then the owner retries: a pending drop-off must be
// picked up (resumed, without a second import, when the data is already
// in), and the counts never double.
func TestSIGKILLDuringPickup(t *testing.T) {
	t.Parallel()
	f := newPickupFixture(t, "alda")
	// The first rounds spread the kill from before the request leaves (0)
	// through the pick-up to after it has answered (1.5 times the
	// reference), jittered: a process just restarted is slower than the
	// warm one measured, so every run lands in different places.
	// Aimed rounds continue (bounded) until one kill has landed between
	// the import and its marking, so that a resumed pick-up is seen.
	const spread, rounds, maxRounds = 8, 16, 40
	aim := newKillAim(f.took)
	outcomes := map[string]int{}
	blocked, interrupted, round := 0, 0, 0
	for ; round < rounds || (interrupted == 0 && round < maxRounds); round++ {
		kill := onceImported
		switch {
		case round == 0:
			kill = afterDelay(0)
		case round < spread:
			kill = afterDelay(time.Duration((1.5*float64(round-1)/(spread-2) + rand.Float64()*0.1) * float64(f.took)))
		case round%2 == 1:
			kill = afterDelay(aim.next())
		}
		c := f.crashPickup(fmt.Sprintf("alda-%d", round), kill)
		f.check(c)
		aim.learn(c)
		if c.state == importedAll && c.status == "pending" {
			interrupted++
		}

		outcome, leased := retryPickup(t, f.g, f.owner, c)
		outcomes[outcome]++
		if leased {
			blocked++
		} else if after := f.counts(c.slug); classify(after, f.want) != importedAll || after["Patient"] != 1 {
			t.Errorf("%s: after the retry the record holds %v, want exactly %v and one Patient", c.describe, after, f.want)
		}
		t.Logf("%s: after restart %s imported, drop-off %s; retry: %s", c.describe, c.state, c.status, outcome)
	}
	t.Logf("outcomes: %v", outcomes)
	if interrupted == 0 {
		t.Errorf("no kill in %d rounds landed between the import and its marking (window %s to %s): the resumed pick-up was not exercised",
			maxRounds, aim.longestNone, aim.shortestAll)
	}
	if blocked > 0 {
		// A crashed pick-up's lease (dopu Options.LeaseTTL, 10 minutes)
		// must not outlive the process that held it.
		t.Errorf("in %d of %d rounds the owner could not retry the pick-up after the crash: "+
			"409 \"a pick-up of this drop-off is in progress\" from a pick-up that died with the process", blocked, round)
	}
}

// retryPickup is the owner picking the drop-off up again after the crash.
// It returns what happened, in words, and whether a dead pick-up's lease
// refused it.
func retryPickup(t *testing.T, g *gatewayProcess, owner string, c crash) (string, bool) {
	t.Helper()
	slug, receipt, what, state, status := c.slug, c.receipt, c.describe, c.state, c.status
	res := g.do("POST", g.apex(pickupPath(slug, receipt)), owner, nil)
	switch {
	case status == "picked-up":
		if res.Status != http.StatusConflict {
			t.Errorf("%s: picking up a picked-up drop-off answered %d: %.300s", what, res.Status, res.Raw)
		}
		return "already picked up (409)", false
	case res.Status == http.StatusConflict && strings.Contains(outcomeText(res), "in progress"):
		// The same lease keeps the owner from rejecting it too.
		rej := g.do("POST", g.apex("/pfr/v1/records/"+slug+"/dropoffs/"+receipt+"/reject"), owner, map[string]any{"reason": "crash test"})
		return fmt.Sprintf("blocked by the dead pick-up's lease (409; reject: %d %s)", rej.Status, outcomeText(rej)), true
	case res.Status != http.StatusOK:
		t.Errorf("%s: retrying the pick-up answered %d: %.300s", what, res.Status, res.Raw)
		return fmt.Sprintf("refused (%d)", res.Status), false
	}
	resumed, _ := res.Body["resumed"].(bool)
	if resumed != (state == importedAll) {
		t.Errorf("%s: the retry answered resumed=%v with %s already imported: %.300s", what, resumed, state, res.Raw)
	}
	if st := g.receiptStatus(receipt); st != "picked-up" {
		t.Errorf("%s: the retry answered 200 but the drop-off is %q", what, st)
	}
	if resumed {
		return "resumed (200, marked picked up without a second import)", false
	}
	return "picked up (200)", false
}
