package dopu

import (
	"net/url"
	"regexp"
	"strings"
)

// entryHead is what reference resolution and the subject rule need of a
// Bundle entry.
type entryHead struct {
	FullURL     string
	Type, ID    string
	Identifiers []Identifier
	// SubjectRefs are the resource's subject.reference and
	// patient.reference: who the entry is about.
	SubjectRefs []string
}

// headOf reads an entry's head from its decoded resource.
func headOf(fullURL string, res map[string]any) entryHead {
	h := entryHead{FullURL: strings.TrimSpace(fullURL)}
	h.Type, _ = res["resourceType"].(string)
	h.ID, _ = res["id"].(string)
	switch ids := res["identifier"].(type) {
	case []any:
		for _, id := range ids {
			h.Identifiers = appendIdentifier(h.Identifiers, id)
		}
	case map[string]any:
		h.Identifiers = appendIdentifier(h.Identifiers, ids)
	}
	for _, field := range []string{"subject", "patient"} {
		if ref, ok := res[field].(map[string]any); ok {
			if s, ok := ref["reference"].(string); ok && s != "" {
				h.SubjectRefs = append(h.SubjectRefs, s)
			}
		}
	}
	return h
}

func appendIdentifier(ids []Identifier, v any) []Identifier {
	m, ok := v.(map[string]any)
	if !ok {
		return ids
	}
	system, _ := m["system"].(string)
	value, _ := m["value"].(string)
	if value == "" {
		return ids
	}
	return append(ids, Identifier{System: system, Value: value})
}

// refKind classifies a reference once resolved against the Bundle.
type refKind int

const (
	refNone        refKind = iota // empty or not a reference we can read
	refContained                  // "#id", inside the same resource
	refLocal                      // an entry of the Bundle
	refConditional                // "Type?query" matching no single entry
	refRelative                   // "Type/id" matching no entry: it would dangle
	refExternal                   // an absolute URL or URN outside the Bundle
)

var (
	typeName       = regexp.MustCompile(`^[A-Z][A-Za-z]+$`)
	conditionalRef = regexp.MustCompile(`^([A-Z][A-Za-z]+)\?(.*)$`)
	historySuffix  = regexp.MustCompile(`/_history/[^/]*$`)
	// A sender's ids are whatever it wrote (longer than FHIR's 64
	// characters, say): inside a Bundle they only need to tell entries
	// apart, so references to them are read without FHIR's id rule.
	absoluteRESTful  = regexp.MustCompile(`^(https?://.+)/([A-Z][A-Za-z]+)/([^/?#\s]+)$`)
	relativeRESTful  = regexp.MustCompile(`^([A-Z][A-Za-z]+)/([^/?#\s]+)$`)
	patientCanonical = "Patient/"
)

// bundleIndex resolves references between the entries of a Bundle, after
// the rules of FHIR R4 (Bundle, "Resolving references in Bundles"):
// absolute references and URNs by fullUrl; relative ones against the base
// of the referencing entry's fullUrl, and failing that by type and id.
type bundleIndex struct {
	heads     []entryHead
	byFullURL map[string]int
	byTypeID  map[string][]int
}

func newBundleIndex(heads []entryHead) *bundleIndex {
	ix := &bundleIndex{heads: heads, byFullURL: map[string]int{}, byTypeID: map[string][]int{}}
	for i, h := range heads {
		if h.FullURL != "" {
			if _, dup := ix.byFullURL[h.FullURL]; !dup {
				ix.byFullURL[h.FullURL] = i
			}
		}
		keys := map[string]bool{}
		if h.Type != "" && h.ID != "" {
			keys[h.Type+"/"+h.ID] = true
		}
		if m := absoluteRESTful.FindStringSubmatch(h.FullURL); m != nil {
			keys[m[2]+"/"+m[3]] = true
		}
		for k := range keys {
			ix.byTypeID[k] = append(ix.byTypeID[k], i)
		}
	}
	return ix
}

// resolve resolves ref, found in entry from. For refLocal, entry is the
// target; canonical is the reference in a form that compares equal for the
// same target outside the Bundle ("Type/id" or the conditional reference).
func (ix *bundleIndex) resolve(ref string, from int) (entry int, kind refKind, canonical string) {
	ref = strings.TrimSpace(ref)
	switch {
	case ref == "":
		return -1, refNone, ""
	case strings.HasPrefix(ref, "#"):
		return -1, refContained, ref
	}
	plain := historySuffix.ReplaceAllString(ref, "")
	if i, ok := ix.byFullURL[plain]; ok {
		return i, refLocal, plain
	}
	if m := conditionalRef.FindStringSubmatch(ref); m != nil {
		if i, ok := ix.conditional(m[1], m[2]); ok {
			return i, refLocal, ref
		}
		return -1, refConditional, ref
	}
	if m := absoluteRESTful.FindStringSubmatch(plain); m != nil {
		typeID := m[2] + "/" + m[3]
		if i, ok := ix.byTypeAndID(typeID, m[1]); ok {
			return i, refLocal, typeID
		}
		return -1, refExternal, typeID
	}
	if m := relativeRESTful.FindStringSubmatch(plain); m != nil {
		base := ""
		if from >= 0 && from < len(ix.heads) {
			if fm := absoluteRESTful.FindStringSubmatch(ix.heads[from].FullURL); fm != nil {
				base = fm[1]
				if i, ok := ix.byFullURL[base+"/"+plain]; ok {
					return i, refLocal, plain
				}
			}
		}
		if i, ok := ix.byTypeAndID(plain, base); ok {
			return i, refLocal, plain
		}
		return -1, refRelative, plain
	}
	return -1, refExternal, ref
}

// byTypeAndID finds the entry with that "Type/id", preferring one whose
// fullUrl has the given base when several have it.
func (ix *bundleIndex) byTypeAndID(typeID, base string) (int, bool) {
	candidates := ix.byTypeID[typeID]
	if len(candidates) == 0 {
		return -1, false
	}
	if base != "" {
		for _, i := range candidates {
			if ix.heads[i].FullURL == base+"/"+typeID {
				return i, true
			}
		}
	}
	return candidates[0], true
}

// conditional resolves "Type?identifier=system|value[&identifier=…]" to the
// only entry of that type carrying every identifier given. Any other search
// parameter is the upstream server's to resolve.
func (ix *bundleIndex) conditional(typ, query string) (int, bool) {
	params, err := url.ParseQuery(query)
	if err != nil || len(params) != 1 || len(params["identifier"]) == 0 {
		return -1, false
	}
	found := -1
	for i, h := range ix.heads {
		if h.Type != typ || !hasIdentifiers(h.Identifiers, params["identifier"]) {
			continue
		}
		if found >= 0 {
			return -1, false // ambiguous
		}
		found = i
	}
	return found, found >= 0
}

// hasIdentifiers reports whether ids match every token "system|value",
// "|value" (no system) or "value" (any system).
func hasIdentifiers(ids []Identifier, tokens []string) bool {
	for _, tok := range tokens {
		system, value, hasSystem := strings.Cut(tok, "|")
		if !hasSystem {
			system, value = "", tok
		}
		ok := false
		for _, id := range ids {
			if id.Value == value && (!hasSystem || id.System == system) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// subject finds the Bundle's subject Patient:
//
//  1. in a document, the Patient that the first Composition's subject
//     references;
//  2. otherwise the Patient that most entries' subject or patient
//     reference, ties going to the one referenced first;
//  3. otherwise, when no entry references a Patient, the first Patient
//     entry.
//
// It returns the Patient's entry, or -1 and the canonical reference when
// the subject is a Patient outside the Bundle ("Patient/x" or a conditional
// reference), or -1 and "" when the Bundle names no Patient.
func (ix *bundleIndex) subject() (entry int, canonical string) {
	for i, h := range ix.heads {
		if h.Type != "Composition" {
			continue
		}
		for _, ref := range h.SubjectRefs {
			if e, c, ok := ix.patientTarget(ref, i); ok {
				return e, c
			}
		}
		break
	}
	type candidate struct {
		entry     int
		canonical string
	}
	counts := map[candidate]int{}
	var order []candidate
	for i, h := range ix.heads {
		for _, ref := range h.SubjectRefs {
			e, c, ok := ix.patientTarget(ref, i)
			if !ok {
				continue
			}
			k := candidate{e, c}
			if e >= 0 {
				k.canonical = ""
			}
			if counts[k] == 0 {
				order = append(order, k)
			}
			counts[k]++
		}
	}
	best := -1
	for i, k := range order {
		if best < 0 || counts[k] > counts[order[best]] {
			best = i
		}
	}
	if best >= 0 {
		return order[best].entry, order[best].canonical
	}
	for i, h := range ix.heads {
		if h.Type == "Patient" {
			return i, ""
		}
	}
	return -1, ""
}

// patientTarget resolves ref and reports whether it targets a Patient: an
// entry of type Patient, or a Patient reference outside the Bundle.
func (ix *bundleIndex) patientTarget(ref string, from int) (entry int, canonical string, ok bool) {
	e, kind, c := ix.resolve(ref, from)
	switch kind {
	case refLocal:
		return e, "", ix.heads[e].Type == "Patient"
	case refConditional, refRelative, refExternal:
		if strings.HasPrefix(c, patientCanonical) || strings.HasPrefix(c, "Patient?") {
			return -1, c, true
		}
	}
	return -1, "", false
}

// isTypeName reports whether s looks like a FHIR resource type.
func isTypeName(s string) bool { return typeName.MatchString(s) }
