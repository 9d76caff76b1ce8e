package dopu

import (
	"math"
	"net"
	"sync"
	"time"
)

// maxBuckets bounds each limiter's memory: a flood from many addresses
// cannot grow the map without end.
const maxBuckets = 10000

// limiter is a set of token buckets keyed by a string, in memory.
type limiter struct {
	rate Rate
	max  int

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(rate Rate, max int) *limiter {
	return &limiter{rate: rate, max: max, buckets: make(map[string]*bucket)}
}

// allow takes one token for key at now. When none is left it reports how
// long until one will be.
func (l *limiter) allow(key string, now time.Time) (ok bool, retryAfter time.Duration) {
	if l.rate.PerMinute < 0 {
		return true, 0
	}
	burst := float64(max(l.rate.Burst, 1))
	perSecond := l.rate.PerMinute / 60

	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= l.max {
			l.evict(now, burst, perSecond)
		}
		b = &bucket{tokens: burst, last: now}
		l.buckets[key] = b
	}
	if elapsed := now.Sub(b.last).Seconds(); elapsed > 0 {
		b.tokens = math.Min(burst, b.tokens+elapsed*perSecond)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	if perSecond <= 0 {
		return false, time.Hour
	}
	wait := time.Duration((1 - b.tokens) / perSecond * float64(time.Second))
	return false, max(wait, time.Second)
}

// evict makes room for a new key. Buckets that have refilled are the same
// as absent ones, so they go first and nobody notices; if every bucket is
// still draining (a flood from more keys than the map holds), an arbitrary
// half goes, which can only let some of the flood through early.
func (l *limiter) evict(now time.Time, burst, perSecond float64) {
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*perSecond >= burst {
			delete(l.buckets, k)
		}
	}
	for k := range l.buckets {
		if len(l.buckets) < l.max/2 {
			break
		}
		delete(l.buckets, k)
	}
}

// sourceKey returns the rate-limit key of an address: the IP itself, or
// its /64 for IPv6, since one subscriber commonly holds a whole /64. A
// "host:port" remote address is accepted too.
func sourceKey(ip string) string {
	if host, _, err := net.SplitHostPort(ip); err == nil {
		ip = host
	}
	parsed := net.ParseIP(ip)
	if parsed == nil {
		return ip
	}
	if v4 := parsed.To4(); v4 != nil {
		return v4.String()
	}
	return parsed.Mask(net.CIDRMask(64, 128)).String() + "/64"
}
