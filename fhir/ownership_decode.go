package fhir

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"unicode/utf8"
)

// maxJSONDepth bounds the nesting of a decoded body. FHIR resources nest a
// few dozen levels at most, a Bundle of Bundles included.
const maxJSONDepth = 100

// DecodeResource decodes a FHIR JSON body for the ownership checks, more
// strictly than encoding/json does: invalid UTF-8, a member name repeated
// in one object (however its characters are escaped), data after the
// object, a body that is not an object and nesting deeper than 100 levels
// are refused with a 400 *Error. Numbers are kept as json.Number.
//
// Why: the gateway checks what it decoded but the upstream parses the bytes
// itself. Where encoding/json keeps the last of two "subject" members, an
// upstream may keep the first, and where it replaces invalid UTF-8, an
// upstream may not: the check and the write would then see different
// resources. Decoding with DecodeResource (or forwarding a re-encoding of
// what was checked) closes that gap.
func DecodeResource(data []byte) (map[string]any, error) {
	if !utf8.Valid(data) {
		return nil, Errorf(http.StatusBadRequest, CodeStructure, "the body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := decodeStrict(dec, 0)
	if err != nil {
		return nil, Errorf(http.StatusBadRequest, CodeStructure, "the body is not acceptable FHIR JSON: %v", err).WithCause(err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, Errorf(http.StatusBadRequest, CodeStructure, "the body must be a JSON object")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, Errorf(http.StatusBadRequest, CodeStructure, "the body has data after its JSON object")
	}
	return m, nil
}

// decodeStrict decodes the next value from dec, refusing repeated member
// names and nesting beyond maxJSONDepth.
func decodeStrict(dec *json.Decoder, depth int) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	delim, isDelim := tok.(json.Delim)
	if !isDelim {
		return tok, nil
	}
	if depth >= maxJSONDepth {
		return nil, fmt.Errorf("nested deeper than %d levels", maxJSONDepth)
	}
	switch delim {
	case '{':
		m := map[string]any{}
		for dec.More() {
			keyTok, err := dec.Token()
			if err != nil {
				return nil, err
			}
			key, _ := keyTok.(string)
			if _, dup := m[key]; dup {
				return nil, fmt.Errorf("member %q appears twice in one object", key)
			}
			if m[key], err = decodeStrict(dec, depth+1); err != nil {
				return nil, err
			}
		}
		_, err := dec.Token() // '}'
		return m, err
	case '[':
		list := []any{}
		for dec.More() {
			v, err := decodeStrict(dec, depth+1)
			if err != nil {
				return nil, err
			}
			list = append(list, v)
		}
		_, err := dec.Token() // ']'
		return list, err
	}
	return nil, fmt.Errorf("unexpected %v", delim)
}
