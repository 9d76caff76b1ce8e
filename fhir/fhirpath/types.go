package fhirpath

import (
	"encoding/json"
	"strings"
	"sync"
)

// choiceSuffixes are the type suffixes a choice element name (value[x]) can
// carry in JSON, in the order they are tried.
var choiceSuffixes = []string{
	"Quantity", "CodeableConcept", "String", "Boolean", "Integer", "Range", "Ratio",
	"SampledData", "Time", "DateTime", "Period", "Reference", "Date", "Instant",
	"Decimal", "Uri", "Url", "Canonical", "Code", "Coding", "Age", "Duration",
	"Timing", "Attachment", "Identifier", "Markdown", "Base64Binary", "Id", "Oid",
	"Uuid", "PositiveInt", "UnsignedInt", "Address", "Annotation", "ContactPoint",
	"Count", "Distance", "HumanName", "Money", "Signature", "ContactDetail",
	"Contributor", "DataRequirement", "Expression", "ParameterDefinition",
	"RelatedArtifact", "TriggerDefinition", "UsageContext", "Dosage", "Meta",
}

// primitiveTypes are the FHIR primitive types, whose names start lowercase.
var primitiveTypes = map[string]bool{
	"String": true, "Boolean": true, "Integer": true, "Time": true, "DateTime": true,
	"Date": true, "Instant": true, "Decimal": true, "Uri": true, "Url": true,
	"Canonical": true, "Code": true, "Markdown": true, "Base64Binary": true,
	"Id": true, "Oid": true, "Uuid": true, "PositiveInt": true, "UnsignedInt": true,
}

// supertypes maps a FHIR type to the type it specialises, so that
// "valueAge as Quantity" and "code is string" hold.
var supertypes = map[string]string{
	"Age": "Quantity", "Distance": "Quantity", "Duration": "Quantity",
	"Count": "Quantity", "SimpleQuantity": "Quantity", "MoneyQuantity": "Quantity",
	"code": "string", "id": "string", "markdown": "string",
	"url": "uri", "canonical": "uri", "oid": "uri", "uuid": "uri",
	"positiveInt": "integer", "unsignedInt": "integer",
}

// choiceTypeName turns a JSON suffix into a FHIR type name ("DateTime" → "dateTime").
func choiceTypeName(suffix string) string {
	if primitiveTypes[suffix] {
		return strings.ToLower(suffix[:1]) + suffix[1:]
	}
	return suffix
}

// choiceKeyCache shares the choice keys of each element name between
// compiled expressions (many use value, code, subject).
var choiceKeyCache sync.Map // string → []choiceKey

// choiceKeys returns the JSON names a choice element called name may have
// (valueQuantity, valueString, …), with their FHIR type names.
func choiceKeys(name string) []choiceKey {
	if keys, ok := choiceKeyCache.Load(name); ok {
		return keys.([]choiceKey)
	}
	keys := make([]choiceKey, len(choiceSuffixes))
	for i, suffix := range choiceSuffixes {
		keys[i] = choiceKey{key: name + suffix, typ: choiceTypeName(suffix)}
	}
	actual, _ := choiceKeyCache.LoadOrStore(name, keys)
	return actual.([]choiceKey)
}

// choiceKey is one JSON name of a choice element and its type.
type choiceKey struct{ key, typ string }

// appendChildren appends the children called name of item to out, expanding
// JSON arrays; when name is absent, the choice keys (valueQuantity for
// value) are tried in order. Each child records where it sits (Location).
func appendChildren(out []Node, item Node, name string, choices []choiceKey) []Node {
	m, ok := item.Value.(map[string]any)
	if !ok {
		return out
	}
	if v, ok := m[name]; ok {
		return appendMember(out, m, name, v, "")
	}
	for _, c := range choices {
		if v, ok := m[c.key]; ok {
			return appendMember(out, m, c.key, v, c.typ)
		}
	}
	return out
}

// appendMember appends the member key of parent (value v), one node per
// array item, each with its location.
func appendMember(out []Node, parent map[string]any, key string, v any, typ string) []Node {
	if list, ok := v.([]any); ok {
		for i, e := range list {
			out = appendValue(out, e, typ, &location{parent: parent, key: key, index: i})
		}
		return out
	}
	return appendValue(out, v, typ, &location{parent: parent, key: key, index: -1})
}

func appendValue(out []Node, v any, typ string, loc *location) []Node {
	switch v := v.(type) {
	case nil:
	case map[string]any:
		if rt, ok := v["resourceType"].(string); ok && typ == "" {
			typ = rt
		}
		out = append(out, Node{Value: v, Type: typ, loc: loc})
	default:
		out = append(out, Node{Value: v, Type: typ, loc: loc})
	}
	return out
}

// typeMatches reports whether item is of type want or of a subtype of it.
// Items of unknown type match only by the JSON kind of primitives.
func typeMatches(item Node, want string) bool {
	want = strings.TrimPrefix(strings.TrimPrefix(want, "FHIR."), "System.")
	typ := item.Type
	if typ == "" {
		switch item.Value.(type) {
		case bool:
			typ = "boolean"
		case string:
			typ = "string"
		case float64, json.Number:
			typ = "decimal"
		}
	}
	if typ == "" {
		return false
	}
	if want == "Resource" || want == "DomainResource" {
		if m, ok := item.Value.(map[string]any); ok {
			rt, _ := m["resourceType"].(string)
			return rt != "" && (want == "Resource" || rt != "Bundle" && rt != "Binary" && rt != "Parameters")
		}
		return false
	}
	for t := typ; t != ""; t = supertypes[t] {
		if strings.EqualFold(t, want) {
			return true
		}
	}
	return false
}
