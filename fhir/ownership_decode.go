package fhir

import (
	"errors"
	"net/http"

	"github.com/pfrgateway/caddy-pfr/fhir/fhirjson"
)

// maxJSONDepth bounds the nesting of a decoded body (fhirjson.MaxDepth).
const maxJSONDepth = fhirjson.MaxDepth

// DecodeResource decodes a FHIR JSON body at the door of every write, with
// fhirjson: invalid UTF-8, lone surrogates, a member name repeated in one
// object (however its characters are escaped), numbers outside the range
// of a double or with more than 18 significant digits, data after the
// object, a body that is not an object and nesting deeper than 100 levels
// are refused with a 400 *Error whose expression names the offending path.
// Numbers are kept as json.Number.
//
// Why: the gateway checks what it decoded but the upstream parses the bytes
// itself. Where encoding/json keeps the last of two "subject" members, an
// upstream may keep the first, and where it replaces invalid UTF-8, an
// upstream may not: the check and the write would then see different
// resources. A number no double holds is stored and then breaks every
// reader. Decoding with DecodeResource (or forwarding a re-encoding of
// what was checked) closes those gaps.
func DecodeResource(data []byte) (map[string]any, error) {
	m, err := fhirjson.DecodeObject(data)
	if err != nil {
		return nil, JSONError(err)
	}
	return m, nil
}

// JSONError turns a fhirjson refusal into the 400 OperationOutcome error
// every door answers with, its expression naming the path.
func JSONError(err error) *Error {
	var je *fhirjson.Error
	if errors.As(err, &je) {
		fe := Errorf(http.StatusBadRequest, CodeStructure, "invalid JSON body, not valid JSON for FHIR: %v", je).WithCause(err)
		if je.Path != "" {
			fe = fe.WithExpression(je.Path)
		}
		return fe
	}
	return Errorf(http.StatusBadRequest, CodeStructure, "invalid JSON body, not valid JSON for FHIR: %v", err).WithCause(err)
}
