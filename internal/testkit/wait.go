package testkit

import (
	"context"
	"errors"
	"testing"
	"time"
)

// The rule for a test that waits for something to happen: it polls until
// the thing happened or the test's own deadline (go test -timeout) is
// near, never for a fixed wall-clock budget, which a loaded machine (CI
// runs packages in parallel on two cores) exceeds with a correct program.

// Poll is how often Wait and WaitFor look by default.
const Poll = 20 * time.Millisecond

// NoDeadlineWait bounds a wait in a test that has no deadline (go test
// -timeout 0): long enough for any correct program, short enough that a
// stuck test still ends.
const NoDeadlineWait = 10 * time.Minute

// maxMargin is the most that a wait leaves of the test's deadline: time
// to print why it gave up and to run the cleanups (stop the servers the
// test started) before the test binary's timeout panics.
const maxMargin = time.Minute

// waitUntil is when a wait started at now gives up: the test's deadline
// less a margin (a tenth of what is left, at most maxMargin), or
// NoDeadlineWait from now without a deadline.
func waitUntil(now, deadline time.Time, hasDeadline bool) time.Time {
	if !hasDeadline {
		return now.Add(NoDeadlineWait)
	}
	return deadline.Add(-min(maxMargin, max(0, deadline.Sub(now)/10)))
}

// WaitContext returns a context that ends when a wait begun now in t gives
// up (see Wait) or when t ends: for waits that are not polls (a channel,
// a process started with a context).
func WaitContext(t testing.TB) context.Context {
	ctx, cancel := waitContext(t)
	t.Cleanup(cancel)
	return ctx
}

func waitContext(t testing.TB) (context.Context, context.CancelFunc) {
	deadline, has := time.Time{}, false
	if dt, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		deadline, has = dt.Deadline()
	}
	return context.WithDeadline(t.Context(), waitUntil(time.Now(), deadline, has))
}

// Wait polls cond every Poll until it holds; when the test's deadline is
// near first (see WaitContext), it fails the test saying what it waited
// for. It must be called from the test's goroutine.
func Wait(t testing.TB, what string, cond func() bool) {
	t.Helper()
	WaitFor(t, what, Poll, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
}

// errNotYet is what Wait's condition says while it does not hold.
var errNotYet = errors.New("not yet")

// WaitFor polls cond every interval (Poll when 0) until it returns nil;
// when the test's deadline is near first, it fails the test saying what
// it waited for and what cond said last. It must be called from the
// test's goroutine.
func WaitFor(t testing.TB, what string, every time.Duration, cond func() error) {
	t.Helper()
	if every <= 0 {
		every = Poll
	}
	ctx, cancel := waitContext(t)
	defer cancel()
	began := time.Now()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			if err == errNotYet {
				t.Fatalf("gave up after %s waiting for %s", time.Since(began).Round(time.Millisecond), what)
			} else {
				t.Fatalf("gave up after %s waiting for %s: %v", time.Since(began).Round(time.Millisecond), what, err)
			}
			return
		case <-tick.C:
		}
	}
}
