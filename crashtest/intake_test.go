package crashtest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// markerSystem is the Bundle.identifier system that names each Bundle the
// intake test sends, so that a stored drop-off can be traced to its sender.
const markerSystem = "urn:pfr:crashtest"

// sentBundle is what a sender posted: its canonical hash and counts.
type sentBundle struct {
	hash   string
	counts map[string]int
}

// intakeBundle returns a distinct collection Bundle named marker, with a
// varying number of Observations and a Basic whose text pads it to a
// varying size (about 1 KB to 60 KB), and what should be stored of it.
func intakeBundle(marker string, n int) ([]byte, sentBundle, error) {
	observations := 1 + n%17
	entries := make([]any, 0, observations+1)
	for i := range observations {
		entries = append(entries, map[string]any{"resource": map[string]any{
			"resourceType": "Observation", "status": "final",
			"code": map[string]any{"text": fmt.Sprintf("%s obs %d", marker, i)},
		}})
	}
	padding := strings.Repeat(marker+" ", 1+(n*7919)%60000/len(marker))
	entries = append(entries, map[string]any{"resource": map[string]any{
		"resourceType": "Basic",
		"code":         map[string]any{"text": padding},
	}})
	raw, err := json.Marshal(map[string]any{
		"resourceType": "Bundle", "type": "collection",
		"identifier": map[string]any{"system": markerSystem, "value": marker},
		"entry":      entries,
	})
	if err != nil {
		return nil, sentBundle{}, fmt.Errorf("encoding bundle %s: %w", marker, err)
	}
	hash, err := canonicalHash(raw)
	if err != nil {
		return nil, sentBundle{}, err
	}
	return raw, sentBundle{hash: hash, counts: map[string]int{"Observation": observations, "Basic": 1}}, nil
}

// canonicalHash is the SHA-256 of a JSON document re-encoded with sorted
// keys and no spacing: equal for equal documents however they are spelled.
func canonicalHash(raw []byte) (string, error) {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", fmt.Errorf("not JSON: %w", err)
	}
	canon, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("re-encoding: %w", err)
	}
	sum := sha256.Sum256(canon)
	return hex.EncodeToString(sum[:]), nil
}

// bundleMarker returns the marker a stored Bundle carries.
func bundleMarker(raw []byte) string {
	var b struct {
		Identifier struct {
			System string `json:"system"`
			Value  string `json:"value"`
		} `json:"identifier"`
	}
	if json.Unmarshal(raw, &b) != nil || b.Identifier.System != markerSystem {
		return ""
	}
	return b.Identifier.Value
}

// intakeLedger is what the senders know: every Bundle sent (by marker) and
// every receipt they were given (marker → receipt id).
type intakeLedger struct {
	mu       sync.Mutex
	sent     map[string]sentBundle
	acked    map[string]string
	refusals []string
}

// TestSIGKILLDuringIntake drops off distinct Bundles from several senders
// at once, without any token, kills the gateway with SIGKILL at a random
// moment, restarts it, and checks: every drop-off that got its 202 is in
// the owner's inbox and its receipt says pending; every drop-off in the
// inbox, acknowledged or not, is whole (its preview is exactly the Bundle
// some sender posted, its summary counts its resources).
func TestSIGKILLDuringIntake(t *testing.T) {
	t.Parallel()
	g := newGateway(t)
	owner := g.token("intake-owner")
	const slug = "intake"
	g.createRecord(owner, slug, map[string]any{
		"resourceType": "Patient", "name": []any{map[string]any{"family": "Crash", "given": []any{"Ida"}}},
		"gender": "female", "birthDate": "1980-04-02",
	})
	ledger := &intakeLedger{sent: map[string]sentBundle{}, acked: map[string]string{}}
	verified := map[string]bool{} // drop-off ids whose preview was checked
	const rounds, senders, perSender = 4, 4, 400
	for round := range rounds {
		ackedBefore := len(ledger.acked)
		runSenders(t, g, slug, ledger, round, senders, perSender)
		g.restart()

		ledger.mu.Lock()
		if len(ledger.refusals) > 0 {
			t.Errorf("round %d: drop-offs refused before the kill: %v", round, ledger.refusals)
		}
		acked := make(map[string]string, len(ledger.acked))
		for marker, id := range ledger.acked {
			acked[marker] = id
		}
		ledger.mu.Unlock()
		if len(acked) == ackedBefore {
			t.Fatalf("round %d: no drop-off was acknowledged before the kill", round)
		}

		inbox := g.inbox(owner, slug)
		for marker, id := range acked {
			item, ok := inbox[id]
			if !ok {
				t.Errorf("round %d: drop-off %s (%s) got a 202 but is not in the inbox after SIGKILL", round, id, marker)
				continue
			}
			if item["status"] != "pending" {
				t.Errorf("round %d: drop-off %s is %v in the inbox, want pending", round, id, item["status"])
			}
		}
		// The sender's view of this round's receipts.
		for marker, id := range acked {
			if _, old := verified[id]; old {
				continue
			}
			if st := g.receiptStatus(id); st != "pending" {
				t.Errorf("round %d: receipt %s (%s) says %q after SIGKILL, want pending", round, id, marker, st)
			}
		}
		// Every stored drop-off is whole, acknowledged or not.
		receiptOf := make(map[string]string, len(acked))
		for marker, id := range acked {
			receiptOf[id] = marker
		}
		unacked := 0
		for id, item := range inbox {
			if verified[id] {
				continue
			}
			verified[id] = true
			marker := checkStoredDropOff(t, g, owner, slug, id, item, ledger)
			if m, ok := receiptOf[id]; ok && m != marker {
				t.Errorf("round %d: receipt %s was given for %s but holds %s", round, id, m, marker)
			}
			if _, ok := receiptOf[id]; !ok {
				unacked++
			}
		}
		t.Logf("round %d: %d drop-offs acknowledged in all, %d in the inbox (%d stored whose 202 the kill cut off)",
			round, len(acked), len(inbox), unacked)
	}
}

// runSenders drops off Bundles from several goroutines as fast as they can
// and kills the gateway at a random moment once some were acknowledged.
// The senders stop at the first transport error (the kill) or after
// perSender Bundles.
func runSenders(t *testing.T, g *gatewayProcess, slug string, ledger *intakeLedger, round, senders, perSender int) {
	ctx, cancel := context.WithCancel(testkit.WaitContext(t))
	defer cancel()
	acks := make(chan struct{}, senders*perSender)
	var wg sync.WaitGroup
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perSender {
				marker := fmt.Sprintf("r%d-s%d-b%d", round, s, i)
				raw, want, err := intakeBundle(marker, round*100000+s*1000+i)
				if err != nil {
					t.Error(err)
					return
				}
				ledger.mu.Lock()
				ledger.sent[marker] = want
				ledger.mu.Unlock()
				res, err := g.send(ctx, "POST", g.recordURL(slug, ""), "", raw)
				if err != nil {
					return // the kill cut the connection
				}
				ledger.mu.Lock()
				if res.Status == http.StatusAccepted {
					ledger.acked[marker] = res.Header.Get("X-Pfr-Receipt")
				} else {
					ledger.refusals = append(ledger.refusals, fmt.Sprintf("%s: %d %.200s", marker, res.Status, res.Raw))
				}
				ledger.mu.Unlock()
				if res.Status == http.StatusAccepted {
					acks <- struct{}{}
				}
			}
		}()
	}
	// Kill once a few drop-offs are in, at a random moment after that.
	g.killOnceAcked(acks, 3, 400*time.Millisecond)
	wg.Wait()
}

// killOnceAcked kills the gateway at a random moment (up to jitter) after n
// acknowledgements arrived on acks (or half a minute passed).
func (g *gatewayProcess) killOnceAcked(acks <-chan struct{}, n int, jitter time.Duration) {
	waitAcks := time.After(30 * time.Second)
	for i := 0; i < n; i++ {
		select {
		case <-acks:
		case <-waitAcks:
			i = n
		}
	}
	time.Sleep(rand.N(jitter))
	g.kill()
}

// checkStoredDropOff previews one drop-off and checks that it is exactly a
// Bundle some sender posted, with the right summary. It returns the
// Bundle's marker.
func checkStoredDropOff(t *testing.T, g *gatewayProcess, owner, slug, id string, item map[string]any, ledger *intakeLedger) string {
	t.Helper()
	res := g.do("GET", g.apex("/pfr/v1/records/"+slug+"/dropoffs/"+id), owner, nil)
	if res.Status != http.StatusOK {
		t.Errorf("drop-off %s is listed but its preview answers %d: %.300s", id, res.Status, res.Raw)
		return ""
	}
	var preview struct {
		Bundle json.RawMessage `json:"bundle"`
	}
	if err := json.Unmarshal(res.Raw, &preview); err != nil || len(preview.Bundle) == 0 {
		t.Errorf("drop-off %s: preview without a Bundle (%v): %.300s", id, err, res.Raw)
		return ""
	}
	marker := bundleMarker(preview.Bundle)
	ledger.mu.Lock()
	want, ok := ledger.sent[marker]
	ledger.mu.Unlock()
	if !ok {
		t.Errorf("drop-off %s holds a Bundle nobody sent (marker %q): %.300s", id, marker, preview.Bundle)
		return marker
	}
	if got, err := canonicalHash(preview.Bundle); err != nil || got != want.hash {
		t.Errorf("drop-off %s (%s): the stored Bundle differs from the one sent (%v)", id, marker, err)
	}
	counts, _ := item["resourceCounts"].(map[string]any)
	for typ, n := range want.counts {
		if counts[typ] != float64(n) {
			t.Errorf("drop-off %s (%s): summary counts %v, sent %v", id, marker, counts, want.counts)
			break
		}
	}
	if len(counts) != len(want.counts) {
		t.Errorf("drop-off %s (%s): summary counts %v, sent %v", id, marker, counts, want.counts)
	}
	return marker
}
