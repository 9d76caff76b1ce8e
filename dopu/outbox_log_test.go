package dopu

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// TestRetryLoggedOnceStored: "will retry" is logged only once the new
// schedule is stored, never while the attempt's lease still holds the
// alert: a crash right after the line (what crashtest's
// TestSIGKILLWithWebhookDown does) finds the alert due at the logged time,
// not held by a dead process's lease for AlertLease.
func TestRetryLoggedOnceStored(t *testing.T) {
	c := testkit.NewClock()
	port := testkit.Reserve(t) // held, never listening: every attempt is refused
	var f *fixture
	var dropOff string
	lines := 0
	core, logs := observer.New(zapcore.InfoLevel)
	logger := zap.New(zapcore.RegisterHooks(core, func(e zapcore.Entry) error {
		if e.Message != "drop-off alert not delivered; will retry" {
			return nil
		}
		lines++
		a := getAlert(t, f, dropOff)
		if a.Lease != "" || a.Attempts != lines || !a.NextAttempt.After(c.Now()) {
			t.Errorf("line %d logged while the alert is %+v: not yet rescheduled", lines, a)
		}
		return nil
	}))
	opts := Options{Now: c.Now, Logger: logger, Webhook: webhookTo("http://" + port.Addr() + "/hook"),
		RetryBase: time.Minute, RetryCap: time.Hour}
	f = newFixture(t, Limits{}, opts)
	f.clock = c
	dropOff = f.mustDrop("rec1", testkit.ReadFHIR(t, ipsPath), "192.0.2.1").ID
	for attempt := 1; attempt <= 3; attempt++ {
		if _, err := f.svc.DeliverDue(context.Background()); err != nil {
			t.Fatal(err)
		}
		c.Advance(time.Hour)
	}
	if lines != 3 {
		t.Fatalf("%d retry lines for 3 failed attempts", lines)
	}
	for _, e := range logs.FilterMessage("drop-off alert not delivered; will retry").All() {
		if _, ok := e.ContextMap()["next_attempt"]; !ok {
			t.Errorf("retry line without next_attempt: %v", e.ContextMap())
		}
	}
}
