package crashtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/dopu"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// alertReceiver is a record's webhook endpoint: it keeps the alerts whose
// signature verifies and counts the others.
type alertReceiver struct {
	secret string
	mu     sync.Mutex
	alerts map[string]string // drop-off id → raw alert body
	bad    []string
}

func (a *alertReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, "unreadable", http.StatusBadRequest)
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := dopu.VerifySignature(r.Header.Get(dopu.SignatureHeader), body, a.secret, time.Now(), 5*time.Minute); err != nil {
		a.bad = append(a.bad, err.Error())
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	var alert dopu.AlertPayload
	if err := json.Unmarshal(body, &alert); err != nil || alert.DropOff == "" {
		a.bad = append(a.bad, fmt.Sprintf("not an alert: %.200s", body))
		http.Error(w, "not an alert", http.StatusBadRequest)
		return
	}
	a.alerts[alert.DropOff] = string(body)
}

// received returns the alerts received so far.
func (a *alertReceiver) received() (map[string]string, []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]string, len(a.alerts))
	for k, v := range a.alerts {
		out[k] = v
	}
	return out, append([]string(nil), a.bad...)
}

// TestSIGKILLWithWebhookDown sets a record's webhook to a loopback port
// where nothing listens, drops Bundles off, waits until a delivery has
// failed, kills the gateway twice, and only then starts the receiver on
// that port: every alert arrives, signed with the record's secret, without
// clinical content. The outbox survived the kills.
//
// The wait is bounded by the default backoff: the first retry comes 15 to
// 30 s (dopu Options.RetryBase 30 s, drawn from its upper half) after the
// failed attempt, found by a poll every 5 s; none of these is configurable
// from the Caddyfile.
func TestSIGKILLWithWebhookDown(t *testing.T) {
	t.Parallel()
	g := newGateway(t)
	owner := g.token("hook-owner")
	const slug = "hooked"
	g.createRecord(owner, slug, map[string]any{
		"resourceType": "Patient", "name": []any{map[string]any{"family": "Hook", "given": []any{"Wendy"}}},
		"gender": "female", "birthDate": "1975-11-30",
	})
	receiver := &alertReceiver{secret: "crash-test-webhook-secret-0123456789", alerts: map[string]string{}}
	hookPort := testkit.Reserve(t) // held: nothing else gets it meanwhile
	hookURL := "http://" + hookPort.Addr() + "/alerts"
	g.do("PUT", g.apex("/pfr/v1/records/"+slug+"/webhook"), owner, map[string]any{"url": hookURL, "secret": receiver.secret}).
		Expect(t, http.StatusOK, "set the webhook")

	const clinical = "CLINICAL-CONTENT-MUST-NOT-LEAVE"
	var receipts []string
	for i := range 3 {
		raw, err := json.Marshal(map[string]any{
			"resourceType": "Bundle", "type": "collection",
			"entry": []any{map[string]any{"resource": map[string]any{
				"resourceType": "Observation", "status": "final",
				"code": map[string]any{"text": fmt.Sprintf("%s %d", clinical, i)},
			}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		receipts = append(receipts, g.dropOffReceipt(slug, raw))
	}

	// The first delivery of each alert fails (nothing listens) before the
	// kill: what survives is an outbox entry waiting for its retry.
	testkit.WaitFor(t, "a failed delivery logged for every drop-off", 100*time.Millisecond, func() error {
		failed := 0
		for _, id := range receipts {
			if g.logHasLine("drop-off alert not delivered; will retry", id) {
				failed++
			}
		}
		if failed < len(receipts) {
			return fmt.Errorf("%d of %d logged:\n%s", failed, len(receipts), g.logTail(20))
		}
		return nil
	})
	g.restart()
	g.restart()

	l, err := hookPort.Listen()
	if err != nil {
		t.Fatalf("listening on the webhook port %d: %v", hookPort.Number, err)
	}
	srv := &http.Server{Handler: receiver, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })

	started := time.Now()
	var alerts map[string]string
	var bad []string
	for deadline := started.Add(75 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		alerts, bad = receiver.received()
		if len(alerts) >= len(receipts) {
			break
		}
	}
	if len(bad) > 0 {
		t.Errorf("the receiver refused deliveries: %v", bad)
	}
	for _, id := range receipts {
		body, ok := alerts[id]
		if !ok {
			t.Errorf("no alert for drop-off %s within 75s of the receiver coming back:\n%s", id, g.logTail(20))
			continue
		}
		var alert dopu.AlertPayload
		if err := json.Unmarshal([]byte(body), &alert); err != nil {
			t.Fatal(err)
		}
		if alert.Record == "" || alert.Summary.ResourceCounts["Observation"] != 1 || alert.Summary.BundleType != "collection" {
			t.Errorf("alert for %s: %s", id, body)
		}
		if strings.Contains(body, clinical) {
			t.Errorf("the alert for %s carries clinical content: %s", id, body)
		}
		// The alert is about a drop-off still waiting in the inbox.
		if st := g.receiptStatus(id); st != "pending" {
			t.Errorf("drop-off %s is %q after the kills, want pending", id, st)
		}
	}
	t.Logf("%d alerts delivered %s after the receiver came back", len(alerts), time.Since(started).Round(time.Second))
}
