package search

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// A number that is a point has one key (index version 7), and each range
// of low or high keys a number search reads comes with a range of point
// keys holding exactly the points whose low or high key the first range
// would hold: on random, integral, negative, zero and extreme values and
// searches of every prefix, some at the values themselves.
func TestPointKeyStandsForLowAndHigh(t *testing.T) {
	rng := rand.New(rand.NewPCG(14, 7))
	values := []float64{0, math.Copysign(0, -1), 1, -1, 0.1, -0.1, 101.2, 72, 1e300, -1e300, math.MaxFloat64,
		-math.MaxFloat64, math.SmallestNonzeroFloat64, 9007199254740993}
	for range 300 {
		switch rng.IntN(3) {
		case 0:
			values = append(values, math.Round(rng.NormFloat64()*400*10)/10)
		case 1:
			values = append(values, float64(rng.IntN(400)-200))
		default:
			values = append(values, rng.NormFloat64()*math.Pow(10, float64(rng.IntN(40)-20)))
		}
	}
	type point struct {
		low, high, pk []byte // the keys with the id appended
	}
	var points []point
	for _, f := range values {
		lo, hi, ok := floatKeys(f)
		if !ok {
			t.Fatalf("%v: no keys", f)
		}
		pk, ok := pointKey(lo, hi)
		if !ok {
			t.Fatalf("%v: %x and %x are no point", f, lo, hi)
		}
		id := "\x00id"
		points = append(points, point{[]byte(string(kindLow) + lo + id), []byte(string(kindHigh) + hi + id), []byte(string(kindPoint) + pk + id)})
	}
	in := func(r KeyRange, k []byte) bool { return bytes.Compare(r.Lo, k) <= 0 && bytes.Compare(k, r.Hi) < 0 }
	p := lookup(t, "Observation", "value-quantity")
	checked := 0
	for i := range 400 {
		v := values[rng.IntN(len(values))]
		s := fmt.Sprint(v)
		if i%3 == 0 {
			s = fmt.Sprintf("%.1f", math.Round(rng.NormFloat64()*400*10)/10)
		}
		for _, pre := range []string{"", "eq", "gt", "ge", "lt", "le", "sa", "eb"} {
			ranges, ok := valueRanges(p, "", pre+s)
			if !ok {
				continue
			}
			if len(ranges) != 2 || ranges[1].Lo[0] != kindPoint || ranges[1].Exact != ranges[0].Exact {
				t.Fatalf("%s%s: ranges %v", pre, s, ranges)
			}
			for _, pt := range points {
				want := in(ranges[0], pt.low) || in(ranges[0], pt.high)
				if got := in(ranges[1], pt.pk); got != want {
					t.Fatalf("%s%s: point key %x in %v: %v, its low or high key in %v: %v", pre, s, pt.pk, ranges[1], got, ranges[0], want)
				}
				checked++
			}
		}
	}
	// Keys: a point has its point key only; a Range keeps its ends.
	res := decodeNumbers(t, `{"resourceType": "Observation", "valueQuantity": {"value": 101.2}}`)
	if keys := IndexKeys(p, res); len(keys) != 1 || keys[0][0] != kindPoint {
		t.Fatalf("a point's keys: %q", keys)
	}
	res = decodeNumbers(t, `{"resourceType": "RiskAssessment", "prediction": [{"probabilityRange": {"low": {"value": 1}, "high": {"value": 2}}}]}`)
	if keys := IndexKeys(lookup(t, "RiskAssessment", "probability"), res); len(keys) != 2 || keys[0][0] != kindLow || keys[1][0] != kindHigh {
		t.Fatalf("a Range's keys: %q", keys)
	}
	t.Logf("%d points checked against ranges", checked)
}
