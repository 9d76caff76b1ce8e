package fhir

//go:generate go run ./internal/genelements

import (
	"reflect"
	"strings"
	"sync"
	"unicode"
	"unsafe"
)

// elementDef is one element of a resource or data type, as the R4
// StructureDefinitions define it (elements_gen.go).
type elementDef struct {
	// path is the element's own path ("Patient.contact"), the context of
	// its children when it is a backbone element.
	path string
	// many: the element repeats (max is not 1), so its JSON is an array.
	many bool
	// choice: a value[x] element; its JSON name carries the type.
	choice bool
	// types are the allowed type codes ("HumanName", "dateTime",
	// "BackboneElement", "Resource").
	types []string
	// ref is the path of the element whose definition this one reuses
	// (Questionnaire.item.item is a Questionnaire.item), or "".
	ref string
}

// elements parses elementRows once.
var elements = sync.OnceValue(func() map[string]*elementDef {
	m := make(map[string]*elementDef, 5000)
	for _, line := range strings.Split(elementRows, "\n") {
		path, rest, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		max, spec, _ := strings.Cut(rest, " ")
		d := &elementDef{path: path, many: max == "*"}
		switch {
		case strings.HasPrefix(spec, "#"):
			d.ref = spec[1:]
		case strings.HasPrefix(spec, "[x]"):
			d.choice = true
			d.types = strings.Split(spec[3:], ",")
		default:
			d.types = strings.Split(spec, ",")
		}
		m[path] = d
	}
	return m
})

// childElement finds the element that the JSON member key is inside an
// object whose definition context is ctx (a type name such as "Patient" or
// "HumanName", or a backbone path such as "Patient.contact"). For a choice
// element, key is its JSON name (valueQuantity) and typ the type it names
// ("Quantity"); the element's name is then the key without the type.
func childElement(ctx, key string) (d *elementDef, name, typ string, ok bool) {
	table := elements()
	if d, ok := lookupChild(table, ctx, key); ok && !d.choice {
		return d, key, "", true
	}
	for i := len(key) - 1; i > 0; i-- {
		if !unicode.IsUpper(rune(key[i])) {
			continue
		}
		base, suffix := key[:i], key[i:]
		d, ok := lookupChild(table, ctx, base)
		if !ok || !d.choice {
			continue
		}
		for _, t := range d.types {
			if strings.EqualFold(t, suffix) {
				return d, base, t, true
			}
		}
	}
	return nil, "", "", false
}

// lookupChild is the definition of ctx.name, falling back to what every
// resource, backbone element or data type inherits.
func lookupChild(table map[string]*elementDef, ctx, name string) (*elementDef, bool) {
	if d, ok := table[ctx+"."+name]; ok {
		return d, true
	}
	var bases []string
	switch {
	case IsResourceType(ctx):
		bases = []string{"DomainResource", "Resource"}
	case strings.Contains(ctx, "."):
		bases = []string{"BackboneElement"}
	default:
		bases = []string{"Element"}
	}
	for _, b := range bases {
		if d, ok := table[b+"."+name]; ok {
			return d, true
		}
	}
	return nil, false
}

// childContext is the definition context of a value of element d whose
// type is typ (a choice element's type, or "" for d's only type); value is
// the JSON value, whose resourceType names the context of a resource.
func (d *elementDef) childContext(typ string, value any) string {
	if d.ref != "" {
		return d.ref
	}
	if typ == "" && len(d.types) > 0 {
		typ = d.types[0]
	}
	switch typ {
	case "BackboneElement", "Element":
		return d.path
	case "Resource":
		m, _ := value.(map[string]any)
		rt, _ := m["resourceType"].(string)
		return rt
	}
	return typ
}

// elementContexts walks a resource and maps every object in it (by
// identity) to its definition context. Objects whose element is not in the
// tables (unknown members) are left out.
func elementContexts(res map[string]any) map[unsafe.Pointer]string {
	out := map[unsafe.Pointer]string{}
	var walk func(obj map[string]any, ctx string)
	walk = func(obj map[string]any, ctx string) {
		out[objKey(obj)] = ctx
		for key, v := range obj {
			if strings.HasPrefix(key, "_") || key == "resourceType" {
				continue
			}
			d, _, typ, ok := childElement(ctx, key)
			if !ok {
				continue
			}
			items, isList := v.([]any)
			if !isList {
				items = []any{v}
			}
			for _, item := range items {
				if m, ok := item.(map[string]any); ok {
					walk(m, d.childContext(typ, m))
				}
			}
		}
	}
	rt, _ := res["resourceType"].(string)
	walk(res, rt)
	return out
}

// objKey identifies a decoded JSON object: maps are references, so the
// address behind a map value names it.
func objKey(m map[string]any) unsafe.Pointer {
	return reflect.ValueOf(m).UnsafePointer()
}
