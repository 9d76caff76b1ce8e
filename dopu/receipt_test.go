package dopu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

func TestHTTPError(t *testing.T) {
	for err, want := range map[error]int{
		fmt.Errorf("x: %w", ErrNotFound):          404,
		fmt.Errorf("x: %w", ErrNotPending):        409,
		fmt.Errorf("x: %w", ErrPickupInProgress):  409,
		fmt.Errorf("x: %w", ErrLeaseLost):         409,
		fhir.Errorf(429, fhir.CodeThrottled, "x"): 429,
		errors.New("disk on fire"):                500,
	} {
		fe := HTTPError(err)
		if fe.Status != want {
			t.Errorf("%v: %d, want %d", err, fe.Status, want)
		}
		if want == 500 && strings.Contains(fe.Outcome().Issue[0].Diagnostics, "disk") {
			t.Error("the cause of a 500 leaked")
		}
	}
	if !strings.Contains(ReceiptOutcome(&Receipt{ID: "abc", Status: StatusPending}, "https://x/s/abc").Issue[0].Diagnostics, "https://x/s/abc") {
		t.Error("receipt outcome lacks the status URL")
	}
}

func TestStatusHandler(t *testing.T) {
	f := newFixture(t, Limits{}, Options{})
	r := f.mustDrop("rec1", testkit.ReadFHIR(t, ipsPath), "192.0.2.1")
	h := f.svc.StatusHandler(func(req *http.Request) string { return strings.TrimPrefix(req.URL.Path, "/status/") })
	get := func(method, path string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(method, path, nil))
		return w
	}
	w := get("GET", "/status/"+r.ID)
	if w.Code != 200 || w.Header().Get("Cache-Control") != "no-store" {
		t.Fatalf("%d %v", w.Code, w.Header())
	}
	var params struct {
		ResourceType string `json:"resourceType"`
		Parameter    []map[string]any
	}
	if err := json.Unmarshal(w.Body.Bytes(), &params); err != nil || params.ResourceType != "Parameters" || len(params.Parameter) != 2 || params.Parameter[1]["valueCode"] != "pending" {
		t.Errorf("body %s", w.Body)
	}
	// Nothing but the status: no name, no counts, no record.
	for _, leak := range []string{"DeLarosa", "rec1", "Observation", "192.0.2.1"} {
		if strings.Contains(w.Body.String(), leak) {
			t.Errorf("status page reveals %q", leak)
		}
	}
	if w := get("GET", "/status/unknown"); w.Code != 404 || !strings.Contains(w.Body.String(), "OperationOutcome") {
		t.Errorf("unknown receipt: %d %s", w.Code, w.Body)
	}
	if w := get("POST", "/status/"+r.ID); w.Code != 405 {
		t.Errorf("POST: %d", w.Code)
	}
	f.svc.Reject(context.Background(), "rec1", r.ID, "no")
	if w := get("GET", "/status/"+r.ID); !strings.Contains(w.Body.String(), `"rejected"`) || strings.Contains(w.Body.String(), `"no"`) {
		t.Errorf("after reject: %s", w.Body)
	}
	// A reason for the sender is shown; the person's own is not.
	r2 := f.mustDrop("rec1", []byte(`{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Basic"}}]}`), "192.0.2.9")
	if err := f.svc.RejectTelling(context.Background(), "rec1", r2.ID, "my ex", "this is not the patient's record"); err != nil {
		t.Fatal(err)
	}
	if w := get("GET", "/status/"+r2.ID); !strings.Contains(w.Body.String(), `"this is not the patient's record"`) || strings.Contains(w.Body.String(), "my ex") {
		t.Errorf("after reject with a sender reason: %s", w.Body)
	}
}

func TestConcurrentSameBody(t *testing.T) {
	f := newFixture(t, Limits{}, Options{})
	body := testkit.ReadFHIR(t, ipsPath)
	var wg sync.WaitGroup
	ids := make([]string, 8)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := f.drop("rec1", body, fmt.Sprintf("192.0.2.%d", i))
			if err != nil {
				t.Error(err)
				return
			}
			ids[i] = r.ID
		}()
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("concurrent drop-offs of the same body got receipts %v", ids)
		}
	}
	if n := keyCount(t, f.kv)["dopu/dropoffs"]; n != 1 {
		t.Errorf("%d drop-offs stored", n)
	}
}

func TestSenderFieldsBounded(t *testing.T) {
	f := newFixture(t, Limits{}, Options{})
	long := strings.Repeat("é", 5000)
	r, err := f.svc.Intake(context.Background(), "rec1", fhir.ContentType, "", strings.NewReader(string(testkit.ReadFHIR(t, ipsPath))),
		Sender{IP: "192.0.2.1", UserAgent: long, Issuer: long, Subject: long, ClientID: long})
	if err != nil {
		t.Fatal(err)
	}
	s, _, _ := f.svc.Get(context.Background(), "rec1", r.ID)
	if len(s.Sender.UserAgent) > maxUserAgent || len(s.Sender.Issuer) > maxSenderField || !strings.HasPrefix(long, s.Sender.Subject) {
		t.Errorf("sender fields not bounded: %d %d", len(s.Sender.UserAgent), len(s.Sender.Issuer))
	}
	_, err = f.drop("rec1", []byte(`{"resourceType":"Bundle","type":"collection"}`), "192.0.2.1")
	wantFHIRError(t, err, 422, "no entries")
}

func TestPurge(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, Limits{TTL: 48 * time.Hour, Retention: 24 * time.Hour}, Options{})
	body := testkit.ReadFHIR(t, ipsPath)
	rejected := f.mustDrop("rec1", body, "192.0.2.1")
	expired := f.mustDrop("rec2", body, "192.0.2.1")
	if err := f.svc.Reject(ctx, "rec1", rejected.ID, "no"); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Hour)
	if n, _ := f.svc.Purge(ctx); n != 0 {
		t.Errorf("purged %d within retention", n)
	}
	f.clock.Advance(48 * time.Hour)
	if n, err := f.svc.Expire(ctx); n != 1 || err != nil {
		t.Fatalf("expired %d, %v", n, err)
	}
	kept := f.mustDrop("rec3", body, "192.0.2.1")
	f.clock.Advance(25 * time.Hour)
	if n, _ := f.svc.Purge(ctx); n != 2 {
		t.Errorf("purged %d, want 2", n)
	}
	for _, id := range []string{rejected.ID, expired.ID} {
		if _, err := f.svc.Status(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Errorf("purged %s: %v", id, err)
		}
	}
	if st, _ := f.svc.Status(ctx, kept.ID); st != StatusPending {
		t.Errorf("pending drop-off touched by purge: %s", st)
	}
	for name, n := range keyCount(t, f.kv) {
		want := 1
		if name == "dopu/finished" {
			want = 0
		}
		if n != want {
			t.Errorf("%s: %d keys, want %d", name, n, want)
		}
	}
}

// blockingReader blocks until released, like a slow sender.
type blockingReader struct{ release chan struct{} }

func (b blockingReader) Read(p []byte) (int, error) { <-b.release; return 0, io.EOF }

func TestConcurrentIntakesBounded(t *testing.T) {
	f := newFixture(t, Limits{Concurrent: 2, SourceRate: Rate{PerMinute: -1}}, Options{})
	release := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.svc.Intake(context.Background(), "rec1", fhir.ContentType, "", blockingReader{release}, Sender{})
		}()
	}
	// Wait until both slow senders hold the two slots.
	testkit.WaitFor(t, "both slow senders to hold a slot", time.Millisecond, func() error {
		if n := len(f.svc.parsing); n < 2 {
			return fmt.Errorf("%d hold one", n)
		}
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := f.svc.Intake(ctx, "rec1", fhir.ContentType, "", strings.NewReader("{}"), Sender{})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("third intake while two are reading: %v, want it to wait (and give up with its context)", err)
	}
	close(release)
	wg.Wait()
	if _, err := f.drop("rec1", testkit.ReadFHIR(t, ipsPath), "192.0.2.1"); err != nil {
		t.Errorf("after the slow senders left: %v", err)
	}
}
