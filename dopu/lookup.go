package dopu

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/pfrgateway/caddy-pfr/fhir"
)

// Search finds resources in the record being picked up into: every
// resource of resourceType in the record that matches params, a FHIR
// search. The caller confines it to the record (its partition) and
// filters the answer like any read of the record, so that nothing of
// another record is ever matched.
type Search func(resourceType string, params url.Values) ([]map[string]any, error)

// queryKind says how a query is answered.
type queryKind int

const (
	queryGeneric    queryKind = iota // any criteria, one search each
	queryIdentifier                  // identifier=system|value, grouped
	queryTag                         // _tag=system|code, grouped
)

// query is one question to the record: "which resources of typ match?".
type query struct {
	typ   string
	kind  queryKind
	value string // the token (identifier, tag) or the encoded criteria
}

// groupSize bounds the tokens OR-ed into one search (the URL stays short
// enough for any server).
const groupSize = 25

// tokenSafe reports whether a "system|value" token can be OR-ed with
// others without escaping (FHIR escapes , | $ and \ in search values, and
// servers differ in how well they honour it).
func tokenSafe(token string) bool {
	system, value, ok := strings.Cut(token, "|")
	return ok && system != "" && value != "" && !strings.ContainsAny(token, ",$\\") && !strings.Contains(value, "|")
}

// identifierQuery asks for the resources of typ with that identifier; ok
// is false for an identifier a search cannot name without escaping (a
// value with "|" or ","): it is not used to tell duplicates.
func identifierQuery(typ string, id Identifier) (query, bool) {
	token := id.System + "|" + id.Value
	return query{typ: typ, kind: queryIdentifier, value: token}, tokenSafe(token)
}

// criteriaQuery asks for the resources of typ matching params; a single
// identifier with a system is grouped with the others.
func criteriaQuery(typ string, params url.Values) query {
	if ids := params["identifier"]; len(params) == 1 && len(ids) == 1 && tokenSafe(ids[0]) {
		return query{typ: typ, kind: queryIdentifier, value: ids[0]}
	}
	return query{typ: typ, value: params.Encode()}
}

// finder answers a pick-up's queries with as few searches as it can:
// identifier and tag tokens of one type are OR-ed together (FHIR's comma),
// and each answer is checked here against the exact token, so a server
// that matches loosely changes nothing.
type finder struct {
	search Search
	wanted map[query]bool
	found  map[query][]string
	// warnings are searches the record's server refused (4xx): they
	// match nothing.
	warnings []string
}

func newFinder(search Search) *finder {
	return &finder{search: search, wanted: map[query]bool{}, found: map[query][]string{}}
}

func (f *finder) want(q query) { f.wanted[q] = true }

// ids returns the ids of the record's resources matching q, sorted.
func (f *finder) ids(q query) []string { return f.found[q] }

// run answers every wanted query. Without a search, the record holds
// nothing that matches.
func (f *finder) run() error {
	if f.search == nil {
		return nil
	}
	grouped := map[query][]string{} // {typ, kind} → tokens
	var generic []query
	for q := range f.wanted {
		if q.kind == queryGeneric {
			generic = append(generic, q)
			continue
		}
		key := query{typ: q.typ, kind: q.kind}
		grouped[key] = append(grouped[key], q.value)
	}
	slices.SortFunc(generic, func(a, b query) int { return strings.Compare(a.typ+"?"+a.value, b.typ+"?"+b.value) })
	for _, q := range generic {
		params, err := url.ParseQuery(q.value)
		if err != nil {
			continue // not a query a server could answer: nothing matches
		}
		found, err := f.search(q.typ, params)
		var fe *fhir.Error
		if errors.As(err, &fe) && fe.Status >= 400 && fe.Status < 500 {
			f.warnings = append(f.warnings, fmt.Sprintf("the record's server cannot search %s?%s (HTTP %d): taken as no match", q.typ, q.value, fe.Status))
			continue
		}
		if err != nil {
			return err
		}
		for _, res := range found {
			f.add(q, res)
		}
	}
	for key, tokens := range grouped {
		slices.Sort(tokens)
		param := "identifier"
		if key.kind == queryTag {
			param = "_tag"
		}
		for start := 0; start < len(tokens); start += groupSize {
			chunk := tokens[start:min(start+groupSize, len(tokens))]
			found, err := f.search(key.typ, url.Values{param: {strings.Join(chunk, ",")}})
			if err != nil {
				return err
			}
			for _, res := range found {
				var have []Identifier
				if key.kind == queryTag {
					have = resourceTags(res)
				} else {
					have = resourceIdentifiers(res)
				}
				for _, tok := range chunk {
					if hasIdentifiers(have, []string{tok}) {
						f.add(query{typ: key.typ, kind: key.kind, value: tok}, res)
					}
				}
			}
		}
	}
	for q, ids := range f.found {
		slices.Sort(ids)
		f.found[q] = slices.Compact(ids)
	}
	return nil
}

// add records res as a match of q when it is of q's type and has an id.
func (f *finder) add(q query, res map[string]any) {
	id, _ := res["id"].(string)
	if typ, _ := res["resourceType"].(string); typ == q.typ && id != "" {
		f.found[q] = append(f.found[q], id)
	}
}

// resourceIdentifiers returns a decoded resource's identifiers.
func resourceIdentifiers(res map[string]any) []Identifier {
	var out []Identifier
	switch ids := res["identifier"].(type) {
	case []any:
		for _, id := range ids {
			out = appendIdentifier(out, id)
		}
	case map[string]any:
		out = appendIdentifier(out, ids)
	}
	return out
}

// resourceTags returns a decoded resource's meta.tag as system and code.
func resourceTags(res map[string]any) []Identifier {
	meta, _ := res["meta"].(map[string]any)
	tags, _ := meta["tag"].([]any)
	var out []Identifier
	for _, t := range tags {
		m, _ := t.(map[string]any)
		system, _ := m["system"].(string)
		code, _ := m["code"].(string)
		if code != "" {
			out = append(out, Identifier{System: system, Value: code})
		}
	}
	return out
}
