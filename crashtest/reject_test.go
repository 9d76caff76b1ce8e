package crashtest

import (
	"fmt"
	"net/http"
	"testing"
)

// TestRejectAfterInterruptedPickup kills the gateway between the pick-up's
// upstream transaction and the moment it marks the drop-off picked up, so
// that the record holds all of the Bundle while the drop-off is still
// pending, and then has the owner reject it ("not mine"). A rejected
// drop-off must not be in the record: the gateway either refuses the
// rejection (the data is in; a pick-up finishes it) or takes the data out.
// What it must not do is answer "rejected" to the owner and the sender
// while every resource stays imported.
func TestRejectAfterInterruptedPickup(t *testing.T) {
	t.Parallel()
	f := newPickupFixture(t, "alda-reject")
	// Bounded: the window is a few milliseconds wide; killing as soon as
	// the import shows usually lands in it within a few rounds.
	const attempts = 40
	var hit *crash
	for round := 0; round < attempts && hit == nil; round++ {
		c := f.crashPickup(fmt.Sprintf("reject-%d", round), onceImported)
		f.check(c)
		if c.state == importedAll && c.status == "pending" {
			hit = &c
		}
	}
	if hit == nil {
		t.Fatalf("no kill in %d landed between the import and its marking", attempts)
	}
	t.Logf("%s: the record holds all of the drop-off, which is still pending", hit.describe)

	g := f.g
	rej := g.do("POST", g.apex("/pfr/v1/records/"+hit.slug+"/dropoffs/"+hit.receipt+"/reject"), f.owner, map[string]any{"reason": "not mine"})
	after := f.counts(hit.slug)
	status := g.receiptStatus(hit.receipt)
	switch {
	case rej.Status == http.StatusOK && classify(after, f.want) != importedNone:
		t.Errorf("rejecting a drop-off that an interrupted pick-up had already imported answered 200 and the sender now reads %q, "+
			"but the record still holds %s of it (%v)", status, classify(after, f.want), after)
	case rej.Status == http.StatusOK:
		t.Logf("the rejection took the imported data out; the drop-off is %s", status)
	case rej.Status == http.StatusConflict:
		if status != "pending" {
			t.Errorf("the rejection was refused, yet the drop-off is %q", status)
		}
		// The owner then finishes the pick-up without a second import.
		res := g.do("POST", g.apex(pickupPath(hit.slug, hit.receipt)), f.owner, nil).Expect(t, http.StatusOK, "pick-up after the refused rejection")
		if resumed, _ := res.Body["resumed"].(bool); !resumed {
			t.Errorf("the pick-up after the refused rejection did not resume: %.300s", res.Raw)
		}
		if got := f.counts(hit.slug); classify(got, f.want) != importedAll {
			t.Errorf("after the resumed pick-up the record holds %v, want %v", got, f.want)
		}
	default:
		t.Errorf("rejecting after the interrupted pick-up answered %d: %.300s", rej.Status, rej.Raw)
	}
}
