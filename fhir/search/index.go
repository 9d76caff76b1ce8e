package search

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"math/big"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/pfrgateway/caddy-pfr/fhir/fhirpath"
	"github.com/pfrgateway/caddy-pfr/fhir/searchparam"
)

// Index keys let a store find the candidates of a search without reading
// every resource of the type. For each indexed parameter a resource has a
// set of keys (IndexKeys); each filter a query can answer from an index
// has key ranges (IndexFilters) such that every resource the filter
// matches has at least one key in one of the ranges. The ranges may admit
// more: the store checks each candidate with Match, so an index narrows
// the reading, never the answer.
//
// A key is a kind byte, the value, 0x00, and the resource id (ids never
// hold 0x00, so the id is what follows the last 0x00). Values longer than
// maxIndexValue bytes are cut; the query side cuts the same way.
//
// A token key is code 0x01 '*' for a code whose system is implied (a code,
// string or boolean element) or code 0x01 '=' system for a Coding or an
// Identifier; a reference key is id '/' Type. Bytes below 0x04 in stored
// values become 0x04, so the separators are unambiguous: a range that
// reads one whole value (or, for a bare code or id, one whole prefix) is
// Exact, and a store may skip the evaluator for a filter answered by
// exact ranges only.
const (
	kindToken    = 'c' // token code (system is checked by Match)
	kindRefID    = 'r' // id of a reference (type is checked by Match)
	kindRefExact = 'x' // a reference compared as a whole (urn:, canonical)
	kindString   = 's' // normalized string, searched by prefix
	kindURI      = 'u' // uri as written
	kindLow      = 'l' // low end of a date range or number interval
	kindHigh     = 'h' // high end of a date range or number interval
	kindOrder    = 'o' // the value a resource sorts by (dates)
	kindInverted = 'w' // a date range or interval that ends before it starts
	kindPoint    = 'n' // a number that is a point: its low and high key in one (pointAlso)
	// kindPair ('p', pairindex.go) starts a composite's pair key.
)

const maxIndexValue = 128

// IndexVersion names the key layout (4: with pair keys; 5: a union's keys
// not stored, see KeysOf; 6: a date's low key that its order key repeats
// not stored, see lowAlsoOrder; 7: a number that is a point has one key,
// see pointKey) and the indexed parameters of every type
// (IndexedParams, whose positions a store may use as short tags). A store
// that finds indexes of another version rebuilds them.
func IndexVersion() string {
	indexVersionOnce.Do(func() {
		h := crc32.NewIEEE()
		for _, t := range searchparam.ResourceTypes() {
			h.Write([]byte(t))
			for _, p := range IndexedParams(t) {
				h.Write([]byte{0})
				h.Write([]byte(p.Code + " " + p.Type + " " + p.Expression))
			}
		}
		indexVersion = fmt.Sprintf("7-%08x", h.Sum32())
	})
	return indexVersion
}

var (
	indexVersionOnce sync.Once
	indexVersion     string
)

// IndexTag returns the one-byte tag of parameter code among the indexed
// parameters of resourceType: its position in IndexedParams plus one (no
// type has more than 254); ok is false for a parameter not indexed, and
// for one whose keys a store does not write (KeysOf: its keys are under
// other tags).
func IndexTag(resourceType, code string) (byte, bool) {
	i := slices.IndexFunc(IndexedParams(resourceType), func(p *searchparam.Param) bool { return p.Code == code })
	if i < 0 || i >= 254 || keyPlanOf(resourceType).unionOf[i] != nil {
		return 0, false
	}
	return byte(i + 1), true
}

// IndexTags returns the tags under which a store finds the keys of
// parameter code of resourceType: its own (IndexTag), or those of the
// parameters whose keys together are its keys (KeysOf); ok is false for
// a parameter not indexed.
func IndexTags(resourceType, code string) ([]byte, bool) {
	if tag, ok := IndexTag(resourceType, code); ok {
		return []byte{tag}, true
	}
	i := slices.IndexFunc(IndexedParams(resourceType), func(p *searchparam.Param) bool { return p.Code == code })
	if i < 0 || i >= 254 {
		return nil, false
	}
	var tags []byte
	for _, j := range keyPlanOf(resourceType).unionOf[i] {
		tags = append(tags, byte(j+1))
	}
	return tags, tags != nil
}

// KeysOf reports, for each of IndexedParams(resourceType), whether a
// store writes its keys (ResourceKeys): false for a parameter whose keys
// are those of other indexed parameters together (an Observation's
// combo-code is code | component-code), which a store reads under their
// tags instead (IndexTags). Its keys would repeat theirs: 3 of an
// Observation's 19 in bench/store's record.
// The slice is shared: do not modify it.
func KeysOf(resourceType string) []bool { return keyPlanOf(resourceType).stored }

// ValuePlaced reports, for each of IndexedParams(resourceType), whether
// its keys are ordered by a measured value: a quantity's or a number's,
// alone or paired with a code (an Observation's value-quantity and
// code-value-quantity). Such a key's place among the parameter's keys
// depends on the value, not on when the resource was written, so a
// store's writes of them land at random places of long runs, where
// the keys of other parameters (a code's, a subject's, a date's, each
// value's followed by an id that rises with time) mostly land at the
// end of their value's run. The slice is shared: do not modify it.
func ValuePlaced(resourceType string) []bool { return keyPlanOf(resourceType).byValue }

// KeyRange is the keys k with Lo <= k < Hi, byte-wise. Exact says that
// every resource with a key in the range matches the filter value the
// range was made for (else the evaluator decides).
type KeyRange struct {
	Lo, Hi []byte
	Exact  bool
}

// IndexFilter is one filter of a query answered by an index: a resource
// may match it only if one of its keys for Param lies in one of Ranges.
// Param "_id" is not indexed (Indexed): its ranges are IDRange values, to
// look up by id.
type IndexFilter struct {
	Param  string
	Ranges []KeyRange
}

// Indexed reports whether a store indexes parameter p on every type it
// applies to (IndexKeys gives its keys). A composite parameter is not: it
// is indexed on the types where its components are (pair keys: see
// pairOf), which IndexedParams lists.
func Indexed(p *searchparam.Param) bool {
	if p.Expression == "" || p.Code == "_id" { // a store finds ids by id
		return false
	}
	switch p.Type {
	case searchparam.TypeToken, searchparam.TypeReference, searchparam.TypeString,
		searchparam.TypeDate, searchparam.TypeNumber, searchparam.TypeQuantity, searchparam.TypeURI:
		return true
	}
	return false
}

var indexedParams sync.Map // resource type → []*searchparam.Param

// IndexedParams returns the parameters of resourceType a store indexes.
// The slice is shared: do not modify it.
func IndexedParams(resourceType string) []*searchparam.Param {
	if v, ok := indexedParams.Load(resourceType); ok {
		return v.([]*searchparam.Param)
	}
	var out []*searchparam.Param
	for _, p := range searchparam.ForType(resourceType) {
		if _, pair := pairOf(p, resourceType); Indexed(p) || pair {
			out = append(out, p)
		}
	}
	indexedParams.Store(resourceType, out)
	return out
}

// IndexKeys returns the index values of res for p, each as kind+value
// (the store appends 0x00 and the id). Duplicates are removed. The keys
// of a pair-indexed composite are those of its components' parameters,
// paired (pairKeys).
func IndexKeys(p *searchparam.Param, res map[string]any) [][]byte {
	s := shapeOf(res)
	if pp, ok := pairOf(p, s.typ); ok {
		return pairKeys(indexKeysIn(pp.code, res, s), indexKeysIn(pp.value, res, s))
	}
	return indexKeysIn(p, res, s)
}

// ResourceKeys returns IndexKeys of res for every parameter of
// IndexedParams(resourceType), in that order: what the parameters share
// (the resource's shape: see mayHave) looked at once, and a parameter
// whose expression is the union of other indexed parameters' (an
// Observation's combo-code is code | component-code) given the union of
// their keys, and a pair-indexed composite the pairs of its components'
// keys, without evaluating them again.
func ResourceKeys(resourceType string, res map[string]any) [][][]byte {
	plan := keyPlanOf(resourceType)
	out := make([][][]byte, len(plan.params))
	failed := make([]bool, len(plan.params))
	s := shapeOf(res)
	for i, p := range plan.params {
		if plan.unionOf[i] == nil && plan.pairOf[i] == nil {
			roots, expr := plan.roots[i], plan.exprs[i]
			if s.typ != resourceType { // what the plan is not for
				roots, expr = rootsOf(p, s.typ), nil
			}
			nodes, err := evaluatePlanned(p, roots, expr, res, s)
			out[i], failed[i] = keysOfNodes(p, nodes), err != nil
		}
	}
	for i, parts := range plan.unionOf {
		var keys [][]byte
		for _, j := range parts {
			if failed[j] { // the union fails as a whole: no keys
				keys = nil
				break
			}
			for _, k := range out[j] {
				if !slices.ContainsFunc(keys, func(o []byte) bool { return bytes.Equal(o, k) }) {
					keys = append(keys, k)
				}
			}
		}
		if parts != nil {
			out[i] = keys
		}
	}
	for i, pair := range plan.pairOf {
		if pair != nil && !failed[pair[0]] && !failed[pair[1]] {
			out[i] = pairKeys(out[pair[0]], out[pair[1]])
		}
	}
	return out
}

// keyPlan says how ResourceKeys computes the keys of one type's indexed
// parameters: unionOf[i] lists, in order, the parameters whose
// expressions joined by | are params[i]'s (each operand a path, maybe
// with "as Type": nothing that can fail to evaluate, so params[i]'s keys
// are always theirs together, and a store reads them instead of writing
// params[i]'s); pairOf[i] the positions of a
// pair-indexed composite's code and value parameters (both nil:
// params[i] is evaluated).
type keyPlan struct {
	params  []*searchparam.Param
	unionOf [][]int
	pairOf  [][]int
	// pairParams are the pair-indexed composites, in order.
	pairParams []pairParam
	// roots[i] and exprs[i] are rootsOf(params[i]) and the expression
	// params[i].Evaluate evaluates on a resource of the type (nil when
	// it does not compile: Evaluate then says why).
	roots [][]root
	exprs []*fhirpath.Expr
	// stored[i] is unionOf[i] == nil (KeysOf).
	stored []bool
	// byValue[i] says that params[i]'s keys are placed by a measured
	// value (ValuePlaced).
	byValue []bool
}

var keyPlans sync.Map // resource type → *keyPlan

// keyPlanOf returns the keyPlan of resourceType.
func keyPlanOf(resourceType string) *keyPlan {
	if v, ok := keyPlans.Load(resourceType); ok {
		return v.(*keyPlan)
	}
	params := IndexedParams(resourceType)
	plan := &keyPlan{params: params, unionOf: make([][]int, len(params)), pairOf: make([][]int, len(params)),
		roots: make([][]root, len(params)), exprs: make([]*fhirpath.Expr, len(params))}
	for i, p := range params {
		if pp, ok := pairOf(p, resourceType); ok {
			plan.pairOf[i] = []int{slices.Index(params, pp.code), slices.Index(params, pp.value)}
			plan.pairParams = append(plan.pairParams, pp)
		}
	}
	parts := make([][]string, len(params))
	for i, p := range params {
		parts[i] = unionParts(p.Expression, resourceType)
		if slices.ContainsFunc(parts[i], func(part string) bool { return !plainPath.MatchString(part) }) {
			parts[i] = nil
		}
		plan.roots[i] = rootsOf(p, resourceType)
		if e, err := p.Compiled(); err == nil {
			plan.exprs[i] = e.ForType(resourceType)
		}
	}
	for i, p := range params {
		// Not dates: their order key is the first value's, which a
		// union of keys cannot tell.
		if p.Type == searchparam.TypeDate || len(parts[i]) < 2 {
			continue
		}
		var of []int
		for at := 0; at < len(parts[i]); {
			best := -1
			for j, q := range params {
				if j == i || q.Type != p.Type || len(parts[j]) == 0 || len(parts[j]) >= len(parts[i]) ||
					at+len(parts[j]) > len(parts[i]) || !slices.Equal(parts[j], parts[i][at:at+len(parts[j])]) {
					continue
				}
				if best < 0 || len(parts[j]) > len(parts[best]) {
					best = j
				}
			}
			if best < 0 {
				of = nil
				break
			}
			of = append(of, best)
			at += len(parts[best])
		}
		plan.unionOf[i] = of
	}
	// A parameter given by others is not itself a part of another.
	for i, of := range plan.unionOf {
		if slices.ContainsFunc(of, func(j int) bool { return plan.unionOf[j] != nil }) {
			plan.unionOf[i] = nil
		}
	}
	plan.stored = make([]bool, len(params))
	for i, of := range plan.unionOf {
		plan.stored[i] = of == nil
	}
	plan.byValue = make([]bool, len(params))
	for i, p := range params {
		if pp := plan.pairOf[i]; pp != nil {
			p = params[pp[1]]
		}
		plan.byValue[i] = p.Type == searchparam.TypeQuantity || p.Type == searchparam.TypeNumber
	}
	v, _ := keyPlans.LoadOrStore(resourceType, plan)
	return v.(*keyPlan)
}

// plainPath is an operand of a union whose evaluation cannot fail: a path
// from the resource type, maybe cast ("(Observation.value as Quantity)"),
// no function, indexer or other operator.
var plainPath = regexp.MustCompile(`^\(?\s*[A-Z][A-Za-z0-9]*(\.[a-z][A-Za-z0-9]*)+(\s+as\s+[A-Z][A-Za-z0-9]*)?\s*\)?$`)

// unionParts returns the operands of the top-level unions of expr that
// select resourceType (those of other types dropped, as
// fhirpath.Expr.ForType drops them), nil when one of them may select
// something else (it starts with a lower-case name, Resource or
// DomainResource) or the expression cannot be split so.
func unionParts(expr, resourceType string) []string {
	var out []string
	depth, start := 0, 0
	for i := 0; i <= len(expr); i++ {
		if i < len(expr) {
			switch expr[i] {
			case '(', '[':
				depth++
				continue
			case ')', ']':
				depth--
				continue
			case '\'', '"', '`':
				return nil
			case '|':
				if depth == 0 {
					break
				}
				continue
			default:
				continue
			}
		}
		part := strings.TrimSpace(expr[start:i])
		start = i + 1
		name := strings.TrimLeft(part, "( ")
		if end := strings.IndexAny(name, ". )"); end >= 0 {
			name = name[:end]
		}
		switch {
		case name == resourceType:
			out = append(out, part)
		case name == "" || name == "Resource" || name == "DomainResource" || !unicode.IsUpper(rune(name[0])):
			return nil
		}
	}
	return out
}

// indexKeysIn is IndexKeys on res of shape s.
func indexKeysIn(p *searchparam.Param, res map[string]any, s *resourceShape) [][]byte {
	return keysOfNodes(p, evaluateIn(p, res, s))
}

// keysOfNodes returns the index values of p's values nodes.
func keysOfNodes(p *searchparam.Param, nodes []fhirpath.Node) [][]byte {
	var out [][]byte
	var buf []byte       // the keys' bytes, each key a full slice of it
	var sortBy time.Time // a date's sort value, when sorted
	sorted := false
	add := func(kind byte, v string) {
		if len(v) > maxIndexValue { // as indexValue cuts
			v = v[:maxIndexValue]
		}
		// A parameter has a few values: a linear look is cheaper
		// than a set.
		for _, o := range out {
			if len(o) == 1+len(v) && o[0] == kind && string(o[1:]) == v {
				return
			}
		}
		if buf == nil {
			buf, out = make([]byte, 0, 64), make([][]byte, 0, 4)
		}
		at := len(buf)
		buf = append(append(buf, kind), v...)
		out = append(out, buf[at:len(buf):len(buf)])
	}
	for _, n := range nodes {
		switch p.Type {
		case searchparam.TypeToken:
			for _, c := range codesOf(n.Value) {
				add(kindToken, tokenKey(c.code, c.system, c.implicit))
			}
		case searchparam.TypeReference:
			ref := referenceString(n.Value)
			if ref == "" {
				continue
			}
			if typ, id, ok := fhirpath.SplitReference(ref); ok {
				add(kindRefID, clean(id)+"/"+typ)
			}
			if strings.Contains(ref, ":") { // only such values are compared whole
				add(kindRefExact, clean(ref))
				add(kindRefExact, clean(stripVersion(ref)))
			}
		case searchparam.TypeString:
			for _, s := range stringsOf(n.Value) {
				add(kindString, normalize(s))
			}
		case searchparam.TypeURI:
			if s, ok := n.Value.(string); ok {
				add(kindURI, s)
			}
		case searchparam.TypeDate:
			ranges := dateRangesOf(n.Value)
			if !sorted && len(ranges) > 0 {
				// What sortValueOf gives: the start of the first
				// value's range.
				sortBy, sorted = ranges[0].lo, true
			}
			for _, r := range ranges {
				if r.lo.After(r.hi) {
					add(kindInverted, "")
				}
				add(kindLow, string(timeKey(r.lo)))
				add(kindHigh, string(timeKey(r.hi)))
			}
		case searchparam.TypeNumber, searchparam.TypeQuantity:
			// The low and high keys of an interval, one point key when
			// they are a point's (pointKey).
			interval := func(lo, hi string) {
				if pk, ok := pointKey(lo, hi); ok {
					add(kindPoint, pk)
				} else {
					add(kindLow, lo)
					add(kindHigh, hi)
				}
			}
			if f, m, ok := pointFloat(n.Value); ok {
				// What intervalsOf gives, the point first.
				if lo, hi, ok := floatKeys(f); ok {
					interval(lo, hi)
				}
				if m == nil {
					continue
				}
				if iv, ok := rangeInterval(m); ok {
					if iv.lo != nil && iv.hi != nil && iv.lo.Cmp(iv.hi) > 0 {
						add(kindInverted, "")
					}
					interval(string(ratKey(iv.lo, false)), string(ratKey(iv.hi, true)))
				}
				continue
			}
			for _, iv := range intervalsOf(n.Value) {
				if iv.lo != nil && iv.hi != nil && iv.lo.Cmp(iv.hi) > 0 {
					add(kindInverted, "")
				}
				interval(string(ratKey(iv.lo, false)), string(ratKey(iv.hi, true)))
			}
		}
	}
	if p.Type == searchparam.TypeDate {
		if sorted {
			// The order key stands for the low key of the same value
			// too (lowAlsoOrder): that one is not stored.
			v := timeKey(sortBy)
			out = slices.DeleteFunc(out, func(k []byte) bool { return k[0] == kindLow && bytes.Equal(k[1:], v) })
			out = append(out, indexValue(kindOrder, string(v)))
		} else {
			out = append(out, indexValue(kindOrder, string(orderMissing)))
		}
	}
	return out
}

// lowAlsoOrder adds to a date parameter's ranges of low keys the same
// ranges of order keys: a dated resource's order key is the low key of
// its first value (a time of fixed width, as the low keys), and that low
// key is not stored, so a resource's low keys are its kindLow keys and
// its order key together. The order ranges end before the value of the
// resources without one (orderMissing, above every time).
func lowAlsoOrder(ranges []KeyRange) []KeyRange {
	for _, r := range ranges {
		if len(r.Lo) == 0 || r.Lo[0] != kindLow {
			continue
		}
		o := KeyRange{Lo: append([]byte{kindOrder}, r.Lo[1:]...), Exact: r.Exact}
		if len(r.Hi) == 1 { // to the end of the low keys
			o.Hi = OrderMissingValue()
		} else {
			o.Hi = append([]byte{kindOrder}, r.Hi[1:]...)
		}
		ranges = append(ranges, o)
	}
	return ranges
}

// pointKey returns the value of a point's key (kindPoint) that stands for
// a low key of value lo and a high key of value hi (ratKey's): lo, then 0
// when hi is lo (a number a float64 holds) or 1 when hi is the float after
// lo (0.1, 101.2: the two floats around it). ok is false otherwise (an
// interval wider than that: its two keys are kept).
//
// A point's low and high keys are one key so (index version 7): the
// values a measured quantity takes are random, so every key of one lands
// at a random place of a long run, and two such keys cost a write twice
// what one does (see store's delta). A number's ranges of low or high
// keys read the point keys whose low or high value lies in them too
// (pointAlso).
func pointKey(lo, hi string) (string, bool) {
	if len(lo) != 8 || len(hi) != 8 {
		return "", false
	}
	l, h := binary.BigEndian.Uint64([]byte(lo)), binary.BigEndian.Uint64([]byte(hi))
	switch {
	case h == l:
		return lo + "\x00", true
	case h == l+1:
		return lo + "\x01", true
	}
	return "", false
}

// pointAlso adds to a number's key ranges the ranges of point keys
// (pointKey) standing for the keys of the ranges of low or high keys:
// a point key of value v and step d stands for a low key of value v and
// a high key of value v+d (the key values read as big-endian integers,
// which order them as the numbers), and both v and v+d rise with the
// point key, so the point keys whose low (high) value lies in a range
// are a range too, Exact as the range is.
func pointAlso(ranges []KeyRange) []KeyRange {
	for _, r := range ranges {
		if len(r.Lo) == 0 || r.Lo[0] != kindLow && r.Lo[0] != kindHigh {
			continue
		}
		ranges = append(ranges, KeyRange{Lo: pointBound(r.Lo), Hi: pointBound(r.Hi), Exact: r.Exact})
	}
	return ranges
}

// pointBound returns, for a bound b of a range of low or high keys (the
// kind alone: before all of them; the kind after it: after all of them;
// the kind and a value: before the keys of that value; followed by 0x01:
// after them), the least point key whose low or high key is at or after
// b.
func pointBound(b []byte) []byte {
	kind := b[0]
	if len(b) < 9 {
		if len(b) == 1 && (b[0] == kindLow || b[0] == kindHigh) {
			return []byte{kindPoint}
		}
		return []byte{kindPoint + 1}
	}
	t := binary.BigEndian.Uint64(b[1:9])
	if len(b) > 9 && b[9] > 0 { // after the keys of value t
		if t == math.MaxUint64 {
			return []byte{kindPoint + 1}
		}
		t++
	}
	// The least point (v, d) with v >= t (low) or v+d >= t (high).
	switch {
	case kind == kindLow:
		return binary.BigEndian.AppendUint64([]byte{kindPoint}, t)
	case t == 0:
		return []byte{kindPoint}
	}
	return append(binary.BigEndian.AppendUint64([]byte{kindPoint}, t-1), 1)
}

// pointFloat returns the float64 a number or quantity node holds as a
// point (the node itself, or a Quantity's value as decoded for search),
// and the node's object when it is one (a Range's ends are read from it
// as intervalsOf reads them).
func pointFloat(v any) (f float64, m map[string]any, ok bool) {
	switch v := v.(type) {
	case float64:
		return v, nil, true
	case map[string]any:
		f, ok := v["value"].(float64)
		return f, v, ok
	}
	return 0, nil, false
}

// floatKeys returns the low and high key values (without kind) of the
// point f, as intervalsOf and ratKey give them (ok false when f is no
// number: no keys). The exact rational arithmetic took a tenth of a
// resource's keys; measured values repeat (a device's readings have a
// few hundred), so the last answers are kept, by f's bits, in a small
// table shared by every goroutine (a pure function: any entry found is
// the answer).
func floatKeys(f float64) (lo, hi string, ok bool) {
	bits := math.Float64bits(f)
	slot := &floatKeyTable[(bits*0x9e3779b97f4a7c15)>>(64-floatKeyBits)]
	if e := slot.Load(); e != nil && e.bits == bits {
		return e.lo, e.hi, e.ok
	}
	e := &floatKeyEntry{bits: bits}
	if r, ok := toRat(f); ok {
		e.lo, e.hi, e.ok = string(ratKey(r, false)), string(ratKey(r, true)), true
	}
	slot.Store(e)
	return e.lo, e.hi, e.ok
}

// floatKeyTable holds floatKeys' last answers, 2^floatKeyBits of them.
const floatKeyBits = 12

var floatKeyTable [1 << floatKeyBits]atomic.Pointer[floatKeyEntry]

type floatKeyEntry struct {
	bits   uint64
	lo, hi string
	ok     bool
}

// tokenKey is the value of a token key: the code, 0x01, then '*' when the
// system is implied, else '=' and the system.
func tokenKey(code, system string, implicit bool) string {
	if implicit {
		return clean(code) + "\x01*"
	}
	return clean(code) + "\x01=" + clean(system)
}

// clean maps the bytes below 0x04 (never in a FHIR code or URI, possible
// in a string only as an escape) to 0x04, so that 0x00 and 0x01 stay
// separators.
func clean(v string) string {
	if !strings.ContainsFunc(v, isLow) {
		return v
	}
	b := []byte(v)
	for i, c := range b {
		if c < 4 {
			b[i] = 4
		}
	}
	return string(b)
}

func isLow(r rune) bool { return r < 4 }

// fits reports whether a key value made of parts (and separators, sep
// bytes in all) is compared whole (an exact range): no byte clean would
// change and not cut at maxIndexValue.
func fits(sep int, parts ...string) bool {
	n := sep
	for _, v := range parts {
		if strings.ContainsFunc(v, isLow) {
			return false
		}
		n += len(v)
	}
	return n < maxIndexValue
}

// intervalsOf returns every interval a number or quantity node may be
// compared as: its value as a point and, for a Range, its low and high.
func intervalsOf(v any) []interval {
	var out []interval
	if r, ok := toRat(v); ok {
		return []interval{{r, r}}
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil
	}
	if r, ok := toRat(m["value"]); ok {
		out = append(out, interval{r, r})
	}
	if iv, ok := rangeInterval(m); ok {
		out = append(out, iv)
	}
	return out
}

// indexValue is kind+value, the value cut at maxIndexValue bytes.
func indexValue(kind byte, v string) []byte {
	if len(v) > maxIndexValue {
		v = v[:maxIndexValue]
	}
	return append([]byte{kind}, v...)
}

// timeKey encodes t so that byte order is time order: seconds since the
// Unix epoch with the sign bit flipped, then nanoseconds, big-endian.
func timeKey(t time.Time) []byte {
	b := make([]byte, 12)
	binary.BigEndian.PutUint64(b, uint64(t.Unix())^(1<<63))
	binary.BigEndian.PutUint32(b[8:], uint32(t.Nanosecond()))
	return b
}

// orderMissing is the sort value of a resource without one: after every
// time (timeKey of year 10000 starts with 0x80).
var orderMissing = []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// OrderMissing reports whether an order key (kind byte included) is that
// of a resource without a value: those sort last in either direction.
func OrderMissing(v []byte) bool {
	return len(v) == 1+len(orderMissing) && v[0] == kindOrder && bytes.Equal(v[1:], orderMissing)
}

// ratKey encodes r as a float64 whose byte order is numeric order,
// rounded down (or up, when up) so the key never lies inside the
// interval the exact value bounds. nil is -∞ (or +∞ when up).
func ratKey(r *big.Rat, up bool) []byte {
	var f float64
	switch {
	case r == nil && up:
		f = math.Inf(1)
	case r == nil:
		f = math.Inf(-1)
	default:
		f, _ = r.Float64()
		if !math.IsInf(f, 0) {
			c := new(big.Rat).SetFloat64(f).Cmp(r)
			if up && c < 0 {
				f = math.Nextafter(f, math.Inf(1))
			} else if !up && c > 0 {
				f = math.Nextafter(f, math.Inf(-1))
			}
		}
	}
	bits := math.Float64bits(f)
	if bits&(1<<63) != 0 {
		bits = ^bits
	} else {
		bits |= 1 << 63
	}
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, bits)
	return b
}

// IDRange is the range of _id filters: the id is Lo[1:len(Lo)-1].
func IDRange(id string) KeyRange {
	r := exactRange(kindToken, id)
	r.Exact = true // looked up by id
	return r
}

// ReferenceFilter is the index filter of reference parameter param
// pointing at typ/id (as param=typ/id searches it).
func ReferenceFilter(param, typ, id string) IndexFilter {
	return IndexFilter{Param: param, Ranges: []KeyRange{refRange(id, typ)}}
}

// refRange is every reference key of Type/id exactly.
func refRange(id, typ string) KeyRange {
	r := exactRange(kindRefID, clean(id)+"/"+typ)
	r.Exact = fits(1, id, typ)
	return r
}

// ReferenceRange is the key range of every reference key of a reference
// parameter (RefKeyTarget reads their values).
func ReferenceRange() KeyRange { return KeyRange{Lo: []byte{kindRefID}, Hi: []byte{kindRefID + 1}} }

// RefKeyTarget returns "Type/id" of the value of a reference key (kind
// byte included, as IndexKeys gives it), as the reference was read
// (fhirpath.SplitReference); ok is false when the value may have been
// changed on its way into the key (cut at its length limit, or a byte
// clean replaced).
func RefKeyTarget(v []byte) (ref string, ok bool) {
	if len(v) < 2 || v[0] != kindRefID || len(v) >= maxIndexValue || bytes.IndexByte(v, 4) >= 0 {
		return "", false
	}
	slash := bytes.LastIndexByte(v, '/')
	if slash < 1 || !searchparam.IsResourceType(string(v[slash+1:])) {
		return "", false
	}
	return string(v[slash+1:]) + "/" + string(v[1:slash]), true
}

// IDOfRange returns the id of an IDRange.
func IDOfRange(r KeyRange) string { return string(r.Lo[1 : len(r.Lo)-1]) }

// exactRange is every key of value v (of this kind) exactly.
func exactRange(kind byte, v string) KeyRange {
	lo := append(indexValue(kind, v), 0)
	return KeyRange{Lo: lo, Hi: append(indexValue(kind, v), 1)}
}

// prefixRange is every key whose value starts with v.
func prefixRange(kind byte, v string) KeyRange {
	lo := indexValue(kind, v)
	return KeyRange{Lo: lo, Hi: prefixEnd(lo)}
}

// prefixEnd is the least byte string greater than every string with
// prefix p.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil // unreachable: p starts with a kind byte below 0xff
}

// atLeast is the keys of kind whose fixed-width value is >= v;
// atMost those whose value is <= v.
func atLeast(kind byte, v []byte) KeyRange {
	return KeyRange{Lo: append([]byte{kind}, v...), Hi: []byte{kind + 1}}
}

func atMost(kind byte, v []byte) KeyRange {
	return KeyRange{Lo: []byte{kind}, Hi: append(append([]byte{kind}, v...), 1)}
}

func between(kind byte, lo, hi []byte) KeyRange {
	return KeyRange{Lo: append([]byte{kind}, lo...), Hi: append(append([]byte{kind}, hi...), 1)}
}

// indexRanges returns the key ranges that hold every resource matching one
// value of p with modifier, or ok=false when no index answers it. They
// follow the matchers in matchers.go and prefix.go: change both together.
func indexRanges(p *searchparam.Param, modifier, raw string) (ranges []KeyRange, ok bool) {
	ranges, ok = valueRanges(p, modifier, raw)
	switch p.Type {
	case searchparam.TypeDate, searchparam.TypeNumber, searchparam.TypeQuantity:
		// A range that ends before it starts is not ordered by its ends:
		// it is a candidate of every comparison.
		ranges = append(ranges, exactRange(kindInverted, ""))
	}
	return ranges, ok
}

func valueRanges(p *searchparam.Param, modifier, raw string) (ranges []KeyRange, ok bool) {
	switch p.Type {
	case searchparam.TypeToken:
		if modifier != "" {
			return nil, false
		}
		tv, err := parseToken(raw)
		if err != nil || !tv.hasCode {
			return nil, false
		}
		code := tv.code
		if !tv.hasSystem { // any system: the code's whole prefix
			r := prefixRange(kindToken, clean(code)+"\x01")
			r.Exact = fits(1, code)
			return []KeyRange{r}, true
		}
		// This system, or an implied one.
		explicit := exactRange(kindToken, tokenKey(code, tv.system, false))
		explicit.Exact = fits(2, code, tv.system)
		implicit := exactRange(kindToken, tokenKey(code, "", true))
		implicit.Exact = fits(2, code)
		return []KeyRange{explicit, implicit}, true
	case searchparam.TypeReference:
		if modifier == "identifier" {
			return nil, false
		}
		value := unescape(raw)
		typ, id, isRef := fhirpath.SplitReference(value)
		switch {
		case modifier != "" && isRef:
			return []KeyRange{refRange(id, modifier)}, true
		case modifier != "":
			return []KeyRange{refRange(value, modifier)}, true
		case isRef && typ != "":
			return []KeyRange{refRange(id, typ)}, true
		case strings.Contains(value, ":"):
			r := exactRange(kindRefExact, clean(value))
			r.Exact = fits(0, value)
			return []KeyRange{r}, true
		default: // a bare id: a reference of any type
			r := prefixRange(kindRefID, clean(value)+"/")
			r.Exact = fits(1, value)
			return []KeyRange{r}, true
		}
	case searchparam.TypeString:
		if modifier != "" && modifier != "exact" {
			return nil, false
		}
		folded := normalize(unescape(raw))
		r := prefixRange(kindString, folded)
		// The default search is a prefix of the normalized value.
		r.Exact = modifier == "" && fits(0, folded)
		return []KeyRange{r}, true
	case searchparam.TypeURI:
		switch modifier {
		case "":
			return []KeyRange{exactRange(kindURI, unescape(raw))}, true
		case "below":
			return []KeyRange{prefixRange(kindURI, unescape(raw))}, true
		}
		return nil, false
	case searchparam.TypeDate:
		pre, rest, err := splitPrefix(raw)
		if err != nil {
			return nil, false
		}
		s, err := parseDateRange(strings.ReplaceAll(rest, " ", "+"))
		if err != nil {
			return nil, false
		}
		lo, hi := timeKey(s.lo), timeKey(s.hi)
		// As prefix.go's matchDateRange: eq is "the target lies within
		// the search range" (low and high both inside: only the low is
		// read here, so not exact); the ranges past either end are exact.
		// A low key is read in the order keys too (lowAlsoOrder).
		within := func(kind byte) KeyRange { return between(kind, lo, hi) }
		above := KeyRange{Lo: append(append([]byte{kindHigh}, hi...), 1), Hi: []byte{kindHigh + 1}, Exact: true} // high > search high
		below := KeyRange{Lo: []byte{kindLow}, Hi: append([]byte{kindLow}, lo...), Exact: true}                  // low < search low
		switch pre {
		case prefixEq: // the search range holds the target
			return lowAlsoOrder([]KeyRange{within(kindLow)}), true
		case prefixGt: // the target ends after the search range
			return []KeyRange{above}, true
		case prefixGe:
			return []KeyRange{above, within(kindHigh)}, true
		case prefixLt: // the target starts before the search range
			return lowAlsoOrder([]KeyRange{below}), true
		case prefixLe:
			return lowAlsoOrder([]KeyRange{below, within(kindLow)}), true
		case prefixSa: // the target starts at or after the search end
			r := atLeast(kindLow, hi)
			r.Exact = true
			return lowAlsoOrder([]KeyRange{r}), true
		case prefixEb: // the target ends at or before the search start
			r := atMost(kindHigh, lo)
			r.Exact = true
			return []KeyRange{r}, true
		}
		return nil, false
	case searchparam.TypeNumber, searchparam.TypeQuantity:
		num := raw
		if p.Type == searchparam.TypeQuantity {
			num = splitEscaped(raw, '|')[0]
		}
		pre, rest, err := splitPrefix(num)
		if err != nil {
			return nil, false
		}
		s, err := parseSearchNumber(rest)
		if err != nil {
			return nil, false
		}
		var r KeyRange
		switch pre {
		case prefixEq:
			r = between(kindLow, ratKey(s.lo, false), ratKey(s.hi, true))
		case prefixGe, prefixGt:
			r = atLeast(kindHigh, ratKey(s.value, false))
		case prefixSa:
			r = atLeast(kindLow, ratKey(s.value, false))
		case prefixLe, prefixLt:
			r = atMost(kindLow, ratKey(s.value, true))
		case prefixEb:
			r = atMost(kindHigh, ratKey(s.value, true))
		default:
			return nil, false
		}
		// A point's low and high key are one key (pointAlso).
		return pointAlso([]KeyRange{r}), true
	}
	return nil, false
}

// IndexFilters returns the query's filters that an index answers, each
// with its key ranges (a resource matching the query has a key in one of
// the ranges of every IndexFilter). Negated, :missing, composite
// parameters not pair-indexed and unindexable filters are left to Match.
// The filters of the query come first, in order, then those of the pair
// indexes that answer two of them together (pairFilters).
func (q *Query) IndexFilters() []IndexFilter {
	var out []IndexFilter
	for _, f := range q.filters {
		if f.index != nil {
			out = append(out, IndexFilter{Param: f.param.Code, Ranges: f.index})
		}
	}
	return append(out, q.pairFilters()...)
}

// indexCovered reports whether an index answers every filter of the
// query (IndexFilters has one for each).
func (q *Query) indexCovered() bool {
	return !slices.ContainsFunc(q.filters, func(f filter) bool { return f.index == nil })
}

// Unfiltered reports whether the query has no filter and no join: every
// resource of the type matches.
func (q *Query) Unfiltered() bool { return len(q.filters) == 0 && len(q.joins) == 0 }

// OrderParam returns the date parameter the query sorts by (meta.lastUpdated
// when _sort is not given) and whether descending, when the order is one
// date key followed by the id: a store can then read the order from the
// kindOrder keys (IndexKeys), resources without a value last in id order,
// equal values in id order.
func (q *Query) OrderParam() (code string, desc, ok bool) {
	keys := q.keys()
	if len(keys) != 1 || keys[0].Param.Type != searchparam.TypeDate || !Indexed(keys[0].Param) {
		return "", false, false
	}
	return keys[0].Param.Code, keys[0].Descending, true
}

// OrderMissingValue is the order key value (kind byte included) of a
// resource without a sort value: the last of OrderRange.
func OrderMissingValue() []byte { return indexValue(kindOrder, string(orderMissing)) }

// OrderRange is the key range of the sort values of a date parameter.
func OrderRange() KeyRange { return KeyRange{Lo: []byte{kindOrder}, Hi: []byte{kindOrder + 1}} }
