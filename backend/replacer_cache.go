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
	sync.Mutex
	m map[string]*replacer
}{m: map[string]*replacer{}}

// cachedReplacer returns newReplacer(bases, publicBase), built once.
func cachedReplacer(bases []string, publicBase string) *replacer {
	key := publicBase + "\x00" + strings.Join(bases, "\x00")
	replacerCache.Lock()
	defer replacerCache.Unlock()
	if rp, ok := replacerCache.m[key]; ok {
		return rp
	}
	rp := newReplacer(bases, publicBase)
	if len(replacerCache.m) >= maxCachedReplacers {
		replacerCache.m = map[string]*replacer{}
	}
	replacerCache.m[key] = rp
	return rp
}
