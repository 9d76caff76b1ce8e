package fhirpath

import (
	"encoding/json"
	"strings"
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

// appendChildren appends the children called name of item to out, expanding
// JSON arrays and resolving choice elements (name "value" finds valueQuantity).
func appendChildren(out []Node, item Node, name string) []Node {
	m, ok := item.Value.(map[string]any)
	if !ok {
		return out
	}
	if v, ok := m[name]; ok {
		return appendValue(out, v, "")
	}
	for _, suffix := range choiceSuffixes {
		if v, ok := m[name+suffix]; ok {
			return appendValue(out, v, choiceTypeName(suffix))
		}
	}
	return out
}

func appendValue(out []Node, v any, typ string) []Node {
	switch v := v.(type) {
	case []any:
		for _, e := range v {
			out = appendValue(out, e, typ)
		}
	case nil:
	case map[string]any:
		if rt, ok := v["resourceType"].(string); ok && typ == "" {
			typ = rt
		}
		out = append(out, Node{Value: v, Type: typ})
	default:
		out = append(out, Node{Value: v, Type: typ})
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
