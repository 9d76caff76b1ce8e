package dopu

import (
	"fmt"
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newLimiter(Rate{PerMinute: 60, Burst: 2}, 100)
	for i := range 2 {
		if ok, _ := l.allow("a", now); !ok {
			t.Fatalf("burst token %d refused", i)
		}
	}
	ok, wait := l.allow("a", now)
	if ok || wait != time.Second {
		t.Errorf("third: %v %s, want refused for 1s", ok, wait)
	}
	if ok, _ := l.allow("b", now); !ok {
		t.Error("another key was throttled")
	}
	if ok, _ := l.allow("a", now.Add(time.Second)); !ok {
		t.Error("no token after a second at 60 per minute")
	}
	// Disabled.
	off := newLimiter(Rate{PerMinute: -1}, 10)
	for range 1000 {
		if ok, _ := off.allow("x", now); !ok {
			t.Fatal("disabled limiter refused")
		}
	}
}

func TestLimiterBounded(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newLimiter(Rate{PerMinute: 1, Burst: 1}, 100)
	// A flood from 10 000 addresses never holds more than 100 buckets.
	for i := range 10000 {
		l.allow(fmt.Sprintf("10.0.%d.%d", i/256, i%256), now)
		if len(l.buckets) > 100 {
			t.Fatalf("%d buckets after %d keys", len(l.buckets), i+1)
		}
	}
	// Refilled buckets go first: after an idle minute all are evictable,
	// and a throttled key added afterwards stays throttled.
	now = now.Add(2 * time.Minute)
	l.allow("hot", now)
	for i := range 98 {
		l.allow(fmt.Sprintf("192.168.0.%d", i), now)
	}
	if ok, _ := l.allow("hot", now); ok {
		t.Error("the throttled key was evicted while idle buckets remained")
	}
}

func TestSourceKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1":             "192.0.2.1",
		"::ffff:192.0.2.1":      "192.0.2.1",
		"2001:db8:1:2:3::4":     "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff::":   "2001:db8:1:2::/64",
		"192.0.2.1:5555":        "192.0.2.1",
		"[2001:db8:1:2::9]:443": "2001:db8:1:2::/64",
		"not-an-ip":             "not-an-ip",
	} {
		if got := sourceKey(in); got != want {
			t.Errorf("sourceKey(%q) = %q, want %q", in, got, want)
		}
	}
}
