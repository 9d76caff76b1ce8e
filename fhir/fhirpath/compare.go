package fhirpath

import (
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
)

// toFloat converts a JSON number (float64, json.Number or an int kind) to float64.
func toFloat(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case json.Number:
		f, err := strconv.ParseFloat(string(n), 64)
		return f, err == nil
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	}
	return 0, false
}

// JSONEqual compares two decoded JSON values: objects regardless of member
// order, numbers by value whatever their Go representation (float64,
// json.Number, int). FHIRPath equality and JSON Patch's test both need it.
func JSONEqual(a, b any) bool { return valuesEqual(a, b) }

// valuesEqual is JSONEqual.
func valuesEqual(a, b any) bool {
	if fa, ok := toFloat(a); ok {
		fb, ok := toFloat(b)
		return ok && fa == fb
	}
	switch av := a.(type) {
	case string, bool:
		return a == b
	case map[string]any:
		bv, ok := b.(map[string]any)
		if !ok || len(av) != len(bv) {
			return false
		}
		for k, x := range av {
			y, ok := bv[k]
			if !ok || !valuesEqual(x, y) {
				return false
			}
		}
		return true
	case []any:
		bv, ok := b.([]any)
		if !ok || len(av) != len(bv) {
			return false
		}
		for i := range av {
			if !valuesEqual(av[i], bv[i]) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(a, b)
}

// collectionsEqual is FHIRPath = on two non-empty collections: same size,
// pairwise equal in order.
func collectionsEqual(a, b []Node) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !valuesEqual(a[i].Value, b[i].Value) {
			return false
		}
	}
	return true
}

func containsNode(list []Node, n Node) bool {
	for _, x := range list {
		if sameNode(x, n) {
			return true
		}
	}
	return false
}

// sameNode reports whether two nodes are the same element (maps by
// identity, primitives by value), which is what union de-duplicates.
func sameNode(a, b Node) bool {
	am, aok := a.Value.(map[string]any)
	bm, bok := b.Value.(map[string]any)
	if aok || bok {
		return aok && bok && reflect.ValueOf(am).UnsafePointer() == reflect.ValueOf(bm).UnsafePointer()
	}
	return valuesEqual(a.Value, b.Value)
}

// compareValues orders two numbers or two strings.
func compareValues(a, b any) (int, bool) {
	if fa, ok := toFloat(a); ok {
		fb, ok := toFloat(b)
		if !ok {
			return 0, false
		}
		switch {
		case fa < fb:
			return -1, true
		case fa > fb:
			return 1, true
		}
		return 0, true
	}
	as, aok := a.(string)
	bs, bok := b.(string)
	if !aok || !bok {
		return 0, false
	}
	return strings.Compare(as, bs), true
}
