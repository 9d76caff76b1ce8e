package search

import (
	"encoding/json"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/fhir/fhirpath"
	"github.com/pfrgateway/caddy-pfr/fhir/searchparam"
)

// valueMatcher reports whether the values a parameter's expression found in
// a resource match one search value.
type valueMatcher func(nodes []fhirpath.Node) bool

// supportedModifiers lists the modifiers this engine implements per
// parameter type; "missing" is valid everywhere. A reference parameter also
// accepts a resource type as modifier.
var supportedModifiers = map[string][]string{
	searchparam.TypeString:    {"exact", "contains"},
	searchparam.TypeToken:     {"not", "text", "of-type"},
	searchparam.TypeReference: {"identifier"},
	searchparam.TypeDate:      nil,
	searchparam.TypeNumber:    nil,
	searchparam.TypeQuantity:  nil,
	searchparam.TypeURI:       {"below", "above"},
}

// newValueMatcher builds the matcher of one (comma-separated) value of a
// parameter with the given modifier ("" for none, never "missing").
func newValueMatcher(p *searchparam.Param, modifier, raw string, now time.Time) (valueMatcher, error) {
	switch p.Type {
	case searchparam.TypeString:
		return stringMatcher(modifier, unescape(raw)), nil
	case searchparam.TypeToken:
		return tokenMatcher(modifier, raw)
	case searchparam.TypeReference:
		return referenceMatcher(p, modifier, raw)
	case searchparam.TypeDate:
		return dateMatcher(raw, now)
	case searchparam.TypeNumber:
		return numberMatcher(raw)
	case searchparam.TypeQuantity:
		return quantityMatcher(raw)
	case searchparam.TypeURI:
		return uriMatcher(modifier, unescape(raw)), nil
	}
	return nil, fmt.Errorf("parameters of type %s are not supported", p.Type)
}

// stringMatcher: starts-with ignoring case and accents; :exact compares
// exactly; :contains looks anywhere.
func stringMatcher(modifier, value string) valueMatcher {
	folded := normalize(value)
	return func(nodes []fhirpath.Node) bool {
		for _, n := range nodes {
			for _, s := range stringsOf(n.Value) {
				switch modifier {
				case "exact":
					if s == value {
						return true
					}
				case "contains":
					if strings.Contains(normalize(s), folded) {
						return true
					}
				default:
					if strings.HasPrefix(normalize(s), folded) {
						return true
					}
				}
			}
		}
		return false
	}
}

// stringFields are the parts of HumanName and Address (and of other
// complex types) that a string parameter searches.
var stringFields = []string{"text", "family", "given", "prefix", "suffix", "line", "city", "district", "state", "postalCode", "country"}

// stringsOf returns the strings a string parameter compares for one node.
func stringsOf(v any) []string {
	switch v := v.(type) {
	case string:
		return []string{v}
	case map[string]any:
		var out []string
		for _, f := range stringFields {
			switch x := v[f].(type) {
			case string:
				out = append(out, x)
			case []any:
				for _, e := range x {
					if s, ok := e.(string); ok {
						out = append(out, s)
					}
				}
			}
		}
		return out
	}
	return nil
}

// tokenValue is a parsed token search value: code, system|code, |code or system|.
type tokenValue struct {
	system, code       string
	hasSystem, hasCode bool
}

func parseToken(raw string) (tokenValue, error) {
	parts := splitEscaped(raw, '|')
	switch len(parts) {
	case 1:
		return tokenValue{code: unescape(parts[0]), hasCode: true}, nil
	case 2:
		tv := tokenValue{system: unescape(parts[0]), hasSystem: true, code: unescape(parts[1]), hasCode: parts[1] != ""}
		if tv.system == "" && !tv.hasCode {
			return tv, fmt.Errorf("token %q has neither system nor code", raw)
		}
		return tv, nil
	}
	return tokenValue{}, fmt.Errorf("token %q has more than one unescaped '|'", raw)
}

// coded is one system/code pair found in a token node. implicit is true
// for plain code, string and boolean values, whose system is implied by
// the element's binding and so matches any system.
type coded struct {
	system, code string
	implicit     bool
}

// contactPointSystems tells a ContactPoint (system is one of these codes)
// from an Identifier (system is a URI).
var contactPointSystems = map[string]bool{"phone": true, "fax": true, "email": true, "pager": true, "url": true, "sms": true, "other": true}

// codesOf returns the system/code pairs of a node of a token parameter.
func codesOf(v any) []coded {
	switch v := v.(type) {
	case string:
		return []coded{{code: v, implicit: true}}
	case bool:
		return []coded{{code: strconv.FormatBool(v), implicit: true}}
	case float64, json.Number:
		return []coded{{code: fmt.Sprint(v), implicit: true}}
	case map[string]any:
		if codings, ok := v["coding"].([]any); ok { // CodeableConcept
			var out []coded
			for _, c := range codings {
				out = append(out, codesOf(c)...)
			}
			return out
		}
		system, _ := v["system"].(string)
		if code, ok := v["code"].(string); ok { // Coding
			return []coded{{system: system, code: code}}
		}
		if value, ok := v["value"].(string); ok {
			if contactPointSystems[system] { // ContactPoint: the value is the token
				return []coded{{code: value, implicit: true}}
			}
			return []coded{{system: system, code: value}} // Identifier
		}
	}
	return nil
}

func (tv tokenValue) matches(c coded) bool {
	if tv.hasCode && c.code != tv.code {
		return false
	}
	if tv.hasSystem && !c.implicit && c.system != tv.system {
		return false
	}
	return true
}

// tokenMatcher matches codes; :text matches CodeableConcept.text and
// Coding.display as a string parameter would. :not is applied by the
// filter, which negates the whole parameter.
func tokenMatcher(modifier, raw string) (valueMatcher, error) {
	switch modifier {
	case "text":
		return textMatcher(normalize(unescape(raw))), nil
	case "of-type":
		return ofTypeMatcher(raw)
	}
	tv, err := parseToken(raw)
	if err != nil {
		return nil, err
	}
	return func(nodes []fhirpath.Node) bool {
		for _, n := range nodes {
			for _, c := range codesOf(n.Value) {
				if tv.matches(c) {
					return true
				}
			}
		}
		return false
	}, nil
}

// ofTypeMatcher matches Identifiers by type and value:
// identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|12345.
func ofTypeMatcher(raw string) (valueMatcher, error) {
	parts := splitEscaped(raw, '|')
	if len(parts) != 3 || parts[1] == "" || parts[2] == "" {
		return nil, fmt.Errorf("%q is not type-system|type-code|value", raw)
	}
	typ := tokenValue{system: unescape(parts[0]), hasSystem: true, code: unescape(parts[1]), hasCode: true}
	value := unescape(parts[2])
	return func(nodes []fhirpath.Node) bool {
		for _, n := range nodes {
			m, ok := n.Value.(map[string]any)
			if !ok || m["value"] != value {
				continue
			}
			for _, c := range codesOf(m["type"]) {
				if typ.matches(c) {
					return true
				}
			}
		}
		return false
	}, nil
}

func textMatcher(folded string) valueMatcher {
	return func(nodes []fhirpath.Node) bool {
		for _, n := range nodes {
			m, ok := n.Value.(map[string]any)
			if !ok {
				continue
			}
			texts := []any{m["text"], m["display"]}
			if codings, ok := m["coding"].([]any); ok {
				for _, c := range codings {
					if cm, ok := c.(map[string]any); ok {
						texts = append(texts, cm["display"])
					}
				}
			}
			if t, ok := m["type"].(map[string]any); ok { // Identifier.type
				texts = append(texts, t["text"])
			}
			for _, t := range texts {
				if s, ok := t.(string); ok && strings.HasPrefix(normalize(s), folded) {
					return true
				}
			}
		}
		return false
	}
}

// referenceMatcher matches references. The search value is "Type/id", a
// bare id (any type, or the type named by the modifier), an absolute URL
// (matching the same URL, or any reference to the same Type/id), or
// another string such as urn:uuid:… or a canonical URL, compared exactly.
// :identifier matches Reference.identifier as a token.
func referenceMatcher(p *searchparam.Param, modifier, raw string) (valueMatcher, error) {
	if modifier == "identifier" {
		tv, err := parseToken(raw)
		if err != nil {
			return nil, err
		}
		return func(nodes []fhirpath.Node) bool {
			for _, n := range nodes {
				if m, ok := n.Value.(map[string]any); ok {
					for _, c := range codesOf(m["identifier"]) {
						if tv.matches(c) {
							return true
						}
					}
				}
			}
			return false
		}, nil
	}
	value := unescape(raw)
	wantType, wantID, exact := "", "", ""
	switch typ, id, ok := fhirpath.SplitReference(value); {
	case modifier != "":
		wantType, wantID = modifier, value
		if ok {
			if typ != modifier {
				return nil, fmt.Errorf("reference %q contradicts the modifier :%s", value, modifier)
			}
			wantID = id
		}
		if !fhir.IsID(wantID) {
			return nil, fmt.Errorf("%q is not a resource id", wantID)
		}
	case ok:
		if !searchparam.IsResourceType(typ) {
			return nil, fmt.Errorf("%q is not a resource type", typ)
		}
		wantType, wantID = typ, id
		if strings.Contains(value, "://") {
			exact = value
		}
	case strings.Contains(value, ":"):
		exact = value // urn:uuid:…, urn:oid:…, a canonical URL
	case strings.Contains(value, "/"):
		return nil, fmt.Errorf("%q is not a reference (Type/id, id or absolute URL)", value)
	default:
		if !fhir.IsID(value) {
			return nil, fmt.Errorf("%q is not a resource id", value)
		}
		wantID = value
	}
	if wantType != "" && len(p.Target) > 0 && !slices.Contains(p.Target, wantType) {
		return nil, fmt.Errorf("%s cannot refer to %s (targets: %s)", p.Code, wantType, strings.Join(p.Target, ", "))
	}
	return func(nodes []fhirpath.Node) bool {
		for _, n := range nodes {
			ref := referenceString(n.Value)
			if ref == "" {
				continue
			}
			if exact != "" && (ref == exact || stripVersion(ref) == exact) {
				return true
			}
			if wantID == "" {
				continue
			}
			if typ, id, ok := fhirpath.SplitReference(ref); ok && id == wantID && (wantType == "" || typ == wantType) {
				return true
			}
		}
		return false
	}, nil
}

// referenceString returns the reference of a Reference node, or a
// canonical or uri node itself.
func referenceString(v any) string {
	switch v := v.(type) {
	case map[string]any:
		s, _ := v["reference"].(string)
		return s
	case string:
		return v
	}
	return ""
}

// stripVersion removes the |version suffix of a canonical reference.
func stripVersion(ref string) string {
	if i := strings.LastIndexByte(ref, '|'); i >= 0 {
		return ref[:i]
	}
	return ref
}

// dateMatcher compares date ranges with a prefix. ne matches a resource
// that has values none of which equals the search value.
func dateMatcher(raw string, now time.Time) (valueMatcher, error) {
	p, rest, err := splitPrefix(raw)
	if err != nil {
		return nil, err
	}
	// An unencoded "+" of a time zone arrives as a space.
	search, err := parseDateRange(strings.ReplaceAll(rest, " ", "+"))
	if err != nil {
		return nil, err
	}
	return func(nodes []fhirpath.Node) bool {
		var ranges []dateRange
		for _, n := range nodes {
			ranges = append(ranges, dateRangesOf(n.Value)...)
		}
		if p == prefixNe {
			return len(ranges) > 0 && !slices.ContainsFunc(ranges, func(r dateRange) bool {
				return prefixEq.matchDateRange(r, search, now)
			})
		}
		return slices.ContainsFunc(ranges, func(r dateRange) bool {
			return p.matchDateRange(r, search, now)
		})
	}, nil
}

// toRat converts a JSON number to an exact rational.
func toRat(v any) (*big.Rat, bool) {
	switch n := v.(type) {
	case float64:
		// The shortest decimal that round-trips is what the JSON said:
		// 0.6, not the binary 0.59999….
		return new(big.Rat).SetString(strconv.FormatFloat(n, 'g', -1, 64))
	case json.Number:
		return ratFromDecimal(string(n))
	}
	return nil, false
}

// ratFromDecimal parses a decimal from stored JSON. Numbers longer than 64
// characters or with an exponent beyond ±400 are refused rather than
// expanded: 1e999999999 in a stored resource must not stall every search.
func ratFromDecimal(s string) (*big.Rat, bool) {
	if len(s) > 64 {
		return nil, false
	}
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		e, err := strconv.Atoi(s[i+1:])
		if err != nil || e > 400 || e < -400 {
			return nil, false
		}
	}
	return new(big.Rat).SetString(s)
}

// matchIntervals applies a prefix to every interval; ne needs all of them
// to differ, like dates.
func matchIntervals(p prefix, s searchNumber, ivs []interval) bool {
	if p == prefixNe {
		return len(ivs) > 0 && !slices.ContainsFunc(ivs, func(iv interval) bool { return prefixEq.matchInterval(iv, s) })
	}
	return slices.ContainsFunc(ivs, func(iv interval) bool { return p.matchInterval(iv, s) })
}

// numberMatcher compares numbers (and the low/high of a Range) with a prefix.
func numberMatcher(raw string) (valueMatcher, error) {
	p, rest, err := splitPrefix(raw)
	if err != nil {
		return nil, err
	}
	s, err := parseSearchNumber(rest)
	if err != nil {
		return nil, err
	}
	return func(nodes []fhirpath.Node) bool {
		var ivs []interval
		for _, n := range nodes {
			if r, ok := toRat(n.Value); ok {
				ivs = append(ivs, interval{r, r})
			} else if m, ok := n.Value.(map[string]any); ok {
				if iv, ok := rangeInterval(m); ok {
					ivs = append(ivs, iv)
				}
			}
		}
		return matchIntervals(p, s, ivs)
	}, nil
}

// rangeInterval reads a Range {low, high}; at least one end must be there.
func rangeInterval(m map[string]any) (interval, bool) {
	var iv interval
	if low, ok := m["low"].(map[string]any); ok {
		iv.lo, _ = toRat(low["value"])
	}
	if high, ok := m["high"].(map[string]any); ok {
		iv.hi, _ = toRat(high["value"])
	}
	return iv, iv.lo != nil || iv.hi != nil
}

// quantityMatcher matches [prefix]number|system|code on Quantity, Range and
// Money. Without a system the code matches Quantity.code or unit. Units are
// compared as written: no UCUM conversion.
func quantityMatcher(raw string) (valueMatcher, error) {
	parts := splitEscaped(raw, '|')
	if len(parts) != 1 && len(parts) != 3 {
		return nil, fmt.Errorf("quantity %q is not number|system|code", raw)
	}
	p, rest, err := splitPrefix(parts[0])
	if err != nil {
		return nil, err
	}
	s, err := parseSearchNumber(rest)
	if err != nil {
		return nil, err
	}
	system, code := "", ""
	if len(parts) == 3 {
		system, code = unescape(parts[1]), unescape(parts[2])
	}
	unitOK := func(q map[string]any) bool {
		qs, _ := q["system"].(string)
		qc, _ := q["code"].(string)
		qu, _ := q["unit"].(string)
		if cur, ok := q["currency"].(string); ok { // Money
			qs, qc = "urn:iso:std:iso:4217", cur
		}
		if system != "" && qs != system {
			return false
		}
		if code == "" {
			return true
		}
		return qc == code || system == "" && qu == code
	}
	return func(nodes []fhirpath.Node) bool {
		var ivs []interval
		for _, n := range nodes {
			m, ok := n.Value.(map[string]any)
			if !ok {
				continue
			}
			if r, ok := toRat(m["value"]); ok && unitOK(m) {
				ivs = append(ivs, interval{r, r})
				continue
			}
			if iv, ok := rangeInterval(m); ok {
				low, _ := m["low"].(map[string]any)
				high, _ := m["high"].(map[string]any)
				if (low == nil || unitOK(low)) && (high == nil || unitOK(high)) {
					ivs = append(ivs, iv)
				}
			}
		}
		return matchIntervals(p, s, ivs)
	}, nil
}

// uriMatcher compares URIs exactly; :below matches URIs that start with
// the value, :above URIs the value starts with.
func uriMatcher(modifier, value string) valueMatcher {
	return func(nodes []fhirpath.Node) bool {
		for _, n := range nodes {
			s, ok := n.Value.(string)
			if !ok {
				continue
			}
			switch modifier {
			case "below":
				if strings.HasPrefix(s, value) {
					return true
				}
			case "above":
				if strings.HasPrefix(value, s) {
					return true
				}
			default:
				if s == value {
					return true
				}
			}
		}
		return false
	}
}
