package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"

	"github.com/pfrgateway/caddy-pfr/fhir"
)

// maxSearchForm bounds the form body of a POST _search.
const maxSearchForm = 1 << 20

// readBody reads the whole request body, at most g.cfg.MaxBodyBytes, and
// leaves r.Body readable again for the upstream.
func (g *Gateway) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, g.cfg.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, fhir.Errorf(http.StatusRequestEntityTooLarge, fhir.CodeTooCostly,
				"the request body is larger than %d bytes", g.cfg.MaxBodyBytes)
		}
		return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeStructure, "reading the request body: %v", err)
	}
	setBody(r, body)
	return body, nil
}

// setBody makes body the request's body.
func setBody(r *http.Request, body []byte) {
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
}

// readJSONResource reads and decodes a FHIR JSON body.
func (g *Gateway) readJSONResource(w http.ResponseWriter, r *http.Request) ([]byte, map[string]any, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/fhir+json" && mt != "application/json" && mt != "application/json-patch+json") {
			return nil, nil, fhir.Errorf(http.StatusUnsupportedMediaType, fhir.CodeNotSupported,
				"the body must be FHIR JSON (application/fhir+json), not %q", ct)
		}
	}
	body, err := g.readBody(w, r)
	if err != nil {
		return nil, nil, err
	}
	// Strict decoding (no repeated members, valid UTF-8, bounded depth):
	// the upstream must store exactly what was checked.
	res, err := fhir.DecodeResource(body)
	if err != nil {
		return nil, nil, err
	}
	return body, res, nil
}

// readBundle reads a Bundle posted to the base.
func (g *Gateway) readBundle(w http.ResponseWriter, r *http.Request) ([]byte, map[string]any, error) {
	body, res, err := g.readJSONResource(w, r)
	if err != nil {
		return nil, nil, err
	}
	if res["resourceType"] != "Bundle" {
		return nil, nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeInvalid, "only a Bundle can be posted to the base")
	}
	return body, res, nil
}

// readSearchForm reads the form body of a POST _search and restores it.
func readSearchForm(w http.ResponseWriter, r *http.Request) (url.Values, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxSearchForm))
	if err != nil {
		return nil, fhir.Errorf(http.StatusRequestEntityTooLarge, fhir.CodeTooCostly, "the search form is larger than %d bytes", maxSearchForm)
	}
	setBody(r, body)
	if len(bytes.TrimSpace(body)) == 0 {
		return url.Values{}, nil
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeInvalid, "malformed search form: %v", err)
	}
	return form, nil
}

// setJSONBody makes the JSON encoding of v the request's body: what the
// gateway checked (and stamped) is exactly what the upstream gets.
func setJSONBody(r *http.Request, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return fhir.Errorf(http.StatusInternalServerError, fhir.CodeException, "encoding the request body").WithCause(err)
	}
	setBody(r, body)
	return nil
}

// WriteJSON writes v as a plain JSON body (application/json: the SMART
// configuration, the Bulk Data manifest, the management API's bodies).
func WriteJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		fhir.WriteError(w, fhir.Errorf(http.StatusInternalServerError, fhir.CodeException, "cannot encode response").WithCause(err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
