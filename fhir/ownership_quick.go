package fhir

import (
	"bytes"
	"strconv"
	"strings"
)

// QuickBelongs finds, in the raw JSON of a Bundle entry, the first
// `"resource":{"resourceType":"X"` and every `"reference":"…"` member
// (whitespace allowed around the colons and braces) with bytes.Index: no
// regular expression, no decoding. Inside a JSON string every quote is
// escaped, so `"reference"` followed by a colon is always a member name.

// quickResourceType returns the resource type of the first
// `"resource":{"resourceType":"X"` in entry (X made of ASCII letters), or
// nil.
func quickResourceType(entry []byte) []byte {
	for from := 0; ; {
		k := indexMember(entry, from, patResource)
		if k < 0 {
			return nil
		}
		i := k + len(`"resource"`)
		from = k + 1
		if i = afterSpace(entry, i, ':'); i < 0 {
			continue
		}
		if i = afterSpace(entry, i, '{'); i < 0 {
			continue
		}
		i = skipJSONSpace(entry, i)
		if !bytes.HasPrefix(entry[i:], []byte(`"resourceType"`)) {
			continue
		}
		if i = afterSpace(entry, i+len(`"resourceType"`), ':'); i < 0 {
			continue
		}
		if i = afterSpace(entry, i, '"'); i < 0 {
			continue
		}
		j := i
		for j < len(entry) && (entry[j] >= 'A' && entry[j] <= 'Z' || entry[j] >= 'a' && entry[j] <= 'z') {
			j++
		}
		if j > i && j < len(entry) && entry[j] == '"' {
			return entry[i:j]
		}
	}
}

// quickReferences calls fn with every `"reference":"…"` string value in
// entry, quotes included, until fn returns false.
func quickReferences(entry []byte, fn func(quoted []byte) bool) {
	for from := 0; ; {
		k := indexMember(entry, from, patReference)
		if k < 0 {
			return
		}
		i := k + len(`"reference"`)
		from = k + 1
		if i = afterSpace(entry, i, ':'); i < 0 {
			continue
		}
		i = skipJSONSpace(entry, i)
		if i >= len(entry) || entry[i] != '"' {
			continue
		}
		j := i + 1
		for j < len(entry) && entry[j] != '"' {
			if entry[j] == '\\' {
				j++
			}
			j++
		}
		if j >= len(entry) {
			return
		}
		if !fn(entry[i : j+1]) {
			return
		}
		from = j + 1
	}
}

// Member names QuickBelongs looks for, as indexMember searches them.
var (
	patResource  = []byte(`resource"`)
	patReference = []byte(`reference"`)
	patContained = []byte(`contained"`)
)

// indexMember returns the index of the first `"name"` (pat is `name"`) in b at or after
// from, or -1. It looks for `name"` and then the quote before it: a quote
// is in JSON at every few bytes, which makes it a slow first byte to
// search for.
func indexMember(b []byte, from int, pat []byte) int {
	for from < len(b) {
		k := bytes.Index(b[from+1:], pat)
		if k < 0 {
			return -1
		}
		at := from + k // the index of the quote before name, if any
		if b[at] == '"' {
			return at
		}
		from = at + 1
	}
	return -1
}

// afterSpace returns the index after c, when c follows i after optional
// JSON whitespace, or -1.
func afterSpace(b []byte, i int, c byte) int {
	i = skipJSONSpace(b, i)
	if i < len(b) && b[i] == c {
		return i + 1
	}
	return -1
}

// skipJSONSpace skips JSON whitespace, and form feeds: an entry is looked
// at the way the regular expressions it replaces did (\s), so invalid JSON
// never hides a reference from it.
func skipJSONSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r' || b[i] == '\f') {
		i++
	}
	return i
}

// QuickBelongs judges a Bundle entry (its raw JSON) without decoding it,
// for the common cases of a response filter: decided is false whenever it
// cannot be sure, and the caller then decodes the entry and asks Belongs.
// typ is the entry's resource type when it could be read.
// It decides
//   - false for a resource that references another Patient (or whose type
//     may not be written to a record at all), as Belongs would;
//   - true for a resource of the Patient compartment whose every Patient
//     reference is the record's own and which has at least one, and for a
//     resource of an allowed type without Patient references. Belongs is
//     stricter here in one way: it wants the record's Patient in a
//     compartment element (an Observation whose only reference to the
//     person is `focus`); such a resource names nobody else, so showing it
//     leaks nothing.
//
// Patients, Groups, Bundles, contained resources, urn: and external
// references, and entries whose resource does not start with its
// resourceType are left to Belongs.
func (o Owner) QuickBelongs(entry []byte, p OwnershipPolicy) (typ string, belongs, decided bool) {
	t := quickResourceType(entry)
	// An escaped member name (`"refer\u0065nce"`) would hide from the
	// search; servers do not write them, so such entries go the slow way.
	if t == nil || indexMember(entry, 0, patContained) >= 0 || bytes.Contains(entry, []byte(`\u`)) {
		return "", false, false
	}
	typ = string(t)
	switch {
	case typ == "OperationOutcome":
		return typ, true, true
	case typ == "Patient" || typ == "Group" || typ == "Bundle" || !IsResourceType(typ):
		return typ, false, false
	case !InPatientCompartment(typ) && !p.AllowedTypes[typ]:
		return typ, false, true // never writable to a record
	}
	self := 0
	belongs, decided = true, true
	quickReferences(entry, func(quoted []byte) bool {
		var ref string
		if bytes.IndexByte(quoted, '\\') < 0 {
			ref = string(quoted[1 : len(quoted)-1])
		} else {
			var err error
			if ref, err = strconv.Unquote(string(quoted)); err != nil {
				belongs, decided = false, false
				return false
			}
		}
		for _, base := range o.Bases {
			if base = strings.TrimSuffix(base, "/"); base != "" && len(ref) > len(base) && ref[len(base)] == '/' && strings.HasPrefix(ref, base) {
				ref = ref[len(base)+1:]
				break
			}
		}
		if strings.Contains(ref, ":") || strings.HasPrefix(ref, "#") {
			belongs, decided = false, false // urn:, external or contained: Belongs knows
			return false
		}
		rtyp, id, _, ok := ParseReference(ref)
		switch {
		case !ok || rtyp == "Group":
			belongs, decided = false, false
			return false
		case rtyp != "Patient":
		case id == o.PatientID && o.PatientID != "":
			self++
		default:
			belongs, decided = false, true // another person
			return false
		}
		return true
	})
	if !belongs || !decided {
		return typ, belongs, decided
	}
	if InPatientCompartment(typ) && self == 0 {
		return typ, false, false
	}
	return typ, true, true
}
