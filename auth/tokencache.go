package auth

import (
	"container/list"
	"hash/maphash"
	"sync"
	"time"
)

// tokenCache remembers verified tokens, so a busy client does not pay for
// a signature check on every request. It is a bounded LRU; entries also
// expire.
//
// An entry is found by a seeded 64-bit hash of the token (hash/maphash:
// about a tenth of a nanosecond per byte, where the SHA-256 this cache
// used before was a fifth of a read's whole cost in the gateway) and
// decided by comparing the whole presented token with the verified one in
// constant time (sameToken). The hash only says where to look: two tokens
// with the same hash are told apart by the comparison, and a token that
// is not the verified one byte for byte is verified on its own. The
// comparison's time depends on the tokens' length only, so it tells an
// attacker nothing about a cached token's bytes. The cache holds the
// verified tokens themselves, as the requests that carry them do, for at
// most their lifetime or the JWKS cache period.
type tokenCache struct {
	mu      sync.Mutex
	max     int
	seed    maphash.Seed
	order   *list.List // front: most recently used; values are *cacheEntry
	entries map[uint64]*list.Element
}

type cacheEntry struct {
	hash     uint64
	token    string
	identity *Identity
	until    time.Time // after this the token must be verified again
}

func newTokenCache(max int) *tokenCache {
	if max <= 0 {
		return nil
	}
	return &tokenCache{max: max, seed: maphash.MakeSeed(), order: list.New(), entries: make(map[uint64]*list.Element)}
}

// hash returns where token's entry is kept (0 for a cache that is off).
func (c *tokenCache) hash(token string) uint64 {
	if c == nil {
		return 0
	}
	return maphash.String(c.seed, token)
}

// get returns the cached identity of token (whose hash is h), if it is
// still valid at now.
func (c *tokenCache) get(h uint64, token string, now time.Time) *Identity {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[h]
	if !ok {
		return nil
	}
	entry := el.Value.(*cacheEntry)
	if !sameToken(entry.token, token) {
		return nil // another token with the same hash: verified on its own
	}
	if !now.Before(entry.until) {
		c.order.Remove(el)
		delete(c.entries, h)
		return nil
	}
	c.order.MoveToFront(el)
	return entry.identity
}

// put remembers that token (whose hash is h) carries id until until. It
// takes the place of another token with the same hash.
func (c *tokenCache) put(h uint64, token string, id *Identity, until time.Time) {
	if c == nil {
		return
	}
	entry := &cacheEntry{hash: h, token: token, identity: id, until: until}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[h]; ok {
		el.Value = entry
		c.order.MoveToFront(el)
		return
	}
	c.entries[h] = c.order.PushFront(entry)
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

// sameToken reports whether a and b hold the same bytes, in a time that
// depends on their lengths only (no branch on their contents): eight
// bytes at a time, which crypto/subtle.ConstantTimeCompare does one at a
// time.
func sameToken(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	var diff uint64
	i := 0
	for ; i+8 <= len(a); i += 8 {
		diff |= word(a[i:]) ^ word(b[i:])
	}
	for ; i < len(a); i++ {
		diff |= uint64(a[i] ^ b[i])
	}
	return diff == 0
}

// word returns the first eight bytes of s as one little-endian number
// (the compiler makes this one load).
func word(s string) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}
