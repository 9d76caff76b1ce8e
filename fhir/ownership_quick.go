package fhir

import (
	"bytes"
	"slices"
	"strconv"
	"strings"

	"github.com/pfrgateway/caddy-pfr/fhir/searchparam"
)

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
//
// The entry is read once, by ScanEntry (it must be one valid JSON value,
// whitespace around it allowed; anything else is left undecided); a
// response filter that has scanned the entry already asks JudgeEntry.
func (o Owner) QuickBelongs(entry []byte, p OwnershipPolicy) (typ string, belongs, decided bool) {
	var f EntryFacts
	n, err := ScanEntry(entry, &f)
	if err != nil || len(bytes.TrimLeft(entry[n:], " \t\r\n")) > 0 {
		return "", false, false
	}
	return o.JudgeEntry(&f, p)
}

// JudgeEntry is QuickBelongs' rule on the facts ScanEntry read of an entry.
func (o Owner) JudgeEntry(f *EntryFacts, p OwnershipPolicy) (typ string, belongs, decided bool) {
	if f.Type == nil || f.unsure {
		return "", false, false
	}
	if f.typ == "" || string(f.Type) != f.typ {
		var known bool
		if f.typ, known = searchparam.ResourceTypeOf(f.Type); !known {
			f.typ = string(f.Type) // for the caller's log; undecided below
		}
	}
	typ = f.typ
	switch {
	case typ == "OperationOutcome":
		return typ, true, true
	case typ == "Patient" || typ == "Group" || typ == "Bundle" || !IsResourceType(typ):
		return typ, false, false
	case !InPatientCompartment(typ) && !p.AllowedTypes[typ]:
		return typ, false, true // never writable to a record
	}
	self := 0
	for _, quoted := range f.refs {
		if f.selfRef != nil && bytes.Equal(quoted, f.selfRef) && f.selfOwner.same(o) {
			self++ // as the last time: the owner's own Patient
			continue
		}
		if o.PatientID != "" && len(quoted) == len(`"Patient/"`)+len(o.PatientID) &&
			string(quoted[:9]) == `"Patient/` && string(quoted[9:len(quoted)-1]) == o.PatientID {
			self++ // "Patient/{the owner's id}", as servers write it: what ParseReference would find
			continue
		}
		var ref string
		if bytes.IndexByte(quoted, '\\') < 0 {
			ref = string(quoted[1 : len(quoted)-1])
		} else {
			var err error
			if ref, err = strconv.Unquote(string(quoted)); err != nil {
				return typ, false, false
			}
		}
		for _, base := range o.Bases {
			if base = strings.TrimSuffix(base, "/"); base != "" && len(ref) > len(base) && ref[len(base)] == '/' && strings.HasPrefix(ref, base) {
				ref = ref[len(base)+1:]
				break
			}
		}
		if strings.Contains(ref, ":") || strings.HasPrefix(ref, "#") {
			return typ, false, false // urn:, external or contained: Belongs knows
		}
		rtyp, id, _, ok := ParseReference(ref)
		switch {
		case !ok || rtyp == "Group":
			return typ, false, false
		case rtyp != "Patient":
		case id == o.PatientID && o.PatientID != "":
			self++
			f.selfRef, f.selfOwner = append(f.selfRef[:0], quoted...), o
		default:
			return typ, false, true // another person
		}
	}
	if InPatientCompartment(typ) && self == 0 {
		return typ, false, false
	}
	return typ, true, true
}

// same reports whether o and p are the same owner (the same Patient, the
// same bases in the same order).
func (o Owner) same(p Owner) bool {
	return o.PatientID == p.PatientID && slices.Equal(o.Bases, p.Bases)
}
