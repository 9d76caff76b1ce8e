package store

import (
	"bytes"
	"cmp"
	"slices"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/pfrgateway/caddy-pfr/fhir/search"
)

// The read side of the search indexes (index.go keeps them): which
// resources of a type may match a search's index filters, and the order
// of a date sort key.

// typeRecords reads the live records of one type, its bucket looked up
// once.
type typeRecords struct{ b *bolt.Bucket }

// records returns the reader of typ's live records.
func (p *ptx) records(typ string) typeRecords { return typeRecords{p.currentType(typ)} }

// get returns the record (header and JSON) of the live id, nil when it is
// deleted or unknown; it must not be kept beyond the transaction.
func (r typeRecords) get(id string) []byte {
	if r.b == nil {
		return nil
	}
	if v := r.b.Get([]byte(id)); isLive(v) {
		return v
	}
	return nil
}

// keyCursor walks the keys of one type's index in order: Seek to the
// first key at or after k, then Next; nil past the end. A key is only
// valid until the cursor moves.
type keyCursor interface {
	Seek(k []byte) []byte
	Next() []byte
}

// boltKeys is a keyCursor on an index bucket.
type boltKeys struct{ c *bolt.Cursor }

func (b boltKeys) Seek(k []byte) []byte { k, _ = b.c.Seek(k); return k }
func (b boltKeys) Next() []byte         { k, _ := b.c.Next(); return k }

// keysOf returns a new cursor on the index ix (its bucket with the index
// log's changes over it).
func keysOf(ix *indexView) keyCursor { return ix.cursor() }

// rangeScan walks the keys of one parameter inside some ranges (keys of
// the type's index, tag included: filterRanges).
type rangeScan struct {
	param  string
	ranges []search.KeyRange
	c      keyCursor
	i      int    // current range
	k      []byte // current key, nil before the range is sought
	hi     []byte // bound of the current range
	done   bool
	read   int // keys read so far

	// While the driver is chosen: the ids read so far, packed in buf
	// (ends[i] is where the i-th ends), and whether each was found
	// through an Exact range.
	buf   []byte
	ends  []int
	exact []bool

	// Once the driver is known: found[i] for the driver's i-th candidate
	// is 0 (not found), 1 (found) or 2 (found through an Exact range).
	found []uint8
	// lookups are the filter's ranges as single values (lookupRanges),
	// nil when there are too many to look up one by one.
	lookups []search.KeyRange
	// estimate is about how many keys lookups hold (estimateKeys).
	estimate int
}

// next returns the id of the next key in the ranges and whether the
// range it is in is Exact; ok is false once every range is read.
func (s *rangeScan) next() (id []byte, exact, ok bool) {
	for !s.done {
		if s.k == nil {
			if s.i >= len(s.ranges) {
				s.done = true
				break
			}
			r := s.ranges[s.i]
			s.hi = r.Hi
			s.k = s.c.Seek(r.Lo)
		} else {
			s.k = s.c.Next()
		}
		if s.k == nil || bytes.Compare(s.k, s.hi) >= 0 {
			s.k = nil
			s.i++
			continue
		}
		s.read++
		return s.k[bytes.LastIndexByte(s.k, 0)+1:], s.ranges[s.i].Exact, true
	}
	return nil, false, false
}

// collect reads up to n keys into buf; it reports whether the scan is
// complete. An _id filter's ranges are ids, not index keys: they are
// taken at once.
func (s *rangeScan) collect(n int) bool {
	if s.param == "_id" {
		if !s.done {
			for _, r := range s.ranges {
				s.buf = append(s.buf, search.IDOfRange(r)...)
				s.ends = append(s.ends, len(s.buf))
				s.exact = append(s.exact, true)
			}
			s.done = true
		}
		return true
	}
	for ; n > 0; n-- {
		id, exact, ok := s.next()
		if !ok {
			break
		}
		if len(s.buf)+len(id) > cap(s.buf) {
			// Doubled (append grows a large slice by a quarter).
			s.buf = slices.Grow(s.buf, max(len(id), cap(s.buf)))
		}
		s.buf = append(s.buf, id...)
		s.ends = append(s.ends, len(s.buf))
		s.exact = append(s.exact, exact)
	}
	return s.done
}

// mark records that the driver's candidate i was found, exactly or not.
func (s *rangeScan) mark(i int32, exact bool) {
	v := uint8(1)
	if exact {
		v = 2
	}
	s.found[i] = max(s.found[i], v)
}

// candidates are the driver's ids while the other filters narrow them.
type candidates struct {
	ids   []string // index.ids
	index *idSet
	alive []bool
	sure  []bool // found through Exact ranges of every filter so far
	n     int    // how many are alive
}

// keep applies a finished filter: a candidate it did not find is out; one
// it found only through inexact ranges is no longer sure.
func (cs *candidates) keep(found func(i int) uint8) {
	for i := range cs.ids {
		if !cs.alive[i] {
			continue
		}
		switch found(i) {
		case 0:
			cs.alive[i] = false
			cs.n--
		case 1:
			cs.sure[i] = false
		}
	}
}

// maxLookupValues bounds how many distinct values of a range a lookup
// tries (a bare code has one per system it is written with).
const maxLookupValues = 16

// lookupRanges returns ranges of one value each (tag, value: see
// exactValue) that hold exactly the keys of ranges (filterRanges: a range
// of several values is split into its values, read from the index); ok is
// false when there are more than maxLookupValues.
func lookupRanges(ib *indexView, param string, ranges []search.KeyRange) (out []search.KeyRange, ok bool) {
	if param == "_id" { // ids, not index keys
		return ranges, true
	}
	c := keysOf(ib)
	for _, r := range ranges {
		if _, ok := exactValue(r); ok {
			// Kept only when the value is in the index at all (a code
			// searched with a system it is never written with).
			if k := c.Seek(r.Lo); k != nil && bytes.Compare(k, r.Hi) < 0 {
				out = append(out, r)
			}
			continue
		}
		for k := c.Seek(r.Lo); k != nil && bytes.Compare(k, r.Hi) < 0; {
			if len(out) == maxLookupValues {
				return nil, false
			}
			value := k[:bytes.LastIndexByte(k, 0)]
			out = append(out, search.KeyRange{
				Lo:    append(bytes.Clone(value), 0),
				Hi:    append(bytes.Clone(value), 1),
				Exact: r.Exact,
			})
			k = c.Seek(append(bytes.Clone(value), 1))
		}
	}
	return out, true
}

// filterRanges returns the ranges of f in the index of typ: f's ranges
// under each tag that holds f.Param's keys (search.IndexTags: its own, or
// those of the parameters whose keys together are its keys), in that
// order; an _id filter's ranges are ids, not index keys, and come as
// they are. ok is false when no index holds f.Param's keys.
func filterRanges(typ string, f search.IndexFilter) ([]search.KeyRange, bool) {
	if f.Param == "_id" {
		return f.Ranges, true
	}
	tags, ok := search.IndexTags(typ, f.Param)
	if !ok {
		return nil, false
	}
	out := make([]search.KeyRange, 0, len(tags)*len(f.Ranges))
	for _, tag := range tags {
		for _, r := range f.Ranges {
			out = append(out, search.KeyRange{Lo: append([]byte{tag}, r.Lo...), Hi: append([]byte{tag}, r.Hi...), Exact: r.Exact})
		}
	}
	return out, true
}

// lookupSorted marks in s.found which of the candidates order names (in
// id order) have a key in one of s.lookups (single values). The keys of
// one value are in id order too, so the cursor only moves forward: a
// candidate before the cursor's key is decided by one comparison, one
// just after it by a few steps, any other by a seek.
func (s *rangeScan) lookupSorted(ib *indexView, cs *candidates, order []int32) {
	if s.param == "_id" {
		for _, r := range s.lookups {
			if ci, ok := cs.index.lookupString(search.IDOfRange(r)); ok {
				s.mark(ci, true)
			}
		}
		return
	}
	c := keysOf(ib)
	var target []byte
	for _, r := range s.lookups {
		v, _ := exactValue(r)
		prefix := append(bytes.Clone(v), 0)
		var k []byte // the cursor's key, nil before the first seek
		// How far to step before seeking: doubled each time stepping
		// reaches the candidate, halved each time it does not (the
		// value's keys are dense or sparse among the candidates).
		reach := lookupSteps
		for _, i := range order {
			if !cs.alive[i] || s.found[i] == 2 {
				continue
			}
			target = append(append(target[:0], prefix...), cs.ids[i]...)
			if k != nil && bytes.Compare(k, target) < 0 {
				for steps := 0; steps < reach && len(k) > 0 && bytes.Compare(k, target) < 0; steps++ {
					if k = c.Next(); k == nil || !bytes.HasPrefix(k, prefix) {
						k = prefix[:0:0] // past the value: nothing more
					}
				}
				switch {
				case len(k) > 0 && bytes.Compare(k, target) < 0: // not reached
					k = nil
					reach = max(reach/2, 1)
				case len(k) > 0:
					reach = min(reach*2, maxLookupSteps)
				}
			}
			if k == nil {
				if k = c.Seek(target); k == nil || !bytes.HasPrefix(k, prefix) {
					k = prefix[:0:0]
				}
			}
			if len(k) == 0 {
				break // every later candidate is past the value's keys
			}
			if bytes.Equal(k, target) {
				s.mark(i, r.Exact)
			}
		}
	}
}

// joinKeys bounds the keys joinValues reads for n candidates: 16 per
// candidate (a key read in order and a hash probe cost a small fraction
// of a lookup in id order, which also needs the candidates sorted by
// id). A variable for tests.
var joinKeys = func(n int) int { return 16*n + indexScanChunk }

// joinValues marks in s.found the candidates that have a key in one of
// s.lookups (single values) by walking each value's keys and looking
// their ids up among the candidates; it reports false, leaving what it
// marked, once it has read more than maxKeys keys (the values have many
// more keys than there are candidates: lookupSorted is then cheaper).
func (s *rangeScan) joinValues(ib *indexView, cs *candidates, maxKeys int) bool {
	if s.param == "_id" {
		return false // ids, not index keys: lookupSorted takes them
	}
	c := keysOf(ib)
	read := 0
	var prefix []byte
	for _, r := range s.lookups {
		v, _ := exactValue(r)
		prefix = append(append(prefix[:0], v...), 0)
		for k := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k = c.Next() {
			if read++; read > maxKeys {
				return false
			}
			if ci, ok := cs.index.lookup(k[len(prefix):]); ok && cs.alive[ci] {
				s.mark(ci, r.Exact)
			}
		}
	}
	return true
}

// estimateCovered is how many candidates the keys estimateKeys reads of a
// value must pass before it estimates the value's count from them.
const estimateCovered = 8

// estimateKeys returns about how many keys s.lookups (single values)
// hold, the candidates (order: the alive ones in id order) as the
// yardstick of the id space: each value's keys are read, in id order,
// until they pass estimateCovered candidates, and the value's count
// estimated as keys read × alive candidates / candidates passed. A value
// whose keys end first is counted; one whose keys pass fewer candidates
// than that in 4 keys per candidate (a fourth of the seeks lookupSorted
// would make) is estimated from what they passed (at least one). The
// estimate only chooses how the candidates are checked (joinValues or
// lookupSorted); both give the same answer.
func (s *rangeScan) estimateKeys(ib *indexView, cs *candidates, order []int32) int {
	if s.param == "_id" {
		return len(s.lookups)
	}
	c := keysOf(ib)
	total := 0
	var prefix []byte
	limit := 4*len(order) + indexScanChunk
	for _, r := range s.lookups {
		v, _ := exactValue(r)
		prefix = append(append(prefix[:0], v...), 0)
		read, passed := 0, 0
		k := c.Seek(prefix)
		for ; k != nil && bytes.HasPrefix(k, prefix); k = c.Next() {
			if read++; read%16 == 0 {
				id := string(k[len(prefix):])
				passed = sort.Search(len(order), func(j int) bool { return cs.ids[order[j]] >= id })
				if passed >= estimateCovered || read >= limit {
					break
				}
			}
		}
		if k == nil || !bytes.HasPrefix(k, prefix) { // counted
			total += read
			continue
		}
		total += read * len(order) / max(passed, 1)
	}
	return total
}

// inIDOrder returns the alive candidates in id order.
func (cs *candidates) inIDOrder() []int32 {
	type idAt struct {
		id string
		i  int32
	}
	alive := make([]idAt, 0, cs.n)
	for i, id := range cs.ids {
		if cs.alive[i] {
			alive = append(alive, idAt{id, int32(i)})
		}
	}
	byID := func(a, b idAt) int { return strings.Compare(a.id, b.id) }
	if !slices.IsSortedFunc(alive, byID) { // one value's keys come in id order
		slices.SortFunc(alive, byID)
	}
	order := make([]int32, len(alive))
	for j, a := range alive {
		order[j] = a.i
	}
	return order
}

// lookupSteps is how many keys a lookup first steps forward before it
// seeks (a seek costs about as much as reading a dozen keys in order);
// maxLookupSteps bounds it.
const (
	lookupSteps    = 8
	maxLookupSteps = 64
)

// exactValue returns what the keys of a range holding exactly one value
// start with (value 0x00 … value 0x01; the value is a tag and an index
// value in lookupRanges' ranges).
func exactValue(r search.KeyRange) ([]byte, bool) {
	n := len(r.Lo)
	if n == 0 || len(r.Hi) != n || r.Lo[n-1] != 0 || r.Hi[n-1] != 1 || !bytes.Equal(r.Lo[:n-1], r.Hi[:n-1]) {
		return nil, false
	}
	return r.Lo[:n-1], true
}

// indexScanChunk is how many keys each filter reads per turn.
const indexScanChunk = 256

// intersectFactor bounds how far a filter without few values reads once
// the driver is known: up to this many times the driver's keys (reading a
// key costs a small fraction of evaluating a candidate); beyond, the
// evaluator decides.
const intersectFactor = 16

// indexCandidates returns, in id order, the ids of typ that may match
// every filter, and exact[i] true when ids[i] was found through Exact
// ranges of every filter (search.KeyRange). ok is false when there are no
// filters.
//
// The filters are read in turns of indexScanChunk keys; the first to
// finish is the driver (the most selective: choosing it costs about the
// number of filters times its keys), and its ids the candidates. The
// other filters with many values are then read on in turns too, keeping
// only the candidates: each that finishes drops those it lacks, so the
// rest work on fewer; one that has not finished at intersectFactor times
// the driver is left to the evaluator. Then the filters with few values
// (lookupRanges), fewest estimated keys first (estimateKeys), each either
// walked with its ids looked up among the candidates (joinValues) or
// merged with the candidates in id order (lookupSorted), whichever its
// estimate says reads less; and _lastUpdated with many values is checked
// on the record headers.
func (p *ptx) indexCandidates(typ string, filters []search.IndexFilter) (ids []string, exact []bool, ok bool, err error) {
	ids, exact, _, ok, err = p.candidateRecords(typ, filters)
	return ids, exact, ok, err
}

// candidateRecords is indexCandidates, with recs[i] the record of ids[i]
// when finding the candidates read it (to check _lastUpdated on its
// header), else nil (valid in the transaction; recs is nil when none
// was read): what reads the candidates next need not read it again.
func (p *ptx) candidateRecords(typ string, filters []search.IndexFilter) (ids []string, exact []bool, recs [][]byte, ok bool, err error) {
	if len(filters) == 0 || p.noIndex {
		return nil, nil, nil, false, nil
	}
	ib, err := p.indexBucket(typ)
	if err != nil {
		return nil, nil, nil, false, err
	}
	if ib == nil {
		return nil, nil, nil, true, nil // nothing of typ was ever written
	}
	var scans []*rangeScan
	for _, f := range filters {
		ranges, ok := filterRanges(typ, f)
		if !ok {
			continue // left to the evaluator
		}
		scans = append(scans, &rangeScan{param: f.Param, ranges: ranges, c: keysOf(ib)})
	}
	if len(scans) == 0 {
		return nil, nil, nil, false, nil
	}
	driver := -1
	for driver < 0 {
		for i, s := range scans {
			if s.collect(indexScanChunk) {
				driver = i
				break
			}
		}
	}
	d := scans[driver]
	cs := &candidates{index: newIDSet(len(d.ends))}
	// One string holds every id read: the candidates are its pieces, not
	// one allocation each.
	all := string(d.buf)
	start := 0
	for j, end := range d.ends {
		id := all[start:end]
		start = end
		if i, added := cs.index.addString(id); !added {
			cs.sure[i] = cs.sure[i] || d.exact[j]
			continue
		}
		cs.sure = append(cs.sure, d.exact[j])
	}
	cs.ids = cs.index.ids
	cs.n = len(cs.ids)
	cs.alive = make([]bool, cs.n)
	for i := range cs.alive {
		cs.alive[i] = true
	}
	budget := intersectFactor*len(d.ends) + indexScanChunk

	// The others: what they read while the driver was chosen, then on.
	var probing, lookup, headers []*rangeScan
	evaluator := false
	for i, s := range scans {
		if i == driver {
			continue
		}
		if s.param == "_id" {
			s.collect(0) // its ids, at once
		}
		s.found = make([]uint8, len(cs.ids))
		start := 0
		for j, end := range s.ends {
			if ci, ok := cs.index.lookup(s.buf[start:end]); ok {
				s.mark(ci, s.exact[j])
			}
			start = end
		}
		s.buf, s.ends, s.exact = nil, nil, nil
		if s.done {
			cs.keep(func(i int) uint8 { return s.found[i] })
			continue
		}
		var few bool
		s.lookups, few = lookupRanges(ib, s.param, s.ranges)
		switch {
		case few:
			lookup = append(lookup, s)
		case s.param == "_lastUpdated":
			// The record's header holds it: checked there.
			headers = append(headers, s)
		default:
			probing = append(probing, s)
		}
	}
	for len(probing) > 0 && cs.n > 0 {
		still := probing[:0]
		for _, s := range probing {
			if s.read >= budget {
				evaluator = true
				continue
			}
			for n := min(indexScanChunk, budget-s.read); n > 0; n-- {
				id, exact, ok := s.next()
				if !ok {
					break
				}
				if ci, ok := cs.index.lookup(id); ok {
					s.mark(ci, exact)
				}
			}
			if s.done {
				cs.keep(func(i int) uint8 { return s.found[i] })
				continue
			}
			still = append(still, s)
		}
		probing = still
	}
	// The filters with few values: each value's keys are walked, its ids
	// looked up among the candidates, while that reads few keys per
	// candidate; else the candidates left are looked up in id order.
	var order []int32
	sorted := func() []int32 {
		if order == nil {
			order = cs.inIDOrder()
		}
		return order
	}
	//
	// Which of the two is cheaper depends on how many keys the values
	// have against the candidates, so each filter's keys are estimated
	// first (estimateKeys: the first keys of each value, the candidates as the
	// yardstick of the id space), and the filters go in the order of
	// their estimates: the one with fewest keys most likely drops most
	// candidates, and the next looks up fewer.
	for _, s := range lookup {
		s.estimate = s.estimateKeys(ib, cs, sorted())
	}
	slices.SortStableFunc(lookup, func(a, b *rangeScan) int { return cmp.Compare(a.estimate, b.estimate) })
	for _, s := range lookup {
		if cs.n == 0 {
			break
		}
		budget := joinKeys(cs.n)
		if s.estimate > budget || !s.joinValues(ib, cs, budget) {
			s.lookupSorted(ib, cs, sorted())
		}
		cs.keep(func(i int) uint8 { return s.found[i] })
	}
	if order != nil { // the alive ones again, fewer: still in id order
		order = slices.DeleteFunc(order, func(i int32) bool { return !cs.alive[i] })
	}
	order = sorted()
	updatedKeys := map[int64][][]byte{} // _lastUpdated keys by header time
	records := p.records(typ)
	var read [][]byte // by candidate: the records read for their headers
	if len(headers) > 0 {
		read = make([][]byte, len(cs.ids))
	}
	var key []byte
	for _, s := range headers {
		for _, i := range order {
			if !cs.alive[i] {
				continue
			}
			if read[i] == nil {
				read[i] = records.get(cs.ids[i])
			}
			in, ex := true, false
			if rec := read[i]; rec != nil {
				ms := recordLastUpdated(rec)
				if _, ok := updatedKeys[ms]; !ok {
					updatedKeys[ms] = lastUpdatedKeys(typ, ms)
				}
				in, ex, key = keysInRanges(updatedKeys[ms], s.ranges, cs.ids[i], key)
			}
			if !in {
				cs.alive[i] = false
				cs.n--
				continue
			}
			cs.sure[i] = cs.sure[i] && ex
		}
	}
	ids = make([]string, 0, cs.n)
	exact = make([]bool, 0, cs.n)
	if read != nil {
		recs = make([][]byte, 0, cs.n)
	}
	for _, i := range order {
		if cs.alive[i] {
			ids = append(ids, cs.ids[i])
			exact = append(exact, cs.sure[i] && !evaluator)
			if read != nil {
				recs = append(recs, read[i])
			}
		}
	}
	for _, id := range unreadableIDs(ib) {
		ids = append(ids, id)
		exact = append(exact, false)
		if read != nil {
			recs = append(recs, nil)
		}
	}
	return ids, exact, recs, true, nil
}

// lastUpdatedKeys returns the index keys (without the id) of _lastUpdated
// for a resource of typ written at ms (Unix milliseconds): its tag and
// what IndexKeys gives for the meta.lastUpdated the write stamped.
func lastUpdatedKeys(typ string, ms int64) [][]byte {
	tag, ok := search.IndexTag(typ, "_lastUpdated")
	if !ok {
		return nil
	}
	p := search.IndexedParams(typ)[tag-1]
	res := map[string]any{"resourceType": typ, "meta": map[string]any{"lastUpdated": instant(time.UnixMilli(ms))}}
	var out [][]byte
	for _, v := range search.IndexKeys(p, res) {
		out = append(out, append([]byte{tag}, v...))
	}
	return out
}

// keysInRanges reports whether one of the index keys (without the id) of
// resource id lies in one of ranges, and whether one lies in an Exact one;
// it builds the keys in buf and returns it for the next call.
func keysInRanges(values [][]byte, ranges []search.KeyRange, id string, buf []byte) (in, exact bool, _ []byte) {
	for _, v := range values {
		buf = append(append(append(buf[:0], v...), 0), id...)
		key := buf
		for _, r := range ranges {
			if bytes.Compare(r.Lo, key) <= 0 && bytes.Compare(key, r.Hi) < 0 {
				in, exact = true, exact || r.Exact
			}
		}
	}
	return in, exact, buf
}

// unionCandidates returns, in id order, the ids of typ with a key in any
// of filters (each read on its own); ok is false when the index cannot
// answer one of them.
func (p *ptx) unionCandidates(typ string, filters []search.IndexFilter) (ids []string, ok bool, err error) {
	seen := map[string]bool{}
	for _, f := range filters {
		some, _, ok, err := p.indexCandidates(typ, []search.IndexFilter{f})
		if err != nil || !ok {
			return nil, false, err
		}
		for _, id := range some {
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
	}
	slices.Sort(ids)
	return ids, true, nil
}

// orderedIDs returns ids of live resources of typ in the order of a
// single date sort key (see search.Query.OrderParam): by the key's value,
// ascending or descending, equal values and resources without one (last)
// in id order. keep (nil: every id) chooses which go into the list
// (with prefix); once want are kept (0: no bound) the list is complete,
// and reading more than maxKeys keys (0: no bound) before that gives up.
// ok is false when the index cannot give the order (it is off, the
// parameter has no sort keys, or some resource of typ is unreadable: only
// a scan reports those) or gave up.
func (p *ptx) orderedIDs(typ, param string, desc bool, prefix string, keep func(id []byte) bool, want, maxKeys int) (list refList, ok bool, err error) {
	if p.noIndex {
		return refList{}, false, nil
	}
	ib, err := p.indexBucket(typ)
	if err != nil || ib == nil {
		return refList{prefix: prefix}, err == nil, err
	}
	tag, ok := search.IndexTag(typ, param)
	if !ok || len(unreadableIDs(ib)) > 0 {
		return refList{}, false, nil
	}
	lo := append([]byte{tag}, search.OrderRange().Lo...)
	missing := append([]byte{tag}, search.OrderMissingValue()...)
	// Every order key is the tag, the value (kind byte and a time of
	// fixed width, as the missing one), 0x00 and the id: in key order,
	// ascending values, equal ones in id order, the missing ones last.
	// The cursor only moves forward: a descending order is read
	// ascending and its runs of equal values put back to front.
	idAt := len(missing) + 1
	inRange := func(k []byte) bool { return len(k) > idAt && k[0] == tag && k[1] == lo[1] }
	out := refListBuilder{prefix: prefix, buf: make([]byte, 0, 1<<16), spans: make([]refSpan, 0, max(want, 0))}
	var ties []refSpan // descending: runs of equal values (first, end)
	var value []byte
	runStart := 0
	read := 0
	c := keysOf(ib)
	k := c.Seek(lo)
	for ; inRange(k) && (!desc || bytes.Compare(k, missing) < 0); k = c.Next() {
		if read++; maxKeys > 0 && read > maxKeys {
			return refList{}, false, nil
		}
		if keep != nil && !keep(k[idAt:]) {
			continue
		}
		if desc && !bytes.Equal(k[:idAt], value) {
			if out.len()-runStart > 1 {
				ties = append(ties, refSpan{uint32(runStart), uint32(out.len())})
			}
			runStart = out.len()
			value = append(value[:0], k[:idAt]...)
		}
		out.add(k[idAt:])
		if !desc && want > 0 && out.len() == want {
			return out.list(), true, nil
		}
	}
	if !desc {
		return out.list(), want <= 0 || out.len() == want, nil
	}
	// The elements stay where they are; their spans are reversed, and
	// each run of equal values back to id order.
	if out.len()-runStart > 1 {
		ties = append(ties, refSpan{uint32(runStart), uint32(out.len())})
	}
	n := uint32(out.len())
	slices.Reverse(out.spans)
	for _, t := range ties {
		slices.Reverse(out.spans[n-t.end : n-t.start])
	}
	for ; inRange(k); k = c.Next() {
		if want > 0 && out.len() == want {
			break
		}
		if read++; maxKeys > 0 && read > maxKeys {
			return refList{}, false, nil
		}
		if keep == nil || keep(k[idAt:]) {
			out.add(k[idAt:])
		}
	}
	return out.list(), want <= 0 || out.len() == want, nil
}

// referencedBy returns the targets ("Type/id") of reference parameter
// param of the resources ids of typ (in id order), read from the index:
// each distinct value of the parameter's reference keys is a target of
// those resources if one of them has its key (found by stepping through
// the value's ids and the resources' ids together, both in id order). ok
// is false when the index cannot tell: no index, a value it may have
// changed (search.RefKeyTarget), or more work than reading the resources
// (maxJoinSeeksPerID seeks per resource).
func (p *ptx) referencedBy(typ, param string, ids []string) (map[string]bool, bool, error) {
	if p.noIndex {
		return nil, false, nil
	}
	tag, ok := search.IndexTag(typ, param)
	if !ok {
		return nil, false, nil
	}
	ib, err := p.indexBucket(typ)
	if err != nil || ib == nil {
		return map[string]bool{}, err == nil, err
	}
	budget := maxJoinSeeksPerID*len(ids) + indexScanChunk
	targets := map[string]bool{}
	r := search.ReferenceRange()
	lo, hi := append([]byte{tag}, r.Lo...), append([]byte{tag}, r.Hi...)
	values := keysOf(ib) // walks from value to value
	probe := keysOf(ib)  // looks the resources up in one value
	var key []byte
	for k := values.Seek(lo); k != nil && bytes.Compare(k, hi) < 0; {
		cut := bytes.LastIndexByte(k, 0)
		value := bytes.Clone(k[1:cut])
		prefix := append(append([]byte{tag}, value...), 0)
		// Is one of ids among the value's ids? Both lists are in id
		// order: seek the next resource, then skip the resources before
		// the key found.
		for i := 0; i < len(ids); {
			if budget--; budget < 0 {
				return nil, false, nil
			}
			key = append(append(key[:0], prefix...), ids[i]...)
			got := probe.Seek(key)
			if got == nil || !bytes.HasPrefix(got, prefix) {
				break // no key of this value at or after ids[i]
			}
			if bytes.Equal(got, key) {
				ref, ok := search.RefKeyTarget(value)
				if !ok {
					return nil, false, nil
				}
				targets[ref] = true
				break
			}
			next := string(got[len(prefix):])
			i += sort.SearchStrings(ids[i:], next)
		}
		k = values.Seek(append(append([]byte{tag}, value...), 1))
	}
	return targets, true, nil
}

// maxJoinSeeksPerID bounds the lookups referencedBy makes per resource
// (about what reading the resource costs).
const maxJoinSeeksPerID = 8
