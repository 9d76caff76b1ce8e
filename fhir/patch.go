package fhir

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/pfrgateway/caddy-pfr/fhir/fhirjson"
	"github.com/pfrgateway/caddy-pfr/fhir/fhirpath"
)

// MediaTypeJSONPatch is the media type of a JSON Patch (RFC 6902) body.
const MediaTypeJSONPatch = "application/json-patch+json"

// Patch is the body of a PATCH: a JSON Patch, or a FHIRPath Patch
// (Parameters). Parse it with ParsePatch (a request body) or
// PatchFromResource (a Bundle entry's resource), then Apply it.
type Patch struct {
	jsonPatch []byte         // a JSON Patch document, or nil
	params    map[string]any // a FHIRPath Patch Parameters, or nil
}

// ParsePatch reads the body of a PATCH request by its media type:
// application/json-patch+json is a JSON Patch, application/fhir+json or
// application/json a FHIRPath Patch Parameters. Anything else is a 415;
// a body that is not a valid patch of its kind a 400.
func ParsePatch(contentType string, body []byte) (*Patch, error) {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		mt = ""
	}
	switch strings.ToLower(mt) {
	case MediaTypeJSONPatch:
		v, err := fhirjson.Decode(body)
		if err != nil {
			return nil, JSONError(err)
		}
		ops, ok := v.([]any)
		if !ok {
			return nil, Errorf(http.StatusBadRequest, CodeStructure, "the JSON Patch must be a JSON array of operations")
		}
		for i, raw := range ops {
			if _, err := parsePatchOperation(raw); err != nil {
				return nil, Errorf(http.StatusBadRequest, CodeStructure, "JSON Patch operation %d: %v", i, err).WithCause(err)
			}
		}
		return &Patch{jsonPatch: body}, nil
	case "application/fhir+json", "application/json":
		if trimmed := bytes.TrimLeft(body, " \t\r\n"); len(trimmed) > 0 && trimmed[0] == '[' {
			return nil, Errorf(http.StatusUnsupportedMediaType, CodeNotSupported,
				"this body is a JSON Patch: send it with Content-Type: %s (%q is for a FHIRPath Patch Parameters)", MediaTypeJSONPatch, contentType)
		}
		params, err := DecodeResource(body)
		if err != nil {
			return nil, err
		}
		return patchFromParameters(params)
	}
	return nil, Errorf(http.StatusUnsupportedMediaType, CodeNotSupported,
		"PATCH takes a JSON Patch (Content-Type: %s) or a FHIRPath Patch Parameters (Content-Type: application/fhir+json), not %q",
		MediaTypeJSONPatch, contentType)
}

// PatchFromResource reads the patch of a Bundle entry whose request.method
// is PATCH: a Binary whose contentType is application/json-patch+json and
// whose data is the JSON Patch in base64, or a FHIRPath Patch Parameters.
func PatchFromResource(res map[string]any) (*Patch, error) {
	switch res["resourceType"] {
	case "Parameters":
		return patchFromParameters(res)
	case "Binary":
		ct, _ := res["contentType"].(string)
		if mt, _, err := mime.ParseMediaType(ct); err != nil || !strings.EqualFold(mt, MediaTypeJSONPatch) {
			return nil, Errorf(http.StatusBadRequest, CodeNotSupported,
				"a PATCH entry's Binary must have contentType %s, not %q", MediaTypeJSONPatch, ct)
		}
		data, _ := res["data"].(string)
		body, err := base64.StdEncoding.DecodeString(data)
		if err != nil {
			return nil, Errorf(http.StatusBadRequest, CodeStructure, "a PATCH entry's Binary.data is not base64: %v", err)
		}
		return ParsePatch(MediaTypeJSONPatch, body)
	}
	return nil, Errorf(http.StatusBadRequest, CodeInvalid,
		"a PATCH entry carries a Binary (JSON Patch) or a Parameters (FHIRPath Patch), not a %v", res["resourceType"])
}

// patchFromParameters checks a FHIRPath Patch without applying it.
func patchFromParameters(params map[string]any) (*Patch, error) {
	if _, err := parseFHIRPathPatch(params); err != nil {
		return nil, err
	}
	return &Patch{params: params}, nil
}

// Kind names the patch format: "JSON Patch" or "FHIRPath Patch".
func (p *Patch) Kind() string {
	if p.params != nil {
		return "FHIRPath Patch"
	}
	return "JSON Patch"
}

// Apply applies the patch to a copy of current (the resource as stored)
// and returns the result; current is not modified. The result must keep
// current's resourceType and id (422 otherwise): a patch changes a
// resource, it never makes another one.
func (p *Patch) Apply(current map[string]any) (map[string]any, error) {
	var out map[string]any
	var err error
	if p.params != nil {
		out, err = ApplyFHIRPathPatch(current, p.params)
	} else {
		out, err = ApplyJSONPatch(current, p.jsonPatch)
	}
	if err != nil {
		return nil, err
	}
	if out["resourceType"] != current["resourceType"] || out["id"] != current["id"] {
		return nil, Errorf(http.StatusUnprocessableEntity, CodeBusinessRule,
			"a patch may not change resourceType or id (%v/%v)", current["resourceType"], current["id"])
	}
	return out, nil
}

// maxPatchOperations bounds the operations of one JSON Patch document.
const maxPatchOperations = 10000

// ApplyJSONPatch applies an RFC 6902 JSON Patch document (media type
// application/json-patch+json, which FHIR allows for PATCH) to a copy of
// doc and returns the patched copy; doc is not modified. The operations
// add, remove, replace, move, copy and test are applied in order with RFC
// 6901 JSON Pointers ("~1" is "/", "~0" is "~"); if any fails, nothing is
// returned.
//
// A patch document that is not valid (not an array of operations, unknown
// op, missing or mistyped member, bad pointer syntax) is a 400 *Error; a
// valid patch that does not apply to doc (missing path, index out of
// range, failed test, a result that is not a JSON object) is a 422 *Error.
// The caller checks the result as the write it becomes: the patched
// resource must keep its resourceType and id and pass the ownership rules
// (see Owner.CheckWrite).
func ApplyJSONPatch(doc map[string]any, patch []byte) (map[string]any, error) {
	v, err := fhirjson.Decode(patch)
	if err != nil {
		return nil, JSONError(err)
	}
	ops, ok := v.([]any)
	if !ok {
		return nil, Errorf(http.StatusBadRequest, CodeStructure, "the JSON Patch must be a JSON array of operations")
	}
	if len(ops) > maxPatchOperations {
		return nil, Errorf(http.StatusBadRequest, CodeTooCostly, "the JSON Patch has more than %d operations", maxPatchOperations)
	}
	var root any = deepCopy(doc)
	for i, raw := range ops {
		op, err := parsePatchOperation(raw)
		if err != nil {
			return nil, Errorf(http.StatusBadRequest, CodeStructure, "JSON Patch operation %d: %v", i, err).WithCause(err)
		}
		if root, err = op.apply(root); err != nil {
			return nil, Errorf(http.StatusUnprocessableEntity, CodeProcessing, "JSON Patch operation %d (%s %s): %v", i, op.op, op.rawPath, err).WithCause(err)
		}
	}
	result, ok := root.(map[string]any)
	if !ok {
		return nil, Errorf(http.StatusUnprocessableEntity, CodeProcessing, "the patched document is not a JSON object")
	}
	return result, nil
}

// patchOperation is one parsed JSON Patch operation.
type patchOperation struct {
	op       string
	rawPath  string
	path     []string // reference tokens, unescaped
	from     []string // for move and copy
	value    any      // for add, replace and test
	hasValue bool
}

// parsePatchOperation checks the members an operation needs.
func parsePatchOperation(raw any) (patchOperation, error) {
	var op patchOperation
	m, ok := raw.(map[string]any)
	if !ok {
		return op, fmt.Errorf("not a JSON object")
	}
	op.op, ok = m["op"].(string)
	if !ok {
		return op, fmt.Errorf("op must be a string")
	}
	op.rawPath, ok = m["path"].(string)
	if !ok {
		return op, fmt.Errorf("path must be a string")
	}
	var err error
	if op.path, err = parsePointer(op.rawPath); err != nil {
		return op, fmt.Errorf("path: %w", err)
	}
	op.value, op.hasValue = m["value"]
	switch op.op {
	case "add", "replace", "test":
		if !op.hasValue {
			return op, fmt.Errorf("%s needs a value", op.op)
		}
	case "remove":
	case "move", "copy":
		from, ok := m["from"].(string)
		if !ok {
			return op, fmt.Errorf("%s needs from as a string", op.op)
		}
		if op.from, err = parsePointer(from); err != nil {
			return op, fmt.Errorf("from: %w", err)
		}
		if op.op == "move" && len(op.from) < len(op.path) && hasPrefix(op.path, op.from) {
			return op, fmt.Errorf("cannot move a value into one of its own children")
		}
	default:
		return op, fmt.Errorf("unknown op %q", op.op)
	}
	return op, nil
}

// apply applies op to root and returns the new root.
func (op patchOperation) apply(root any) (any, error) {
	switch op.op {
	case "add":
		return pointerAdd(root, op.path, op.value)
	case "remove":
		root, _, err := pointerRemove(root, op.path)
		return root, err
	case "replace":
		if _, err := pointerGet(root, op.path); err != nil {
			return root, err
		}
		return pointerSet(root, op.path, op.value)
	case "move":
		if hasPrefix(op.path, op.from) && len(op.path) == len(op.from) {
			_, err := pointerGet(root, op.from)
			return root, err
		}
		root, v, err := pointerRemove(root, op.from)
		if err != nil {
			return root, err
		}
		return pointerAdd(root, op.path, v)
	case "copy":
		v, err := pointerGet(root, op.from)
		if err != nil {
			return root, err
		}
		return pointerAdd(root, op.path, deepCopy(v))
	case "test":
		v, err := pointerGet(root, op.path)
		if err != nil {
			return root, err
		}
		if !fhirpath.JSONEqual(v, op.value) {
			return root, fmt.Errorf("test failed: the value differs")
		}
		return root, nil
	}
	return root, fmt.Errorf("unknown op %q", op.op)
}

// parsePointer splits an RFC 6901 JSON Pointer into unescaped tokens.
func parsePointer(p string) ([]string, error) {
	if p == "" {
		return nil, nil
	}
	if !strings.HasPrefix(p, "/") {
		return nil, fmt.Errorf("pointer %q must be empty or start with /", p)
	}
	toks := strings.Split(p[1:], "/")
	for i, t := range toks {
		for j := 0; j < len(t); j++ {
			if t[j] == '~' && (j+1 == len(t) || t[j+1] != '0' && t[j+1] != '1') {
				return nil, fmt.Errorf("pointer %q: '~' must be followed by 0 or 1", p)
			}
		}
		toks[i] = strings.ReplaceAll(strings.ReplaceAll(t, "~1", "/"), "~0", "~")
	}
	return toks, nil
}

// arrayIndex parses an array index token for an array of length n. With
// forAdd, "-" and n (the end) are allowed.
func arrayIndex(tok string, n int, forAdd bool) (int, error) {
	if tok == "-" && forAdd {
		return n, nil
	}
	if tok == "" || len(tok) > 1 && tok[0] == '0' || strings.TrimLeft(tok, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not an array index", tok)
	}
	i, err := strconv.Atoi(tok)
	if err != nil || i > n || i == n && !forAdd {
		return 0, fmt.Errorf("index %s is out of range (length %d)", tok, n)
	}
	return i, nil
}

// pointerGet returns the value at path.
func pointerGet(v any, path []string) (any, error) {
	for _, tok := range path {
		switch c := v.(type) {
		case map[string]any:
			child, ok := c[tok]
			if !ok {
				return nil, fmt.Errorf("no member %q", tok)
			}
			v = child
		case []any:
			i, err := arrayIndex(tok, len(c), false)
			if err != nil {
				return nil, err
			}
			v = c[i]
		default:
			return nil, fmt.Errorf("cannot descend into a %s with %q", jsonKind(v), tok)
		}
	}
	return v, nil
}

// pointerUpdate finds the container holding the last token of path and
// replaces it by what change returns; it returns the new root.
func pointerUpdate(v any, path []string, change func(container any, last string) (any, error)) (any, error) {
	if len(path) == 1 {
		return change(v, path[0])
	}
	switch c := v.(type) {
	case map[string]any:
		child, ok := c[path[0]]
		if !ok {
			return v, fmt.Errorf("no member %q", path[0])
		}
		nc, err := pointerUpdate(child, path[1:], change)
		if err != nil {
			return v, err
		}
		c[path[0]] = nc
		return c, nil
	case []any:
		i, err := arrayIndex(path[0], len(c), false)
		if err != nil {
			return v, err
		}
		nc, err := pointerUpdate(c[i], path[1:], change)
		if err != nil {
			return v, err
		}
		c[i] = nc
		return c, nil
	}
	return v, fmt.Errorf("cannot descend into a %s with %q", jsonKind(v), path[0])
}

// pointerAdd is the add operation: set a member, or insert into an array.
func pointerAdd(root any, path []string, value any) (any, error) {
	if len(path) == 0 {
		return value, nil
	}
	return pointerUpdate(root, path, func(container any, last string) (any, error) {
		switch c := container.(type) {
		case map[string]any:
			c[last] = value
			return c, nil
		case []any:
			i, err := arrayIndex(last, len(c), true)
			if err != nil {
				return c, err
			}
			return append(c[:i], append([]any{value}, c[i:]...)...), nil
		}
		return container, fmt.Errorf("cannot add %q to a %s", last, jsonKind(container))
	})
}

// pointerSet replaces the existing value at path.
func pointerSet(root any, path []string, value any) (any, error) {
	if len(path) == 0 {
		return value, nil
	}
	return pointerUpdate(root, path, func(container any, last string) (any, error) {
		switch c := container.(type) {
		case map[string]any:
			c[last] = value
			return c, nil
		case []any:
			i, err := arrayIndex(last, len(c), false)
			if err != nil {
				return c, err
			}
			c[i] = value
			return c, nil
		}
		return container, fmt.Errorf("cannot replace %q in a %s", last, jsonKind(container))
	})
}

// pointerRemove removes the value at path and returns it.
func pointerRemove(root any, path []string) (any, any, error) {
	if len(path) == 0 {
		return root, nil, fmt.Errorf("cannot remove the whole document")
	}
	var removed any
	root, err := pointerUpdate(root, path, func(container any, last string) (any, error) {
		switch c := container.(type) {
		case map[string]any:
			v, ok := c[last]
			if !ok {
				return c, fmt.Errorf("no member %q", last)
			}
			removed = v
			delete(c, last)
			return c, nil
		case []any:
			i, err := arrayIndex(last, len(c), false)
			if err != nil {
				return c, err
			}
			removed = c[i]
			return append(c[:i:i], c[i+1:]...), nil
		}
		return container, fmt.Errorf("cannot remove %q from a %s", last, jsonKind(container))
	})
	return root, removed, err
}

// hasPrefix reports whether path starts with the tokens of prefix.
func hasPrefix(path, prefix []string) bool {
	if len(prefix) > len(path) {
		return false
	}
	for i := range prefix {
		if path[i] != prefix[i] {
			return false
		}
	}
	return true
}

// deepCopy copies a decoded JSON value so that changes to the copy never
// reach the original.
func deepCopy(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, x := range v {
			m[k] = deepCopy(x)
		}
		return m
	case []any:
		s := make([]any, len(v))
		for i, x := range v {
			s[i] = deepCopy(x)
		}
		return s
	}
	return v
}

// jsonKind names the JSON type of v for error messages.
func jsonKind(v any) string {
	switch v.(type) {
	case map[string]any:
		return "object"
	case []any:
		return "array"
	case string:
		return "string"
	case nil:
		return "null"
	}
	return "scalar"
}
