package testkit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// fakeT is a test whose deadline is set here and whose failures are
// recorded, not reported: Wait returns after Fatalf.
type fakeT struct {
	testing.TB
	deadline time.Time
	failed   string
}

func (f *fakeT) Helper()                           {}
func (f *fakeT) Context() context.Context          { return context.Background() }
func (f *fakeT) Cleanup(func())                    {}
func (f *fakeT) Deadline() (time.Time, bool)       { return f.deadline, !f.deadline.IsZero() }
func (f *fakeT) Fatalf(format string, args ...any) { f.failed = fmt.Sprintf(format, args...) }

func TestWaitUntilTheConditionHolds(t *testing.T) {
	calls := 0
	f := &fakeT{TB: t, deadline: time.Now().Add(time.Hour)}
	Wait(f, "the third call", func() bool { calls++; return calls == 3 })
	if f.failed != "" || calls != 3 {
		t.Errorf("after %d calls: failed %q", calls, f.failed)
	}
}

// TestWaitGivesUpAtTheDeadline: a condition that never holds fails the test
// before its deadline, saying what was waited for and what the condition
// said last.
func TestWaitGivesUpAtTheDeadline(t *testing.T) {
	f := &fakeT{TB: t, deadline: time.Now().Add(50 * time.Millisecond)}
	Wait(f, "what never happens", func() bool { return false })
	if !strings.Contains(f.failed, "waiting for what never happens") {
		t.Errorf("the failure says %q", f.failed)
	}
	f = &fakeT{TB: t, deadline: time.Now().Add(50 * time.Millisecond)}
	WaitFor(f, "the directory to empty", time.Millisecond, func() error { return errors.New("it holds x") })
	if !strings.Contains(f.failed, "waiting for the directory to empty: it holds x") {
		t.Errorf("the failure says %q", f.failed)
	}
}

// TestWaitUntil: a wait leaves a tenth of what is left of the test's
// deadline, at most a minute, for the failure to be printed; without a
// deadline it lasts NoDeadlineWait.
func TestWaitUntil(t *testing.T) {
	now := ClockStart
	for _, c := range []struct {
		left, want time.Duration
	}{
		{10 * time.Minute, 9 * time.Minute},
		{time.Hour, 59 * time.Minute},
		{10 * time.Second, 9 * time.Second},
	} {
		if got := waitUntil(now, now.Add(c.left), true).Sub(now); got != c.want {
			t.Errorf("with %s left: waits %s, want %s", c.left, got, c.want)
		}
	}
	if got := waitUntil(now, time.Time{}, false).Sub(now); got != NoDeadlineWait {
		t.Errorf("without a deadline: waits %s, want %s", got, NoDeadlineWait)
	}
}

// TestWaitContextEndsWithTheWait: the context of a test about to reach its
// deadline is done.
func TestWaitContextEndsWithTheWait(t *testing.T) {
	f := &fakeT{TB: t, deadline: time.Now().Add(-time.Second)}
	select {
	case <-WaitContext(f).Done():
	default:
		t.Error("the context of a test past its deadline is not done")
	}
}
