package search

import (
	"fmt"
	"math/big"
	"regexp"
	"strconv"
	"time"
)

// prefix is a search comparator (http://hl7.org/fhir/R4/search.html#prefix).
type prefix string

const (
	prefixEq prefix = "eq"
	prefixNe prefix = "ne"
	prefixGt prefix = "gt"
	prefixLt prefix = "lt"
	prefixGe prefix = "ge"
	prefixLe prefix = "le"
	prefixSa prefix = "sa"
	prefixEb prefix = "eb"
	prefixAp prefix = "ap"
)

var prefixes = map[string]prefix{
	"eq": prefixEq, "ne": prefixNe, "gt": prefixGt, "lt": prefixLt, "ge": prefixGe,
	"le": prefixLe, "sa": prefixSa, "eb": prefixEb, "ap": prefixAp,
}

// splitPrefix separates a leading comparator from an ordered value
// ("ge2013" → ge, "2013"). A value starting with two other letters is an
// error; a value without letters has the default prefix eq.
func splitPrefix(s string) (prefix, string, error) {
	if len(s) >= 2 && isLetter(s[0]) && isLetter(s[1]) {
		p, ok := prefixes[s[:2]]
		if !ok {
			return "", "", fmt.Errorf("unknown prefix %q", s[:2])
		}
		return p, s[2:], nil
	}
	return prefixEq, s, nil
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// matchDateRange applies prefix p to a target range and a search range, with
// the R4 range semantics: eq means the search range contains the target,
// gt that the target extends above the search range, sa that it starts
// after it, and so on.
func (p prefix) matchDateRange(target, search dateRange, now time.Time) bool {
	eq := !target.lo.Before(search.lo) && !target.hi.After(search.hi)
	switch p {
	case prefixEq:
		return eq
	case prefixNe:
		return !eq
	case prefixGt:
		return target.hi.After(search.hi)
	case prefixLt:
		return target.lo.Before(search.lo)
	case prefixGe:
		return eq || target.hi.After(search.hi)
	case prefixLe:
		return eq || target.lo.Before(search.lo)
	case prefixSa:
		return !target.lo.Before(search.hi)
	case prefixEb:
		return !target.hi.After(search.lo)
	case prefixAp:
		// Approximately: within 10% of the distance between now and the
		// search value, at least a day, either side of the search range.
		gap := now.Sub(search.lo)
		if gap < 0 {
			gap = -gap
		}
		slack := max(gap/10, 24*time.Hour)
		lo, hi := search.lo.Add(-slack), search.hi.Add(slack)
		return target.lo.Before(hi) && target.hi.After(lo)
	}
	return false
}

// decimalPattern is a FHIR search number: optional sign, digits, optional
// fraction, optional exponent.
var decimalPattern = regexp.MustCompile(`^[+-]?\d+(\.\d+)?([eE][+-]?\d+)?$`)

// searchNumber is a number from a search value with the range its
// significant digits imply: "100" is [99.5, 100.5), "100.0" [99.95, 100.05).
type searchNumber struct {
	value, lo, hi *big.Rat
}

func parseSearchNumber(s string) (searchNumber, error) {
	m := decimalPattern.FindStringSubmatch(s)
	if m == nil || len(s) > 64 {
		return searchNumber{}, fmt.Errorf("%q is not a number", s)
	}
	// Check the exponent before big.Rat expands it: 1e999999999 would cost
	// gigabytes.
	exp := 0
	if m[2] != "" {
		e, err := strconv.Atoi(m[2][1:])
		if err != nil || e > 1000 || e < -1000 {
			return searchNumber{}, fmt.Errorf("%q has an unusable exponent", s)
		}
		exp = e
	}
	v, ok := new(big.Rat).SetString(s)
	if !ok {
		return searchNumber{}, fmt.Errorf("%q is not a number", s)
	}
	decimals := 0
	if m[1] != "" {
		decimals = len(m[1]) - 1
	}
	// Half a unit of the last significant digit: 5 × 10^(exp-decimals-1).
	half := big.NewRat(5, 1)
	ten := big.NewRat(10, 1)
	for e := exp - decimals - 1; e != 0; {
		if e > 0 {
			half.Mul(half, ten)
			e--
		} else {
			half.Quo(half, ten)
			e++
		}
	}
	return searchNumber{
		value: v,
		lo:    new(big.Rat).Sub(v, half),
		hi:    new(big.Rat).Add(v, half),
	}, nil
}

// interval is a closed numeric interval of a resource value; nil ends are
// unbounded (a Range with only a low value).
type interval struct{ lo, hi *big.Rat }

// matchInterval applies prefix p to a resource interval (a point for a
// plain number) and a search number.
func (p prefix) matchInterval(t interval, s searchNumber) bool {
	lt := func(a, b *big.Rat) bool { return a != nil && b != nil && a.Cmp(b) < 0 }
	le := func(a, b *big.Rat) bool { return a != nil && b != nil && a.Cmp(b) <= 0 }
	eq := t.lo != nil && t.hi != nil && le(s.lo, t.lo) && lt(t.hi, s.hi)
	switch p {
	case prefixEq:
		return eq
	case prefixNe:
		return !eq
	case prefixGt:
		return t.hi == nil || lt(s.value, t.hi)
	case prefixLt:
		return t.lo == nil || lt(t.lo, s.value)
	case prefixGe:
		return t.hi == nil || le(s.value, t.hi)
	case prefixLe:
		return t.lo == nil || le(t.lo, s.value)
	case prefixSa:
		return t.lo != nil && lt(s.value, t.lo)
	case prefixEb:
		return t.hi != nil && lt(t.hi, s.value)
	case prefixAp:
		// Approximately: within 10% of the search value.
		slack := new(big.Rat).Abs(s.value)
		slack.Quo(slack, big.NewRat(10, 1))
		lo := new(big.Rat).Sub(s.value, slack)
		hi := new(big.Rat).Add(s.value, slack)
		return (t.hi == nil || le(lo, t.hi)) && (t.lo == nil || le(t.lo, hi))
	}
	return false
}
