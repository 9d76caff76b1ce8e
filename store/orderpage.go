package store

import (
	"bytes"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/pfrgateway/caddy-pfr/fhir/search"
)

// A search sorted by one date key whose matches are many (Observation?
// _sort=-date on a record of 100 000) needs only its first page and its
// total to answer: the page is read from the key's order index, walked
// from the end the order starts at until it has found the page, and the
// total is counted from index keys, without placing every match. The
// pages after it come from a lazy snapshot (snapshot.go) that places the
// matches only when they are asked for, as they were when the first page
// was answered.

// orderPage is what orderedPage found: the first want matches (ids, in
// order) and how many matches there are in all.
type orderPage struct {
	ids   []string
	total int
}

// orderPageMin is how many matches a filtered search needs before its
// first page is walked from the order index: with fewer, placing them all
// (run) costs little, and the walk would read many keys for each match.
// A variable for tests.
var orderPageMin = 1024

// orderPageKeys bounds the order keys a filtered walk may read to find
// want matches (each costs a lookup per value of the filter); beyond, the
// matches are too sparse among the keys and run places them instead.
func orderPageKeys(want int) int { return 16*want + 512 }

// orderedPage returns the first want matches of plan, which sorts by one
// date key, and their total, when the index can give them without
// placing every match; ok is false when it cannot, and run must:
//   - the search reads contained resources, or its criteria are not
//     exactly one index filter of exact ranges over few values
//     (lookupRanges) that covers them all (an unfiltered search is fine);
//   - some resource of the type is unreadable (only a scan reports it);
//   - a filtered search has fewer than orderPageMin matches, or more
//     than orderPageKeys(want) order keys had to be read to find want.
//
// The order is orderedIDs' (run's): by the key's value, equal values and
// resources without one (last) in id order.
func orderedPage(p *ptx, typ string, plan *searchPlan, want int) (page orderPage, ok bool, err error) {
	if plan.orderParam == "" || plan.searchesContained() || p.noIndex {
		return orderPage{}, false, nil
	}
	tag, ok := search.IndexTag(typ, plan.orderParam)
	if !ok {
		return orderPage{}, false, nil
	}
	ib, err := p.indexBucket(typ)
	if err != nil || ib == nil {
		return orderPage{}, err == nil, err // nil: nothing of typ was ever written
	}
	if len(unreadableIDs(ib)) > 0 {
		return orderPage{}, false, nil
	}
	var member func(id []byte) bool // nil: every resource matches
	if !plan.orderOnly {
		lookups, ok, err := singleFilter(p, typ, plan, ib)
		if err != nil || !ok {
			return orderPage{}, false, err
		}
		page.total = distinctIDs(ib, lookups)
		if page.total < orderPageMin {
			return orderPage{}, false, nil
		}
		probe := keysOf(ib)
		var key []byte
		member = func(id []byte) bool {
			for _, r := range lookups {
				v, _ := exactValue(r)
				key = append(append(append(key[:0], v...), 0), id...)
				if k := probe.Seek(key); k != nil && bytes.Equal(k, key) {
					return true
				}
			}
			return false
		}
	}
	maxKeys := 0
	if member != nil {
		maxKeys = orderPageKeys(want)
	}
	ids, ok := walkOrder(ib, tag, plan.orderDesc, want, member, maxKeys)
	if !ok {
		return orderPage{}, false, nil
	}
	page.ids = ids
	if member == nil {
		page.total = countPrefix(ib, append([]byte{tag}, search.OrderRange().Lo...))
	}
	return page, true, nil
}

// singleFilter returns the values (lookupRanges) of the one index filter
// of plan's criteria; ok is false unless the filter covers every
// criterion through exact ranges of few values.
func singleFilter(p *ptx, typ string, plan *searchPlan, ib *indexView) (lookups []search.KeyRange, ok bool, err error) {
	b, err := plan.bind(partitionSource{p, nil})
	if err != nil || !b.Covered || len(b.Filters) != 1 {
		return nil, false, err
	}
	f := b.Filters[0]
	if f.Param == "_id" || slices.ContainsFunc(f.Ranges, func(r search.KeyRange) bool { return !r.Exact }) {
		return nil, false, nil
	}
	ranges, ok := filterRanges(typ, f)
	if !ok {
		return nil, false, nil
	}
	if lookups, ok = lookupRanges(ib, f.Param, ranges); !ok {
		return nil, false, nil
	}
	return lookups, true, nil
}

// distinctIDs counts the resources with a key in one of values (single
// values, lookupRanges): one value's keys are its resources in id order,
// so several values' keys are merged by id, each resource counted once.
func distinctIDs(ib *indexView, values []search.KeyRange) int {
	if len(values) == 1 {
		v, _ := exactValue(values[0])
		return countPrefix(ib, append(bytes.Clone(v), 0))
	}
	type run struct {
		c      keyCursor
		prefix []byte
		k      []byte // the current key, nil past the value's keys
	}
	runs := make([]*run, 0, len(values))
	for _, r := range values {
		v, _ := exactValue(r)
		prefix := append(bytes.Clone(v), 0)
		c := keysOf(ib)
		if k := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) {
			runs = append(runs, &run{c: c, prefix: prefix, k: k})
		}
	}
	n := 0
	for {
		var least []byte
		for _, r := range runs {
			if r.k != nil && (least == nil || bytes.Compare(r.k[len(r.prefix):], least) < 0) {
				least = r.k[len(r.prefix):]
			}
		}
		if least == nil {
			return n
		}
		n++
		least = bytes.Clone(least)
		for _, r := range runs {
			if r.k != nil && bytes.Equal(r.k[len(r.prefix):], least) {
				if r.k = r.c.Next(); r.k != nil && !bytes.HasPrefix(r.k, r.prefix) {
					r.k = nil
				}
			}
		}
	}
}

// countPrefix counts the keys of ib that start with prefix: those of the
// index bucket, read with bbolt's own cursor, and those of the delta
// that the bucket lacks, corrected by the index log's changes under
// prefix (a key the log adds that neither holds, one it removes that
// one holds), each looked up. The log and the delta hold few keys;
// merging them into every step of a count of 100 000 keys doubled the
// count's time.
func countPrefix(ib *indexView, prefix []byte) int {
	n := 0
	if ib.b != nil {
		c := ib.b.Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			n++
		}
	}
	if ib.d != nil {
		var c *bolt.Cursor
		if ib.b != nil {
			c = ib.b.Cursor()
		}
		dc := ib.d.Cursor()
		for k, _ := dc.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = dc.Next() {
			if c == nil {
				n++
			} else if at, _ := c.Seek(k); !bytes.Equal(at, k) {
				n++
			}
		}
	}
	i, _ := slices.BinarySearchFunc(ib.ov, prefix, func(e overlayEntry, k []byte) int { return bytes.Compare(e.key, k) })
	for ; i < len(ib.ov) && bytes.HasPrefix(ib.ov[i].key, prefix); i++ {
		e := ib.ov[i]
		switch inBucket := ib.has(e.key); {
		case e.present && !inBucket:
			n++
		case !e.present && inBucket:
			n--
		}
	}
	return n
}

// walkOrder returns the first want ids in the order of the order keys of
// tag (see orderedIDs) that member accepts (nil: every id): the keys are
// read from the end the order starts at, backwards for a descending order,
// whose runs of equal values are put back in id order, and the resources
// without a value last. ok is false when more than maxKeys (0: no bound)
// keys were read before want were found.
func walkOrder(ib *indexView, tag byte, desc bool, want int, member func(id []byte) bool, maxKeys int) (ids []string, ok bool) {
	lo := append([]byte{tag}, search.OrderRange().Lo...)
	missing := append([]byte{tag}, search.OrderMissingValue()...)
	idAt := len(missing) + 1
	order := lo
	inOrder := func(k []byte) bool { return len(k) > idAt && bytes.HasPrefix(k, order) }
	read := 0
	more := func() bool { read++; return maxKeys == 0 || read <= maxKeys }
	if want <= 0 {
		return nil, true
	}
	if desc {
		// Backwards from the last key with a value: runs of equal
		// values come in descending id order; each is read to its end
		// (its first ids may be the ones the page needs) and put back.
		c := newBackKeys(ib)
		var value []byte
		runStart, open := 0, false
		for k := c.Before(missing); inOrder(k); k = c.Prev() {
			if !open || !bytes.Equal(k[:idAt], value) {
				slices.Reverse(ids[runStart:])
				if len(ids) >= want {
					open = false
					break
				}
				runStart, open = len(ids), true
				value = append(value[:0], k[:idAt]...)
			}
			if !more() {
				return nil, false
			}
			if member == nil || member(k[idAt:]) {
				ids = append(ids, string(k[idAt:]))
			}
		}
		if open {
			slices.Reverse(ids[runStart:])
		}
		if len(ids) >= want {
			return ids[:want], true
		}
		// Then the resources without a value, in id order.
		lo = missing
	}
	c := keysOf(ib)
	for k := c.Seek(lo); inOrder(k) && len(ids) < want; k = c.Next() {
		if !more() {
			return nil, false
		}
		if member == nil || member(k[idAt:]) {
			ids = append(ids, string(k[idAt:]))
		}
	}
	return ids, true
}

// backKeys walks the keys of an indexView backwards: those of the index
// bucket and of the delta (a key in both once) that the index log does
// not remove, and those the log adds (the mirror of indexCursor, which
// says how the delta is skipped where it holds nothing). A key is only
// valid until the walk moves. Its bbolt cursors step back with
// cursorPrev: inside a write transaction that removed keys, a plain Prev
// can stop short.
type backKeys struct {
	c  *bolt.Cursor // nil: no index bucket
	mk []byte       // the bucket's current key, nil before the start
	d  *bolt.Cursor // nil: no delta
	dk []byte       // the delta's current key, nil before its start or while dbound holds
	// dbound, when not -1, is a tag: the delta holds no key not yet
	// passed at or after the first key of that tag (it was not sought).
	dbound int
	dtags  []byte
	ov     []overlayEntry
	oi     int    // the overlay's current position, -1 before the start
	cur    []byte // the key last returned
}

// newBackKeys returns a backward walk of ix.
func newBackKeys(ix *indexView) *backKeys {
	bk := &backKeys{ov: ix.ov, dtags: ix.dtags, dbound: -1}
	if ix.b != nil {
		bk.c = ix.b.Cursor()
	}
	if ix.d != nil {
		bk.d = ix.d.Cursor()
	}
	return bk
}

// Before moves to the last key < k and returns it (nil: none).
func (bk *backKeys) Before(k []byte) []byte {
	if bk.c != nil {
		bk.mk, _ = cursorBefore(bk.c, k)
	}
	if bk.d != nil {
		bk.dk, bk.dbound = nil, -1
		tag := byte(0xff)
		if len(k) > 0 {
			tag = k[0]
		}
		// The last tag at or before k's that the delta holds keys of.
		i, found := slices.BinarySearch(bk.dtags, tag)
		switch {
		case found || len(k) == 0:
			bk.dk, _ = cursorBefore(bk.d, k)
		case i > 0 && bk.dtags[i-1] < 0xff:
			bk.dbound = int(bk.dtags[i-1]) + 1
		case i > 0:
			bk.dk, _ = cursorBefore(bk.d, k)
		}
	}
	i, _ := slices.BinarySearchFunc(bk.ov, k, func(e overlayEntry, k []byte) int { return bytes.Compare(e.key, k) })
	bk.oi = i - 1
	return bk.settle()
}

// Prev moves to the key before the one last returned and returns it.
func (bk *backKeys) Prev() []byte {
	if bk.cur == nil {
		return nil
	}
	cur := bk.cur
	if bk.mk != nil && bytes.Equal(bk.mk, cur) {
		bk.mk, _ = cursorPrev(bk.c, bk.mk)
	}
	if bk.dk != nil && bytes.Equal(bk.dk, cur) {
		bk.dk, _ = cursorPrev(bk.d, bk.dk)
	}
	if bk.oi >= 0 && bytes.Equal(bk.ov[bk.oi].key, cur) {
		bk.oi--
	}
	return bk.settle()
}

// settle returns the largest visible key at or before the positions,
// stepping over the keys the log removes.
func (bk *backKeys) settle() []byte {
	for {
		most := bk.mk
		if bk.oi >= 0 && (most == nil || bytes.Compare(bk.ov[bk.oi].key, most) > 0) {
			most = bk.ov[bk.oi].key
		}
		if bk.dbound >= 0 && (len(most) == 0 || int(most[0]) < bk.dbound) {
			// The walk reached where the delta's keys go on (before
			// the bound; while most is at or past it, most is larger
			// than any of them).
			bk.dk, _ = cursorBefore(bk.d, []byte{byte(bk.dbound)})
			bk.dbound = -1
		}
		if bk.dk != nil && (most == nil || bytes.Compare(bk.dk, most) > 0) {
			most = bk.dk
		}
		if most == nil {
			bk.cur = nil
			return nil
		}
		if bk.oi < 0 || !bytes.Equal(bk.ov[bk.oi].key, most) || bk.ov[bk.oi].present {
			bk.cur = most
			return most
		}
		// Removed by the log: skip it here and in the buckets.
		if bk.mk != nil && bytes.Equal(bk.mk, most) {
			bk.mk, _ = cursorPrev(bk.c, bk.mk)
		}
		if bk.dk != nil && bytes.Equal(bk.dk, most) {
			bk.dk, _ = cursorPrev(bk.d, bk.dk)
		}
		bk.oi--
	}
}
