package fhir

import "bytes"

// The way QuickBelongs read an entry before ScanEntry, kept as the oracle
// ScanEntry is tested against: it finds, in the raw JSON of a Bundle
// entry, the first `"resource":{"resourceType":"X"` and every
// `"reference":"…"` member (whitespace allowed around the colons and
// braces) with bytes.Index. Inside a JSON string every quote is escaped,
// so `"reference"` followed by a colon is always a member name.

// textFacts are the facts of entry as the text search finds them.
func textFacts(entry []byte) *EntryFacts {
	f := &EntryFacts{Type: quickResourceType(entry)}
	f.unsure = indexMember(entry, 0, patContained) >= 0 || bytes.Contains(entry, []byte(`\u`))
	quickReferences(entry, func(quoted []byte) bool {
		f.refs = append(f.refs, quoted)
		return true
	})
	return f
}

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
