package search

import (
	"bytes"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// A date parameter's order key stands for the low key of the same value
// (index version 6): that low key is not among the keys, the others are,
// and every date filter that reads low keys finds a resource through
// either, as Match decides.
func TestOrderKeyStandsForItsLowKey(t *testing.T) {
	for _, body := range []string{
		`{"resourceType": "Observation", "effectiveDateTime": "2020-03-04T10:00:00Z"}`,
		`{"resourceType": "Observation", "effectivePeriod": {"start": "2020-03", "end": "2020-05"}}`,
		`{"resourceType": "Observation", "effectivePeriod": {"end": "2020-05"}}`,
		`{"resourceType": "Observation", "effectiveTiming": {"event": ["2021-01-01", "2019-06-01", "2021-01-01"]}}`,
		`{"resourceType": "Observation", "status": "final"}`,
	} {
		res := decodeNumbers(t, body)
		keys := IndexKeys(lookup(t, "Observation", "date"), res)
		var lows, orders [][]byte
		for _, k := range keys {
			switch k[0] {
			case kindLow:
				lows = append(lows, k[1:])
			case kindOrder:
				orders = append(orders, k[1:])
			}
		}
		if len(orders) != 1 {
			t.Fatalf("%s: order keys %q", body, orders)
		}
		if !OrderMissing(append([]byte{kindOrder}, orders[0]...)) &&
			slices.ContainsFunc(lows, func(l []byte) bool { return bytes.Equal(l, orders[0]) }) {
			t.Errorf("%s: the low key of the order value is stored: %q", body, keys)
		}
		for _, query := range []string{
			"date=2020-03-04", "date=2020", "date=eq2019-06", "date=lt2020-03-05", "date=lt2019-06-02", "date=le2020-03",
			"date=le2019-01", "date=sa2019", "date=sa2020-12", "date=gt2020-04", "date=ge2021", "date=eb2022", "date=ne2020",
		} {
			q := mustParse(t, "Observation", query)
			found := false
			for _, f := range q.IndexFilters() {
				for _, r := range f.Ranges {
					for _, k := range keys {
						if bytes.Compare(r.Lo, k) <= 0 && bytes.Compare(k, r.Hi) < 0 {
							found = true
						}
					}
				}
			}
			if len(q.IndexFilters()) > 0 && q.Match(res) && !found {
				t.Errorf("%s: %s matches, but no key %q is in its ranges", body, query, keys)
			}
		}
	}
}

// floatKeys (kept answers or not) gives the keys intervalsOf and ratKey
// give a point: on random, repeated, integral and extreme values, whose
// table slots collide.
func TestFloatKeysAreRatKeys(t *testing.T) {
	rng := rand.New(rand.NewPCG(14, 8))
	values := []float64{0, math.Copysign(0, -1), 1, -1, 0.1, 0.6, 101.2, 1e300, -1e-300, math.MaxFloat64,
		math.SmallestNonzeroFloat64, math.Inf(1), math.NaN(), 4.35, 72, 9007199254740993}
	for range 20000 {
		switch rng.IntN(3) {
		case 0:
			values = append(values, math.Round(rng.NormFloat64()*400*10)/10)
		case 1:
			values = append(values, rng.NormFloat64()*math.Pow(10, float64(rng.IntN(40)-20)))
		default:
			values = append(values, math.Float64frombits(rng.Uint64()))
		}
	}
	for round := range 3 {
		for _, f := range values {
			lo, hi, ok := floatKeys(f)
			var wantLo, wantHi string
			ivs := intervalsOf(f)
			if len(ivs) == 1 {
				wantLo, wantHi = string(ratKey(ivs[0].lo, false)), string(ratKey(ivs[0].hi, true))
			}
			if ok != (len(ivs) == 1) || lo != wantLo || hi != wantHi {
				t.Fatalf("round %d: %v: keys %x %x (%v), want %x %x", round, f, lo, hi, ok, wantLo, wantHi)
			}
		}
	}
}
