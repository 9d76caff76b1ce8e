package backend

import (
	"strings"
	"sync"
)

// maxCachedReplacers bounds the replacer cache: about one entry per PFR
// and upstream Host in use; past it the cache starts over.
const maxCachedReplacers = 4096

// replacerCache keeps built replacers, which are immutable, so that a
// request pays for a map lookup instead of building its patterns.
var replacerCache = struct {
	sync.RWMutex
	m map[replacerKey]*replacer
}{m: map[replacerKey]*replacer{}}

// replacerKey names a replacer: the public base and the upstream bases
// (joined by NUL, which no URL holds; one base is used as it is, so the
// usual lookup builds no string).
type replacerKey struct{ public, bases string }

// cachedReplacer returns newReplacer(bases, publicBase), built once.
func cachedReplacer(bases []string, publicBase string) *replacer {
	key := replacerKey{public: publicBase}
	if len(bases) == 1 {
		key.bases = bases[0]
	} else {
		key.bases = strings.Join(bases, "\x00")
	}
	replacerCache.RLock()
	rp, ok := replacerCache.m[key]
	replacerCache.RUnlock()
	if ok {
		return rp
	}
	replacerCache.Lock()
	defer replacerCache.Unlock()
	if rp, ok := replacerCache.m[key]; ok {
		return rp
	}
	rp = newReplacer(bases, publicBase)
	if len(replacerCache.m) >= maxCachedReplacers {
		replacerCache.m = map[replacerKey]*replacer{}
	}
	replacerCache.m[key] = rp
	return rp
}
