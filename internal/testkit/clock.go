package testkit

import (
	"sync"
	"time"
)

// Clock is a time the tests move by hand, safe for concurrent use. Pass
// its Now wherever the code takes a clock.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// ClockStart is where NewClock starts: a fixed instant, so that tests
// print the same times in every run.
var ClockStart = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// NewClock returns a clock at ClockStart.
func NewClock() *Clock { return &Clock{now: ClockStart} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Set puts the clock at t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}
