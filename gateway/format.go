package gateway

import (
	"mime"
	"net/http"
	"strings"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/fhir"
)

// The gateway checks what it passes on (ownership, scopes, the upstream's
// answer) in FHIR JSON only, so it speaks FHIR JSON only: the upstream is
// always asked for JSON, and a client that asks for XML is told so instead
// of getting an answer nobody checked. The one exception is the raw
// content of a Binary (a PDF, an image), which is not a FHIR resource
// format at all.

// checkFormat refuses, with a 406 OperationOutcome, a request that asks for
// FHIR XML (or any other FHIR format than JSON) through _format or Accept.
func checkFormat(r *http.Request, in interaction) error {
	for _, f := range in.query["_format"] {
		if !isJSONFormat(f) {
			return fhir.Errorf(http.StatusNotAcceptable, fhir.CodeNotSupported,
				"_format=%s is not supported: this FHIR server answers in FHIR JSON only (application/fhir+json)", f)
		}
	}
	if rawBinary(r, in) {
		return nil
	}
	accept := r.Header.Values("Accept")
	if len(accept) == 0 {
		return nil
	}
	if v := strings.TrimSpace(accept[0]); len(accept) == 1 && !strings.ContainsAny(v, ",;") &&
		(v == "*/*" || v == "application/*" || isJSONFormat(v)) {
		return nil // one plain media type that names JSON: what mime.ParseMediaType would find
	}
	for _, part := range strings.Split(strings.Join(accept, ","), ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		if q, ok := params["q"]; ok && strings.TrimLeft(strings.TrimSpace(q), "0.") == "" {
			continue // q=0: explicitly not acceptable
		}
		if mt == "*/*" || mt == "application/*" || isJSONFormat(mt) {
			return nil
		}
	}
	return fhir.Errorf(http.StatusNotAcceptable, fhir.CodeNotSupported,
		"Accept: %s is not supported: this FHIR server answers in FHIR JSON only (application/fhir+json)",
		strings.Join(accept, ", "))
}

// isJSONFormat reports whether a _format value or media type names JSON
// (FHIR's short form "json", application/fhir+json, application/json,
// application/json+fhir), parameters aside.
func isJSONFormat(f string) bool {
	f = strings.ToLower(strings.TrimSpace(f))
	if i := strings.IndexByte(f, ';'); i >= 0 {
		f = strings.TrimSpace(f[:i])
	}
	switch f {
	case "json", "application/json", "application/fhir+json", "application/json+fhir", "text/json":
		return true
	}
	return false
}

// isFHIRMedia reports whether a media type names a FHIR resource format
// (JSON, XML, RDF) rather than arbitrary content.
func isFHIRMedia(mt string) bool {
	mt = strings.ToLower(mt)
	return isJSONFormat(mt) || strings.Contains(mt, "fhir") || strings.HasSuffix(mt, "/xml") || strings.HasSuffix(mt, "+xml")
}

// rawBinary reports whether r reads a Binary's own content: a read or vread
// of a Binary whose Accept names no FHIR format (FHIR R4 §3.1.0.1.8
// "Binary"). Such an answer is the content itself and is passed as it is.
func rawBinary(r *http.Request, in interaction) bool {
	if in.typ != "Binary" || (in.kind != auth.InteractionRead && in.kind != auth.InteractionVRead) {
		return false
	}
	accept := strings.TrimSpace(strings.Join(r.Header.Values("Accept"), ","))
	if accept == "" {
		return false
	}
	for _, part := range strings.Split(accept, ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil || mt == "*/*" || isFHIRMedia(mt) {
			return false
		}
	}
	return true
}

// askJSON makes the upstream request ask for FHIR JSON: Accept set, every
// _format parameter removed (the other parameters kept as the client
// escaped them). raw leaves a Binary content read as the client asked.
func askJSON(out *http.Request, raw bool) {
	if raw {
		return
	}
	out.Header.Set("Accept", "application/fhir+json")
	if strings.Contains(out.URL.RawQuery, "format") {
		out.URL.RawQuery = dropParams(out.URL.RawQuery, "_format")
	}
}
