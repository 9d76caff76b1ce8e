package dopu

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/egress"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

const hookSecret = "whsec-test-secret"

// receiver is a webhook endpoint on 127.0.0.1 that verifies signatures.
type receiver struct {
	t      *testing.T
	clock  *testkit.Clock
	mu     sync.Mutex
	got    []AlertPayload
	bodies []string
	keys   []string // Idempotency-Key of each delivery
	bad    int
	status int
	hits   chan struct{}
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	defer func() {
		select {
		case rc.hits <- struct{}{}:
		default:
		}
	}()
	if err := VerifySignature(r.Header.Get(SignatureHeader), body, hookSecret, rc.clock.Now(), 5*time.Minute); err != nil {
		rc.bad++
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	if rc.status != 0 {
		w.WriteHeader(rc.status)
		return
	}
	var p AlertPayload
	if err := json.Unmarshal(body, &p); err != nil {
		rc.t.Errorf("payload: %v", err)
	}
	rc.got = append(rc.got, p)
	rc.bodies = append(rc.bodies, string(body))
	rc.keys = append(rc.keys, r.Header.Get(IdempotencyKeyHeader))
}

func (rc *receiver) delivered() []AlertPayload {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]AlertPayload(nil), rc.got...)
}

func newReceiver(t *testing.T, c *testkit.Clock) *receiver {
	return &receiver{t: t, clock: c, hits: make(chan struct{}, 1)}
}

// serveOn starts h on addr (an address with port 0: the kernel picks),
// closed at the end of the test.
func serveOn(t *testing.T, addr string, h http.Handler) *httptest.Server {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listening on %s: %v", addr, err)
	}
	return serveListener(t, l, h)
}

// serveListener starts h on l, closed at the end of the test.
func serveListener(t *testing.T, l net.Listener, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

func webhookTo(url string) func(context.Context, string) (WebhookTarget, error) {
	return func(_ context.Context, record string) (WebhookTarget, error) {
		if record == "no-hook" {
			return WebhookTarget{}, nil
		}
		return WebhookTarget{URL: url, Secret: hookSecret, Slug: "slug-of-" + record}, nil
	}
}

func outboxLen(t *testing.T, f *fixture) int { return keyCount(t, f.kv)["dopu/outbox"] }

func TestAlertSignedAndWithoutClinicalContent(t *testing.T) {
	c := testkit.NewClock()
	rc := newReceiver(t, c)
	srv := serveOn(t, "127.0.0.1:0", rc)
	f := newFixture(t, Limits{}, Options{Now: c.Now, Webhook: webhookTo(srv.URL + "/hook")})
	f.clock = c
	r := f.mustDrop("rec1", testkit.ReadFHIR(t, ipsPath), "192.0.2.1")
	f.mustDrop("no-hook", testkit.ReadFHIR(t, ipsPath), "192.0.2.1")
	if outboxLen(t, f) != 2 {
		t.Fatalf("outbox holds %d, want 2", outboxLen(t, f))
	}
	n, err := f.svc.DeliverDue(context.Background())
	if err != nil || n != 1 {
		t.Fatalf("delivered %d (%v), want 1", n, err)
	}
	got := rc.delivered()
	if len(got) != 1 || rc.bad != 0 {
		t.Fatalf("receiver got %d alerts, %d badly signed", len(got), rc.bad)
	}
	p := got[0]
	if p.Record != "rec1" || p.DropOff != r.ID || p.Summary.BundleType != "document" ||
		p.Summary.ResourceCounts["Observation"] != 7 || p.Summary.Sender.IP != "192.0.2.1" || !p.Received.Equal(r.Received) {
		t.Errorf("payload %+v", p)
	}
	for _, secret := range []string{"DeLarosa", "Martha", "1972", "574687583", "urn:uuid"} {
		if strings.Contains(rc.bodies[0], secret) {
			t.Errorf("the alert carries clinical content %q: %s", secret, rc.bodies[0])
		}
	}
	// Both alerts are gone: one delivered, one for a record without webhook.
	if n := outboxLen(t, f); n != 0 {
		t.Errorf("outbox holds %d after delivery", n)
	}
}

func TestAlertSurvivesReceiverDownAndRestart(t *testing.T) {
	c := testkit.NewClock()
	port := testkit.Reserve(t) // held, never listening yet: connections are refused, and nobody else gets it
	opts := Options{Now: c.Now, Webhook: webhookTo("http://" + port.Addr() + "/hook"), RetryBase: time.Minute, RetryCap: time.Hour}
	f := newFixture(t, Limits{}, opts)
	f.clock = c
	r := f.mustDrop("rec1", testkit.ReadFHIR(t, ipsPath), "192.0.2.1")

	for attempt := 1; attempt <= 3; attempt++ {
		if n, err := f.svc.DeliverDue(context.Background()); err != nil || n != 0 {
			t.Fatalf("attempt %d: delivered %d, %v", attempt, n, err)
		}
		a := getAlert(t, f, r.ID)
		if a.Attempts != attempt || a.LastError == "" {
			t.Fatalf("after attempt %d: %+v", attempt, a)
		}
		// Backoff: RetryBase doubled per attempt, jitter in its upper half.
		wait := a.NextAttempt.Sub(c.Now())
		max := time.Minute << (attempt - 1)
		if wait < max/2 || wait > max {
			t.Errorf("attempt %d: next in %s, want within [%s, %s]", attempt, wait, max/2, max)
		}
		// Not due yet: nothing is attempted.
		if _, err := f.svc.DeliverDue(context.Background()); err != nil || getAlert(t, f, r.ID).Attempts != attempt {
			t.Fatalf("an alert not due was attempted")
		}
		c.Advance(wait)
	}

	// The gateway restarts: the alert is still in the outbox.
	f.reopen(Limits{}, opts)
	if outboxLen(t, f) != 1 {
		t.Fatal("the alert did not survive the restart")
	}
	// The receiver comes back on the same address.
	rc := newReceiver(t, c)
	l, err := port.Listen()
	if err != nil {
		t.Fatalf("listening on the held port %s: %v", port.Addr(), err)
	}
	serveListener(t, l, rc)
	if n, err := f.svc.DeliverDue(context.Background()); err != nil || n != 1 {
		t.Fatalf("after the receiver came back: delivered %d, %v", n, err)
	}
	if got := rc.delivered(); len(got) != 1 || got[0].DropOff != r.ID {
		t.Errorf("receiver got %+v", got)
	}
	if outboxLen(t, f) != 0 {
		t.Error("alert kept after delivery")
	}
}

func TestAlertRetriesOnErrorsAndCapsBackoff(t *testing.T) {
	c := testkit.NewClock()
	rc := newReceiver(t, c)
	rc.status = http.StatusInternalServerError
	srv := serveOn(t, "127.0.0.1:0", rc)
	lookups := 0
	opts := Options{Now: c.Now, RetryBase: time.Minute, RetryCap: 10 * time.Minute,
		Webhook: func(ctx context.Context, record string) (WebhookTarget, error) {
			lookups++
			if lookups == 1 {
				return WebhookTarget{}, errors.New("tenancy unavailable")
			}
			return WebhookTarget{URL: srv.URL, Secret: hookSecret}, nil
		}}
	f := newFixture(t, Limits{}, opts)
	f.clock = c
	r := f.mustDrop("rec1", testkit.ReadFHIR(t, ipsPath), "192.0.2.1")
	for i := 1; i <= 8; i++ {
		f.svc.DeliverDue(context.Background())
		a := getAlert(t, f, r.ID)
		if a.Attempts != i {
			t.Fatalf("attempt %d: %+v", i, a)
		}
		if wait := a.NextAttempt.Sub(c.Now()); wait > 10*time.Minute {
			t.Errorf("backoff %s beyond the cap", wait)
		}
		c.Advance(10 * time.Minute)
	}
	if !strings.Contains(getAlert(t, f, r.ID).LastError, "500") {
		t.Errorf("last error %q", getAlert(t, f, r.ID).LastError)
	}
	// A signature made with another secret is refused by the receiver.
	if rc.bad != 0 {
		t.Errorf("%d deliveries badly signed", rc.bad)
	}
	// Once the drop-off is picked up, the alert is dropped without a call.
	p, err := f.svc.BeginPickup(context.Background(), "rec1", r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	if outboxLen(t, f) != 0 {
		t.Error("alert of a picked-up drop-off kept")
	}
}

func TestAlertDroppedWhenDropOffNoLongerPending(t *testing.T) {
	c := testkit.NewClock()
	calls := 0
	srv := serveOn(t, "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { calls++ }))
	f := newFixture(t, Limits{TTL: time.Hour}, Options{Now: c.Now, Webhook: webhookTo(srv.URL)})
	f.clock = c
	f.mustDrop("rec1", testkit.ReadFHIR(t, ipsPath), "192.0.2.1")
	c.Advance(2 * time.Hour) // expired, though the expiry loop has not run
	if n, err := f.svc.DeliverDue(context.Background()); n != 0 || err != nil || calls != 0 {
		t.Errorf("alert of an expired drop-off: delivered %d, %d calls, %v", n, calls, err)
	}
	if outboxLen(t, f) != 0 {
		t.Error("alert kept")
	}
}

func TestRunDeliversAndStops(t *testing.T) {
	c := testkit.NewClock()
	rc := newReceiver(t, c)
	srv := serveOn(t, "127.0.0.1:0", rc)
	f := newFixture(t, Limits{}, Options{Now: c.Now, Webhook: webhookTo(srv.URL), PollInterval: time.Hour, ExpiryInterval: time.Hour})
	f.clock = c
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.svc.Run(ctx) }()
	// Intake wakes Run: no need to wait for the (hour-long) poll.
	f.mustDrop("rec1", testkit.ReadFHIR(t, ipsPath), "192.0.2.1")
	wait := testkit.WaitContext(t)
	select {
	case <-rc.hits:
	case <-wait.Done():
		cancel()
		<-done
		t.Fatal("Run did not deliver the alert")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-wait.Done():
		t.Fatal("Run did not stop")
	}
	if len(rc.delivered()) != 1 {
		t.Errorf("delivered %d", len(rc.delivered()))
	}
}

func TestVerifySignature(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"record":"r"}`)
	good := Sign(hookSecret, now, body)
	if !strings.HasPrefix(good, "t=1800000000,v1=") {
		t.Errorf("header %q", good)
	}
	if err := VerifySignature(good, body, hookSecret, now.Add(time.Minute), 5*time.Minute); err != nil {
		t.Errorf("good signature: %v", err)
	}
	rotated := good + ",v1=" + strings.Repeat("00", 32)
	if err := VerifySignature(rotated, body, hookSecret, now, time.Minute); err != nil {
		t.Errorf("with an extra v1: %v", err)
	}
	cases := map[string]struct {
		header string
		body   []byte
		secret string
		now    time.Time
		want   error
	}{
		"tampered body":   {good, []byte(`{"record":"s"}`), hookSecret, now, ErrSignatureInvalid},
		"other secret":    {good, body, "other", now, ErrSignatureInvalid},
		"replayed later":  {good, body, hookSecret, now.Add(time.Hour), ErrSignatureExpired},
		"from the future": {good, body, hookSecret, now.Add(-time.Hour), ErrSignatureExpired},
		"moved timestamp": {strings.Replace(good, "t=1800000000", "t=1800003600", 1), body, hookSecret, now.Add(time.Hour), ErrSignatureInvalid},
		"missing":         {"", body, hookSecret, now, ErrSignatureMissing},
		"no v1":           {"t=1800000000", body, hookSecret, now, ErrSignatureMissing},
		"not hex":         {"t=1800000000,v1=zz", body, hookSecret, now, ErrSignatureMissing},
	}
	for name, c := range cases {
		if err := VerifySignature(c.header, c.body, c.secret, c.now, 5*time.Minute); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
}

func getAlert(t *testing.T, f *fixture, id string) *Alert {
	t.Helper()
	var a *Alert
	err := f.svc.store.View(context.Background(), func(tx Tx) error {
		var err error
		a, err = tx.Alert(id)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestAlertToRefusedDestinationsIsDeadNeverDialled sets webhooks at the
// Caddy admin API's address, at 127.0.0.1, at [::1], at a name resolving to
// loopback and at an allowed receiver that redirects to loopback: nothing
// on loopback is dialled, each alert ends dead with its reason in the
// inbox, and an alert to a good receiver queued behind them is delivered
// in the same pass.
func TestAlertToRefusedDestinationsIsDeadNeverDialled(t *testing.T) {
	c := testkit.NewClock()
	var victimHits sync.Mutex
	hits := 0
	victim := serveOn(t, "127.0.0.1:0", http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		victimHits.Lock()
		hits++
		victimHits.Unlock()
	}))
	_, vport, _ := net.SplitHostPort(victim.Listener.Addr().String())
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("no 127.0.0.2: %v", err)
	}
	redirector := serveListener(t, ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://127.0.0.1:"+vport+"/stop", http.StatusFound)
	}))
	_, rport, _ := net.SplitHostPort(redirector.Listener.Addr().String())
	rc := newReceiver(t, c)
	good := serveOn(t, "127.0.0.3:0", rc)

	hooks := map[string]string{
		"admin":    "http://localhost:2019/stop",
		"v4":       "http://127.0.0.1:" + vport + "/hook",
		"v6":       "http://[::1]:" + vport + "/hook",
		"mapped":   "https://[::ffff:127.0.0.1]:" + vport + "/hook",
		"name":     "https://loopback.test:" + vport + "/hook",
		"redirect": "http://public.test:" + rport + "/hook",
		"good":     good.URL + "/hook",
	}
	policy := &egress.Policy{
		Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32"), netip.MustParsePrefix("127.0.0.3/32")},
		LookupNetIP: func(_ context.Context, _, host string) ([]netip.Addr, error) {
			switch host {
			case "localhost", "loopback.test":
				return []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")}, nil
			case "public.test":
				return []netip.Addr{netip.MustParseAddr("127.0.0.2")}, nil
			}
			return nil, errors.New("no such host")
		},
	}
	f := newFixture(t, Limits{}, Options{Now: c.Now, Egress: policy, MaxAttempts: 3, RetryBase: time.Minute, RetryCap: time.Minute,
		Webhook: func(_ context.Context, record string) (WebhookTarget, error) {
			return WebhookTarget{URL: hooks[record], Secret: hookSecret}, nil
		}})
	f.clock = c
	ids := map[string]string{}
	for rec := range hooks {
		ids[rec] = f.mustDrop(rec, testkit.ReadFHIR(t, ipsPath), "192.0.2.1").ID
	}
	if n, err := f.svc.DeliverDue(context.Background()); err != nil || n != 1 {
		t.Fatalf("first pass delivered %d (%v), want the good one", n, err)
	}
	// The redirect is an ordinary failure (the receiver is allowed):
	// retried up to MaxAttempts, then dead.
	for range 3 {
		c.Advance(2 * time.Minute)
		if _, err := f.svc.DeliverDue(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	for rec, id := range ids {
		sums, err := f.svc.List(context.Background(), rec)
		if err != nil || len(sums) != 1 {
			t.Fatalf("%s: inbox %v, %v", rec, sums, err)
		}
		st := sums[0].Alert
		if rec == "good" {
			if st != nil {
				t.Errorf("good: alert still %+v", st)
			}
			continue
		}
		if st == nil || st.State != AlertDead || st.LastError == "" {
			t.Fatalf("%s (%s): alert %+v, want dead with a reason", rec, id, st)
		}
		want := "refused by the outbound policy"
		if rec == "redirect" {
			want = "redirects are not followed"
		}
		if !strings.Contains(st.LastError, want) {
			t.Errorf("%s: last error %q, want it to say %q", rec, st.LastError, want)
		}
		if rec != "redirect" && st.Attempts != 1 {
			t.Errorf("%s: %d attempts, a refused destination is dead at once", rec, st.Attempts)
		}
	}
	victimHits.Lock()
	defer victimHits.Unlock()
	if hits != 0 {
		t.Fatalf("loopback was dialled %d times", hits)
	}
	if len(rc.delivered()) != 1 {
		t.Errorf("good receiver got %d alerts", len(rc.delivered()))
	}
	// The owner fixes the webhook: the dead alert is due again.
	hooks["v4"] = good.URL + "/fixed"
	if n, err := f.svc.ReviveAlerts(context.Background(), "v4"); err != nil || n != 1 {
		t.Fatalf("revived %d, %v", n, err)
	}
	if n, err := f.svc.DeliverDue(context.Background()); err != nil || n != 1 {
		t.Fatalf("after revival delivered %d, %v", n, err)
	}
}
