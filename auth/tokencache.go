package auth

import (
	"container/list"
	"crypto/sha256"
	"sync"
	"time"
)

// tokenCache remembers verified tokens by the SHA-256 of their bytes, so a
// busy client does not pay for a signature check on every request. It is a
// bounded LRU; entries also expire.
//
// Lookups compare digests, never tokens: the map's comparison may stop at
// the first differing byte, but what it compares is the SHA-256 of the
// presented token against those of verified ones, so its timing tells an
// attacker at most how many leading bytes of two digests agree, which
// says nothing about any token (finding a token for chosen digest bytes is
// a preimage search). This is why no constant-time comparison is needed:
// no secret byte is ever compared.
type tokenCache struct {
	mu      sync.Mutex
	max     int
	order   *list.List // front: most recently used; values are *cacheEntry
	entries map[[sha256.Size]byte]*list.Element
}

type cacheEntry struct {
	hash     [sha256.Size]byte
	identity *Identity
	until    time.Time // after this the token must be verified again
}

func newTokenCache(max int) *tokenCache {
	if max <= 0 {
		return nil
	}
	return &tokenCache{max: max, order: list.New(), entries: make(map[[sha256.Size]byte]*list.Element)}
}

// get returns the cached identity for the token hash, if still valid at now.
func (c *tokenCache) get(hash [sha256.Size]byte, now time.Time) *Identity {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[hash]
	if !ok {
		return nil
	}
	entry := el.Value.(*cacheEntry)
	if !now.Before(entry.until) {
		c.order.Remove(el)
		delete(c.entries, hash)
		return nil
	}
	c.order.MoveToFront(el)
	return entry.identity
}

func (c *tokenCache) put(hash [sha256.Size]byte, id *Identity, until time.Time) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[hash]; ok {
		el.Value = &cacheEntry{hash: hash, identity: id, until: until}
		c.order.MoveToFront(el)
		return
	}
	c.entries[hash] = c.order.PushFront(&cacheEntry{hash: hash, identity: id, until: until})
	for c.order.Len() > c.max {
		oldest := c.order.Back()
		c.order.Remove(oldest)
		delete(c.entries, oldest.Value.(*cacheEntry).hash)
	}
}

func (c *tokenCache) len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
