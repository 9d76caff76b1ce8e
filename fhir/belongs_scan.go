package fhir

import (
	"bytes"

	"github.com/pfrgateway/caddy-pfr/fhir/fhirjson"
)

// EntryFacts is what one pass over a Bundle entry's raw JSON learns for
// QuickBelongs' rule (JudgeEntry): the resource's type and every
// reference in the entry. ScanEntry fills it while it finds the entry's
// end and checks its syntax (fhirjson.ScanValueNames), so that a response
// filter reads each entry once, not once to cut it out and again to judge
// it. The slices point into the scanned data. The zero value is ready to
// use; a value is reused from entry to entry.
type EntryFacts struct {
	// Type is the entry's resource type: the value of resourceType when it
	// is the first member of the entry's resource (a member of the entry
	// itself, whose value is an object) and made of ASCII letters; nil
	// otherwise.
	Type []byte
	// refs are the string values, quotes included, of every member named
	// "reference" anywhere in the entry.
	refs [][]byte
	// unsure: the entry holds what the quick rule leaves to Belongs — a
	// member named "contained", a \u escape (which could spell a member
	// name), or a second resource.
	unsure bool

	// What JudgeEntry remembers from entry to entry (a searchset repeats
	// its types and the record's Patient reference): the last type read,
	// and the last reference it found to be the owner's own Patient, with
	// that owner.
	typ       string
	selfRef   []byte
	selfOwner Owner

	// ResourceType and ID are, after ScanResource, the values (raw JSON)
	// of the resource's last top-level members of those names; nil when
	// it has none, and after ScanEntry.
	ResourceType, ID []byte

	data       []byte
	bare       bool // ScanResource: data is the resource, not an entry
	resources  int  // members named "resource" of the entry
	inResource bool // the entry member being scanned is its resource
	first      bool // the next member of the resource is its first
}

// ScanEntry scans the JSON value at the start of data exactly as
// fhirjson.ScanValue does (the same length, ErrIncomplete and syntax
// errors) and fills f with what it learns on the way. f describes the
// entry only when the error is nil.
func ScanEntry(data []byte, f *EntryFacts) (int, error) { return f.scan(data, false) }

// ScanResource is ScanEntry for a resource on its own (the answer to a
// read, not an entry of a Bundle): f then describes it as ScanEntry
// describes an entry that holds it, and also gives its top-level
// resourceType and id (ResourceType, ID), so that one pass both checks an
// answer and judges it.
func ScanResource(data []byte, f *EntryFacts) (int, error) { return f.scan(data, true) }

func (f *EntryFacts) scan(data []byte, bare bool) (int, error) {
	f.Type, f.refs, f.unsure, f.ResourceType, f.ID = nil, f.refs[:0], false, nil, nil
	f.data, f.bare, f.resources, f.inResource, f.first = data, bare, 0, false, bare
	n, err := fhirjson.ScanValueNames(data, (*factNames)(f))
	f.data = nil
	if err != nil {
		return 0, err
	}
	// An escaped member name ("refer\u0065nce") would hide from the names
	// compared here; servers do not write them, so such entries go the
	// slow way (one search, and only where a backslash is).
	if bytes.IndexByte(data[:n], '\\') >= 0 && bytes.Contains(data[:n], []byte(`\u`)) {
		f.unsure = true
	}
	return n, nil
}

// factNames is EntryFacts as the fhirjson.NameVisitor of ScanEntry and
// ScanResource.
type factNames EntryFacts

// Sieve: the names Name learns from are those of the entry and of its
// resource (depths 1 and 2), and "reference" and "contained" (eleven
// bytes with their quotes) at any depth.
func (n *factNames) Sieve() (depth int, lengths uint64) { return 2, 1 << len(`"reference"`) }

// Name learns what one member name tells.
func (n *factNames) Name(depth int, name []byte, at int) {
	f := (*EntryFacts)(n)
	data := f.data
	if f.bare {
		if depth == 1 {
			if f.first && string(name) == `"resourceType"` {
				f.Type = letters(data, at)
			}
			f.first = false
			switch string(name) {
			case `"resourceType"`:
				f.ResourceType = value(data, at)
			case `"id"`:
				f.ID = value(data, at)
			}
		}
	} else if depth == 1 {
		f.inResource = false
		if string(name) == `"resource"` {
			f.resources++
			f.unsure = f.unsure || f.resources > 1
			f.inResource, f.first = at < len(data) && data[at] == '{', true
		}
	} else if depth == 2 && f.inResource && f.first {
		f.first = false
		if string(name) == `"resourceType"` {
			f.Type = letters(data, at)
		}
	}
	switch string(name) {
	case `"reference"`:
		if at < len(data) && data[at] == '"' {
			if v := value(data, at); v != nil {
				f.refs = append(f.refs, v)
			}
		}
	case `"contained"`:
		f.unsure = true
	}
}

// value returns the JSON value at data[at], or nil when it is incomplete
// or invalid (the scan then fails too).
func value(data []byte, at int) []byte {
	n, err := fhirjson.ScanValue(data[at:])
	if err != nil {
		return nil
	}
	return data[at : at+n]
}

// letters returns the string value at data[at] when it is made of ASCII
// letters only (a resource type), or nil.
func letters(data []byte, at int) []byte {
	if at >= len(data) || data[at] != '"' {
		return nil
	}
	j := at + 1
	for j < len(data) && (data[j] >= 'A' && data[j] <= 'Z' || data[j] >= 'a' && data[j] <= 'z') {
		j++
	}
	if j > at+1 && j < len(data) && data[j] == '"' {
		return data[at+1 : j]
	}
	return nil
}
