package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/fhir/fhirjson"
)

// resource is a decoded FHIR resource. Numbers stay json.Number so that
// stored decimals keep their exact text.
type resource map[string]any

// parseResource decodes one resource from JSON and checks that it is an
// object of a known resource type.
// What cannot round-trip (fhirjson) is refused with a 400 naming the path.
func parseResource(body []byte) (resource, error) {
	v, err := fhirjson.Decode(body)
	if err != nil {
		return nil, fhir.JSONError(err)
	}
	return asResource(v)
}

// asResource checks that v (decoded JSON) is a resource object.
func asResource(v any) (resource, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeStructure, "the body must be a JSON object holding a FHIR resource")
	}
	rt, _ := m["resourceType"].(string)
	if rt == "" {
		return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeRequired, "the resource has no resourceType").WithExpression("resourceType")
	}
	if !fhir.IsResourceType(rt) {
		return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeNotSupported, "unknown resource type %q", rt).WithExpression("resourceType")
	}
	if id, present := m["id"]; present {
		s, ok := id.(string)
		if !ok || !fhir.IsID(s) {
			return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeValue, "invalid resource id %v: ids match [A-Za-z0-9-.]{1,64}", id).WithExpression(rt + ".id")
		}
	}
	if meta, present := m["meta"]; present {
		if _, ok := meta.(map[string]any); !ok {
			return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeStructure, "meta must be an object").WithExpression(rt + ".meta")
		}
	}
	return resource(m), nil
}

// Type returns resourceType.
func (r resource) Type() string { s, _ := r["resourceType"].(string); return s }

// ID returns id, or "".
func (r resource) ID() string { s, _ := r["id"].(string); return s }

// stamp sets id and the server-maintained meta elements, keeping the rest of
// meta (profile, security, tag, …).
func (r resource) stamp(id string, version uint64, lastUpdated time.Time) {
	r["id"] = id
	meta, _ := r["meta"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
	}
	meta["versionId"] = fmt.Sprint(version)
	meta["lastUpdated"] = instant(lastUpdated)
	r["meta"] = meta
}

// encodeResource writes r as JSON with resourceType, id and meta first, the
// order humans expect, and without HTML escaping so narrative stays readable.
func encodeResource(r map[string]any) ([]byte, error) {
	keys := make([]string, 0, len(r))
	for k := range r {
		switch k {
		case "resourceType", "id", "meta":
		default:
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	ordered := make([]string, 0, len(r))
	for _, k := range []string{"resourceType", "id", "meta"} {
		if _, ok := r[k]; ok {
			ordered = append(ordered, k)
		}
	}
	ordered = append(ordered, keys...)

	var buf bytes.Buffer
	buf.WriteByte('{')
	for i, k := range ordered {
		if i > 0 {
			buf.WriteByte(',')
		}
		if err := writeJSON(&buf, k); err != nil {
			return nil, err
		}
		buf.WriteByte(':')
		if err := writeJSON(&buf, r[k]); err != nil {
			return nil, fmt.Errorf("encode %s: %w", k, err)
		}
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

// writeJSON appends v as JSON without HTML escaping and without a newline.
func writeJSON(buf *bytes.Buffer, v any) error {
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return err
	}
	buf.Truncate(buf.Len() - 1) // Encode's trailing newline
	return nil
}

// decodeForSearch decodes stored resource JSON into the generic form the
// search engine evaluates.
func decodeForSearch(body []byte) (map[string]any, error) {
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("decode stored resource: %w", err)
	}
	return m, nil
}
