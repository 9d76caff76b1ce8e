package fhir

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode"
	"unsafe"

	"github.com/pfrgateway/caddy-pfr/fhir/fhirpath"
)

// ApplyFHIRPathPatch applies a FHIRPath Patch (a Parameters resource, FHIR
// R4 "FHIRPath Patch") to a copy of doc and returns the patched copy; doc
// is not modified. Each parameter named "operation" has parts:
//
//   - type: add, insert, delete, replace or move;
//   - path: a FHIRPath expression (the resource's fhirpath subset: names,
//     [n], where(), first(), last(), extension(url), ofType(), resolve()
//     of a contained "#id", …) that must find elements of doc itself;
//   - name (add): the element to add below the one path finds; a choice
//     element by its name ("value", taking the value's type) or its JSON
//     name ("valueQuantity");
//   - value (add, insert, replace): a value[x] of the element's type, or
//     parts that build an anonymous element (Patient.contact), or a
//     resource part for a resource-typed element (contained);
//   - index (insert), source and destination (move): 0-based list indexes.
//
// add appends to a repeating element (making the list when absent) and
// sets a single element only when it is absent; insert puts the value at
// index of the list path finds (index ≤ its size); delete removes the one
// element path finds and does nothing when it finds none; replace swaps the
// one element path finds; move moves a list item from source to
// destination. Deleting or moving a primitive keeps its "_name"
// extensions aligned.
//
// The element definitions (cardinality, types) come from the R4
// StructureDefinitions, so an unknown element or a value of the wrong type
// is refused. A Parameters that is not a FHIRPath Patch (unknown operation
// type, missing or repeated part, unparsable path) is a 400 *Error; a
// patch that does not apply to doc (path finds several elements, or none
// where one is needed, index out of range, element already present, wrong
// type) is a 422 *Error. Nothing is returned unless every operation
// applies.
func ApplyFHIRPathPatch(doc, params map[string]any) (map[string]any, error) {
	ops, err := parseFHIRPathPatch(params)
	if err != nil {
		return nil, err
	}
	root, _ := deepCopy(doc).(map[string]any)
	for i, op := range ops {
		if err := op.apply(root); err != nil {
			code := CodeProcessing
			if errors.Is(err, fhirpath.ErrTooCostly) {
				code = CodeTooCostly
			}
			return nil, Errorf(http.StatusUnprocessableEntity, code, "FHIRPath Patch operation %d (%s %s): %v", i, op.typ, op.path, err).
				WithExpression(fmt.Sprintf("Parameters.parameter[%d]", op.param)).WithCause(err)
		}
	}
	return root, nil
}

// maxFHIRPathPatchOperations bounds the operations of one Parameters.
const maxFHIRPathPatchOperations = 1000

// patchPathEnv evaluates the paths a client wrote within a budget: nested
// where() could otherwise cost the resource's size to the power of the
// nesting.
var patchPathEnv = &fhirpath.Env{MaxSteps: 100000}

// fhirPathOp is one parsed FHIRPath Patch operation.
type fhirPathOp struct {
	param                      int // index in Parameters.parameter
	typ, path                  string
	expr                       *fhirpath.Expr
	name                       string
	value                      *patchValue
	index, source, destination int
	hasIndex, hasSrc, hasDest  bool
}

// patchValue is the value part of an operation: a value[x] (typ is its
// type code, "date", "HumanName"), an anonymous element built from parts
// (typ ""), or a resource (typ "Resource").
type patchValue struct {
	typ   string
	value any
	// ext is the primitive's "_valueX" extension object, if sent.
	ext any
	// parts holds the sub-parts of an anonymous element.
	parts []any
}

// parseFHIRPathPatch checks the Parameters and compiles each operation.
func parseFHIRPathPatch(params map[string]any) ([]fhirPathOp, error) {
	bad := func(format string, args ...any) error {
		return Errorf(http.StatusBadRequest, CodeInvalid, "FHIRPath Patch: "+format, args...)
	}
	if rt, _ := params["resourceType"].(string); rt != "Parameters" {
		return nil, bad("the body must be a Parameters resource, not %q", rt)
	}
	list, ok := params["parameter"].([]any)
	if !ok && params["parameter"] != nil {
		return nil, bad("Parameters.parameter must be an array")
	}
	if len(list) > maxFHIRPathPatchOperations {
		return nil, Errorf(http.StatusBadRequest, CodeTooCostly, "FHIRPath Patch: more than %d operations", maxFHIRPathPatchOperations)
	}
	var ops []fhirPathOp
	for i, raw := range list {
		p, ok := raw.(map[string]any)
		if !ok {
			return nil, bad("Parameters.parameter[%d] must be an object", i)
		}
		if p["name"] != "operation" {
			return nil, bad("Parameters.parameter[%d] is named %v; a FHIRPath Patch has only parameters named operation", i, p["name"])
		}
		op, err := parseOperation(i, p)
		if err != nil {
			return nil, Errorf(http.StatusBadRequest, CodeInvalid, "FHIRPath Patch Parameters.parameter[%d]: %v", i, err).
				WithExpression(fmt.Sprintf("Parameters.parameter[%d]", i))
		}
		ops = append(ops, op)
	}
	return ops, nil
}

// parseOperation reads the parts of one operation.
func parseOperation(i int, p map[string]any) (fhirPathOp, error) {
	op := fhirPathOp{param: i}
	parts, _ := p["part"].([]any)
	seen := map[string]bool{}
	for _, raw := range parts {
		part, ok := raw.(map[string]any)
		if !ok {
			return op, fmt.Errorf("every part must be an object")
		}
		name, _ := part["name"].(string)
		if seen[name] {
			return op, fmt.Errorf("part %q is repeated", name)
		}
		seen[name] = true
		var err error
		switch name {
		case "type":
			op.typ, err = partString(part, "valueCode")
		case "path":
			op.path, err = partString(part, "valueString")
		case "name":
			op.name, err = partString(part, "valueString")
		case "value":
			op.value, err = partValue(part)
		case "index":
			op.index, err = partInt(part)
			op.hasIndex = true
		case "source":
			op.source, err = partInt(part)
			op.hasSrc = true
		case "destination":
			op.destination, err = partInt(part)
			op.hasDest = true
		default:
			return op, fmt.Errorf("unknown part %q (expected type, path, name, value, index, source, destination)", name)
		}
		if err != nil {
			return op, fmt.Errorf("part %s: %w", name, err)
		}
	}
	need := map[string][]string{
		"add":     {"path", "name", "value"},
		"insert":  {"path", "value", "index"},
		"delete":  {"path"},
		"replace": {"path", "value"},
		"move":    {"path", "source", "destination"},
	}
	required, known := need[op.typ]
	if !known {
		return op, fmt.Errorf("operation type %q is not one of add, insert, delete, replace, move", op.typ)
	}
	allowed := map[string]bool{"type": true}
	for _, r := range required {
		allowed[r] = true
		if !seen[r] {
			return op, fmt.Errorf("%s needs a %s part", op.typ, r)
		}
	}
	for s := range seen {
		if !allowed[s] {
			return op, fmt.Errorf("%s takes no %s part", op.typ, s)
		}
	}
	expr, err := fhirpath.Compile(op.path)
	if err != nil {
		return op, err
	}
	op.expr = expr
	return op, nil
}

func partString(part map[string]any, key string) (string, error) {
	s, ok := part[key].(string)
	if !ok {
		// valueString where valueCode is expected, as some clients send.
		s, ok = part["valueString"].(string)
	}
	if !ok || s == "" {
		return "", fmt.Errorf("needs a non-empty %s", key)
	}
	return s, nil
}

func partInt(part map[string]any) (int, error) {
	v, ok := part["valueInteger"]
	if !ok {
		return 0, fmt.Errorf("needs a valueInteger")
	}
	f, ok := numberValue(v)
	if !ok || f < 0 || f != float64(int(f)) || f > 1e6 {
		return 0, fmt.Errorf("valueInteger %v is not a list index", v)
	}
	return int(f), nil
}

// partValue reads the value part: one value[x], or a resource, or parts.
func partValue(part map[string]any) (*patchValue, error) {
	var out *patchValue
	for k, v := range part {
		switch {
		case k == "resource":
			m, ok := v.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("resource must be an object")
			}
			out = setOnce(out, &patchValue{typ: "Resource", value: m})
		case k == "part":
			list, ok := v.([]any)
			if !ok {
				return nil, fmt.Errorf("part must be an array")
			}
			out = setOnce(out, &patchValue{parts: list})
		case strings.HasPrefix(k, "value") && len(k) > 5 && unicode.IsUpper(rune(k[5])):
			out = setOnce(out, &patchValue{typ: typeCode(k[5:]), value: v, ext: part["_"+k]})
		case strings.HasPrefix(k, "_value"):
			if _, ok := part[k[1:]]; !ok {
				// A primitive with only extensions: its value is null.
				out = setOnce(out, &patchValue{typ: typeCode(k[6:]), ext: v})
			}
		}
		if out != nil && out.typ == "!" {
			return nil, fmt.Errorf("more than one value")
		}
	}
	if out == nil {
		return nil, fmt.Errorf("needs a value[x], a resource or parts")
	}
	return out, nil
}

// setOnce returns v, or a marker (typ "!") when a value was already set.
func setOnce(prev, v *patchValue) *patchValue {
	if prev != nil {
		return &patchValue{typ: "!"}
	}
	return v
}

// typeCode turns the suffix of value[x] into a type code: "Date" → "date",
// "CodeableConcept" stays.
func typeCode(suffix string) string {
	for _, t := range []string{"Base64Binary", "Boolean", "Canonical", "Code", "Date", "DateTime", "Decimal", "Id",
		"Instant", "Integer", "Markdown", "Oid", "PositiveInt", "String", "Time", "UnsignedInt", "Uri", "Url", "Uuid"} {
		if suffix == t {
			return strings.ToLower(t[:1]) + t[1:]
		}
	}
	return suffix
}

// numberValue reads a JSON number however it was decoded.
func numberValue(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	}
	return 0, false
}

// apply runs one operation on root.
func (op fhirPathOp) apply(root map[string]any) error {
	nodes, err := op.expr.EvaluateEnv(root, patchPathEnv)
	if err != nil {
		return err
	}
	ctxs := elementContexts(root)
	switch op.typ {
	case "add":
		target, err := single(nodes, root)
		if err != nil {
			return err
		}
		obj, ok := target.Value.(map[string]any)
		if !ok {
			return fmt.Errorf("the path finds a primitive value; add needs an element that has children")
		}
		ctx, ok := ctxs[objKey(obj)]
		if !ok {
			return fmt.Errorf("the path finds an element this server has no definition of")
		}
		return addChild(obj, ctx, op.name, op.value)
	case "replace":
		target, err := single(nodes, root)
		if err != nil {
			return err
		}
		parent, key, index, ok := target.Location()
		if !ok {
			return fmt.Errorf("the path must find an element inside the resource, not the resource itself")
		}
		d, name, _, ok := childElement(ctxs[objKey(parent)], key)
		if !ok {
			return fmt.Errorf("element %s has no definition", key)
		}
		newKey, v, err := buildValue(d, name, op.value)
		if err != nil {
			return err
		}
		if index >= 0 {
			if newKey != key {
				return fmt.Errorf("a list item keeps its type: %s cannot become %s", key, newKey)
			}
			parent[key].([]any)[index] = v
			return nil
		}
		delete(parent, key)
		ext := parent["_"+key]
		delete(parent, "_"+key)
		parent[newKey] = v
		if op.value.ext != nil {
			parent["_"+newKey] = op.value.ext
		} else if ext != nil && newKey == key && !isObject(v) {
			parent["_"+newKey] = ext
		}
		return nil
	case "delete":
		switch len(nodes) {
		case 0:
			return nil // R4: "delete the element (if found)"
		case 1:
		default:
			return fmt.Errorf("the path finds %d elements; delete removes one", len(nodes))
		}
		parent, key, index, ok := nodes[0].Location()
		if !ok {
			return fmt.Errorf("the path must find an element inside the resource, not the resource itself")
		}
		removeAt(parent, key, index)
		return nil
	case "insert":
		parent, key, list, err := op.listOf(nodes, root, ctxs)
		if err != nil {
			return err
		}
		if op.index > len(list) {
			return fmt.Errorf("index %d is beyond the end of the list (%d items)", op.index, len(list))
		}
		d, name, _, ok := childElement(ctxs[objKey(parent)], key)
		if !ok || !d.many {
			return fmt.Errorf("%s is not a repeating element", key)
		}
		newKey, v, err := buildValue(d, name, op.value)
		if err != nil {
			return err
		}
		if newKey != key {
			return fmt.Errorf("the list %s holds no %s", key, newKey)
		}
		parent[key] = insertAt(list, op.index, v)
		if ext, ok := parent["_"+key].([]any); ok {
			parent["_"+key] = insertAt(ext, op.index, op.value.ext)
		}
		return nil
	case "move":
		parent, key, list, err := op.listOf(nodes, root, ctxs)
		if err != nil {
			return err
		}
		if op.source >= len(list) || op.destination >= len(list) {
			return fmt.Errorf("source %d or destination %d is outside the list (%d items)", op.source, op.destination, len(list))
		}
		parent[key] = moveItem(list, op.source, op.destination)
		if ext, ok := parent["_"+key].([]any); ok && len(ext) == len(list) {
			parent["_"+key] = moveItem(ext, op.source, op.destination)
		}
		return nil
	}
	return fmt.Errorf("unknown operation type %q", op.typ)
}

// single is the one element a path must find; the resource itself when
// the path names it.
func single(nodes []fhirpath.Node, root map[string]any) (fhirpath.Node, error) {
	switch len(nodes) {
	case 0:
		return fhirpath.Node{}, fmt.Errorf("the path finds no element")
	case 1:
		return nodes[0], nil
	}
	return fhirpath.Node{}, fmt.Errorf("the path finds %d elements; this operation needs exactly one", len(nodes))
}

// listOf is the list (a repeating element's array) the path of an insert
// or move names: the items it finds all sit in one member of one object;
// an empty list is found through the path's parent.
func (op fhirPathOp) listOf(nodes []fhirpath.Node, root map[string]any, ctxs map[unsafe.Pointer]string) (map[string]any, string, []any, error) {
	if len(nodes) == 0 {
		parentExpr, name, ok := op.expr.Parent()
		if !ok {
			return nil, "", nil, fmt.Errorf("the path finds no list")
		}
		pnodes, err := parentExpr.EvaluateEnv(root, patchPathEnv)
		if err != nil {
			return nil, "", nil, err
		}
		p, err := single(pnodes, root)
		if err != nil {
			return nil, "", nil, fmt.Errorf("the parent of the empty list: %w", err)
		}
		obj, ok := p.Value.(map[string]any)
		if !ok {
			return nil, "", nil, fmt.Errorf("the parent of the list is not an element with children")
		}
		if _, present := obj[name]; present {
			return nil, "", nil, fmt.Errorf("%s is not a list", name)
		}
		return obj, name, nil, nil
	}
	var parent map[string]any
	var key string
	for i, n := range nodes {
		p, k, index, ok := n.Location()
		if !ok || index < 0 {
			return nil, "", nil, fmt.Errorf("the path must find the items of a list")
		}
		if i == 0 {
			parent, key = p, k
			continue
		}
		if objKey(p) != objKey(parent) || k != key {
			return nil, "", nil, fmt.Errorf("the path finds items of more than one list")
		}
	}
	list := parent[key].([]any)
	if len(nodes) != len(list) {
		return nil, "", nil, fmt.Errorf("the path finds %d of the %d items of %s: name the whole list", len(nodes), len(list), key)
	}
	return parent, key, list, nil
}

// addChild adds the element name to obj (whose definition context is ctx).
func addChild(obj map[string]any, ctx, name string, value *patchValue) error {
	d, base, named, ok := childElement(ctx, name)
	if !ok {
		if d, ok = lookupChild(elements(), ctx, name); !ok {
			return fmt.Errorf("%s has no element %q", ctx, name)
		}
		base = name
	}
	key, v, err := buildValue(d, base, value)
	if err != nil {
		return err
	}
	if named != "" && key != name {
		return fmt.Errorf("%s takes a %s value, not %s", name, named, value.typ)
	}
	if d.choice {
		for _, t := range d.types {
			if k := base + upperFirst(t); obj[k] != nil {
				return fmt.Errorf("%s already has %s; replace it instead", ctx, k)
			}
		}
	}
	if !d.many {
		if obj[key] != nil {
			return fmt.Errorf("%s already has %s, which does not repeat; replace it instead", ctx, key)
		}
		obj[key] = v
		if value.ext != nil {
			obj["_"+key] = value.ext
		}
		return nil
	}
	list, _ := obj[key].([]any)
	if obj[key] != nil && list == nil {
		return fmt.Errorf("%s.%s is not a list", ctx, key)
	}
	if ext, ok := obj["_"+key].([]any); ok {
		obj["_"+key] = append(ext, value.ext)
	} else if value.ext != nil {
		ext := make([]any, len(list)+1)
		ext[len(list)] = value.ext
		obj["_"+key] = ext
	}
	obj[key] = append(list, v)
	return nil
}

// buildValue checks value against element d (named base: its name without
// a choice type) and returns the JSON member name and the JSON value.
func buildValue(d *elementDef, base string, value *patchValue) (string, any, error) {
	if value.parts != nil {
		if !anonymousType(d) {
			return "", nil, fmt.Errorf("%s is of type %s: send it as a value[x], not as parts", base, allowedTypes(d))
		}
		obj, err := fromParts(d.childContext("", nil), value.parts)
		return base, obj, err
	}
	typ := value.typ
	if d.ref != "" || !typeAllowed(d.types, typ) {
		return "", nil, fmt.Errorf("%s takes %s, not %s", base, allowedTypes(d), typ)
	}
	if value.value == nil {
		return "", nil, fmt.Errorf("a value with only extensions cannot be written here")
	}
	key := base
	if d.choice {
		key = base + upperFirst(choiceType(d.types, typ))
	}
	return key, deepCopy(value.value), nil
}

// fromParts builds an anonymous element (a backbone element, or a data type
// given by parts) from the parts of a value.
func fromParts(ctx string, parts []any) (map[string]any, error) {
	obj := map[string]any{}
	for _, raw := range parts {
		part, ok := raw.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("every part of a value must be an object")
		}
		name, _ := part["name"].(string)
		pv, err := partValue(part)
		if err != nil {
			return nil, fmt.Errorf("value part %q: %w", name, err)
		}
		if err := addChild(obj, ctx, name, pv); err != nil {
			return nil, fmt.Errorf("value part %q: %w", name, err)
		}
	}
	return obj, nil
}

// anonymousType: the element's value may be given as parts: a backbone
// element, or a complex data type of a non-choice element (Extension,
// which no value[x] of Parameters can carry).
func anonymousType(d *elementDef) bool {
	if d.ref != "" {
		return true
	}
	if d.choice || len(d.types) != 1 {
		return false
	}
	t := d.types[0]
	return t != "Resource" && t != "" && unicode.IsUpper(rune(t[0]))
}

// quantityTypes are the profiles of Quantity, written as Quantity in JSON.
var quantityTypes = map[string]bool{"Quantity": true, "Age": true, "Distance": true, "Duration": true, "Count": true, "SimpleQuantity": true, "MoneyQuantity": true}

// stringTypes are the primitives whose JSON is a string.
var stringTypes = map[string]bool{"string": true, "code": true, "id": true, "markdown": true, "uri": true, "url": true,
	"canonical": true, "oid": true, "uuid": true, "base64Binary": true, "date": true, "dateTime": true, "instant": true, "time": true}

// intTypes are the integer primitives.
var intTypes = map[string]bool{"integer": true, "positiveInt": true, "unsignedInt": true}

// typeAllowed: a value of type typ may stand where types are allowed. A
// choice element takes the named type exactly; otherwise values of the same
// JSON kind are accepted (valueString for a code, valueInteger for a
// positiveInt, Quantity for Age), the spelling clients use.
func typeAllowed(types []string, typ string) bool {
	for _, t := range types {
		switch {
		case t == typ,
			quantityTypes[t] && quantityTypes[typ],
			stringTypes[t] && stringTypes[typ] && len(types) == 1,
			intTypes[t] && intTypes[typ],
			t == "decimal" && intTypes[typ] && len(types) == 1,
			t == "Resource" && typ == "Resource":
			return true
		}
	}
	return false
}

// choiceType is the type a choice element's JSON name takes for a value of
// type typ.
func choiceType(types []string, typ string) string {
	for _, t := range types {
		if t == typ {
			return t
		}
	}
	for _, t := range types {
		if quantityTypes[t] && quantityTypes[typ] || intTypes[t] && intTypes[typ] {
			return t
		}
	}
	return typ
}

func allowedTypes(d *elementDef) string {
	if d.ref != "" {
		return "an element given as parts"
	}
	return strings.Join(d.types, "|")
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func isObject(v any) bool { _, ok := v.(map[string]any); return ok }

// removeAt removes member key of parent (index -1), or item index of its
// list (dropping the list when it empties), and the primitive extensions
// beside it.
func removeAt(parent map[string]any, key string, index int) {
	if index < 0 {
		delete(parent, key)
		delete(parent, "_"+key)
		return
	}
	for _, k := range []string{key, "_" + key} {
		list, ok := parent[k].([]any)
		if !ok || index >= len(list) {
			continue
		}
		list = append(list[:index:index], list[index+1:]...)
		if len(list) == 0 || k[0] == '_' && allNull(list) {
			delete(parent, k)
		} else {
			parent[k] = list
		}
	}
}

func allNull(list []any) bool {
	for _, v := range list {
		if v != nil {
			return false
		}
	}
	return true
}

func insertAt(list []any, i int, v any) []any {
	out := make([]any, 0, len(list)+1)
	out = append(out, list[:i]...)
	out = append(out, v)
	return append(out, list[i:]...)
}

func moveItem(list []any, from, to int) []any {
	v := list[from]
	rest := append(append([]any{}, list[:from]...), list[from+1:]...)
	return insertAt(rest, to, v)
}
