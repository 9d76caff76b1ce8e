package store

import (
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/pfrgateway/caddy-pfr/fhir"
)

// maxBodyBytes bounds a request body; a Synthea lifetime is under 1 MiB.
const maxBodyBytes = 32 << 20

// jsonFormats are the _format values and Accept media types that mean JSON.
var jsonFormats = map[string]bool{
	"json":                  true,
	"application/json":      true,
	"application/fhir+json": true,
	"application/json+fhir": true, // DSTU2 name, still sent by some clients
	"text/json":             true,
}

// negotiate checks _format and Accept: this server speaks JSON only.
func negotiate(r *http.Request) error {
	if f := r.URL.Query().Get("_format"); f != "" {
		// An unencoded "+" arrives as a space: "application/fhir json".
		mt := strings.ToLower(strings.TrimSpace(strings.SplitN(f, ";", 2)[0]))
		mt = strings.ReplaceAll(mt, " ", "+")
		if !jsonFormats[mt] {
			return fhir.Errorf(http.StatusNotAcceptable, fhir.CodeNotSupported,
				"_format %q is not supported: this server only speaks FHIR JSON (application/fhir+json)", f)
		}
		return nil
	}
	accept := strings.TrimSpace(strings.Join(r.Header.Values("Accept"), ","))
	if accept == "" {
		return nil
	}
	for _, part := range strings.Split(accept, ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		if q := params["q"]; q == "0" || q == "0.0" || q == "0.00" || q == "0.000" {
			continue
		}
		if jsonFormats[mt] || mt == "*/*" || mt == "application/*" {
			return nil
		}
	}
	return fhir.Errorf(http.StatusNotAcceptable, fhir.CodeNotSupported,
		"Accept %q is not supported: this server only speaks FHIR JSON (application/fhir+json)", accept)
}

// readBody checks Content-Type and reads the JSON body within maxBodyBytes.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return nil, fhir.Errorf(http.StatusUnsupportedMediaType, fhir.CodeNotSupported,
			"missing Content-Type: send application/fhir+json")
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || !jsonFormats[strings.ToLower(mt)] {
		return nil, fhir.Errorf(http.StatusUnsupportedMediaType, fhir.CodeNotSupported,
			"Content-Type %q is not supported: send application/fhir+json", ct)
	}
	return readLimited(w, r)
}

// readLimited reads the body, answering 413 past maxBodyBytes.
func readLimited(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return nil, fhir.Errorf(http.StatusRequestEntityTooLarge, fhir.CodeTooLong,
			"request body larger than %d bytes", maxBodyBytes)
	}
	if err != nil {
		return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeStructure, "cannot read request body: %v", err)
	}
	if len(body) == 0 {
		return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeRequired, "empty request body: a FHIR resource is required")
	}
	return body, nil
}
