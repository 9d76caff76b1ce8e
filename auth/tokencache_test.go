package auth

import (
	"strings"
	"testing"
	"time"
)

// TestTokenCacheComparesTokens: the hash only locates an entry; a token
// that shares its hash with a verified one but is not that token byte for
// byte gets nothing from the cache.
func TestTokenCacheComparesTokens(t *testing.T) {
	c := newTokenCache(4)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	verified := "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
	alice := &Identity{Subject: "alice"}
	h := c.hash(verified)
	c.put(h, verified, alice, now.Add(time.Minute))
	if got := c.get(h, verified, now); got != alice {
		t.Fatalf("the verified token: %v, want alice", got)
	}
	// Same hash (as if the 64 bits collided), other bytes: a miss.
	other := verified[:len(verified)-1] + "X"
	if got := c.get(h, other, now); got != nil {
		t.Fatalf("another token under the same hash got %v", got)
	}
	if got := c.get(h, verified+"A", now); got != nil {
		t.Fatalf("a longer token under the same hash got %v", got)
	}
	// Expired: gone.
	if got := c.get(h, verified, now.Add(time.Minute)); got != nil || c.len() != 0 {
		t.Fatalf("an expired entry: %v, %d entries", got, c.len())
	}
	var off *tokenCache
	if off.hash(verified) != 0 || off.get(0, verified, now) != nil || off.len() != 0 {
		t.Fatal("a cache that is off answers")
	}
	off.put(0, verified, alice, now.Add(time.Minute)) // no panic
}

// TestSameToken: equal bytes only, whatever the length, with the
// difference in the eight-byte words or in the tail.
func TestSameToken(t *testing.T) {
	for n := range 40 {
		a := strings.Repeat("x", n)
		if !sameToken(a, strings.Clone(a)) {
			t.Fatalf("length %d: equal tokens differ", n)
		}
		if sameToken(a, a+"x") || sameToken(a+"x", a) {
			t.Fatalf("length %d: tokens of other lengths are the same", n)
		}
		for i := range n {
			b := []byte(a)
			b[i] ^= 0x01
			if sameToken(a, string(b)) {
				t.Fatalf("length %d: a difference at byte %d is not seen", n, i)
			}
			b[i] ^= 0x81 // only the top bit differs
			if sameToken(a, string(b)) {
				t.Fatalf("length %d: a difference in the top bit of byte %d is not seen", n, i)
			}
		}
	}
}
