package authz

import (
	"sync"
	"time"
)

// StatusTTL is how long a token's checked status (its grant, refresh
// family and jti alive) is reused without reading the store again. A
// revocation on this node clears it at once; another node sharing the
// state (PostgreSQL) sees it within this time.
const StatusTTL = time.Second

// maxStatusEntries bounds the cache; past it, it starts afresh.
const maxStatusEntries = 10000

// statusCache remembers token statuses briefly, so that the check on every
// request costs a map lookup, not a store read.
type statusCache struct {
	mu sync.Mutex
	m  map[string]statusEntry
}

type statusEntry struct {
	grant *Grant
	at    time.Time
}

func statusKey(grantID, fam, jti string) string { return grantID + "\x00" + fam + "\x00" + jti }

func (c *statusCache) get(key string, now time.Time) *Grant {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok || now.Sub(e.at) >= StatusTTL || now.Before(e.at) {
		return nil
	}
	return e.grant
}

func (c *statusCache) put(key string, g *Grant, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxStatusEntries {
		c.m = map[string]statusEntry{}
	}
	c.m[key] = statusEntry{grant: g, at: now}
}

// invalidate forgets every status: something was revoked on this node.
func (c *statusCache) invalidate() {
	c.mu.Lock()
	c.m = nil
	c.mu.Unlock()
}
