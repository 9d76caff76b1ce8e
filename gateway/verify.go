package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"regexp"
	"strings"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/fhir/fhirjson"
)

// Upstream answers are checked before they are passed on: a client must
// never be told that something was stored, or read, when the upstream did
// not say so. A web server that is not the FHIR server (a Caddy site that
// does not match the gateway's Host answers an empty 200), a proxy's error
// page or an answer cut short would otherwise reach the client as success.
// An error the upstream states as an OperationOutcome is passed on as it
// is: it is the upstream's own refusal.

// verified reports whether the answer to in is checked before it is passed
// on; other answers (searches, history, operations) are streamed, and an
// answer cut short aborts the client's response.
func (in interaction) verified() bool {
	switch in.kind {
	case auth.InteractionCreate, auth.InteractionUpdate, auth.InteractionPatch, auth.InteractionDelete,
		auth.InteractionRead, auth.InteractionVRead:
		return true
	}
	return in.bundle
}

// ownTransaction is the gateway's own transaction of n entries (pick-up,
// removing an interrupted import), as verifyAnswer checks its answer.
func ownTransaction(n int) interaction {
	return interaction{bundle: true, bundleType: "transaction", entries: n}
}

// answerBody is what the checks read of an upstream body. Type and Entry
// are a Bundle's; other resources have members of those names with other
// shapes (Composition.type is a CodeableConcept, List.entry holds items),
// so they are read only from a Bundle (see decodeAnswer).
type answerBody struct {
	ResourceType string        `json:"resourceType"`
	ID           string        `json:"id"`
	Type         string        `json:"-"`
	Entry        []answerEntry `json:"-"`
}

// answerEntry is what the checks read of a Bundle entry.
type answerEntry struct {
	Response *struct {
		Status string `json:"status"`
	} `json:"response"`
}

// decodeAnswer reads raw into body and reports whether it is a FHIR
// resource: one JSON object with a resourceType string. Only a Bundle is
// decoded (its type and entries' statuses); of any other resource one
// pass (fhir.ScanResource) checks the syntax, reads resourceType and id
// and learns what the response filter judges (facts), building nothing.
// Member names match exactly (FHIR's spelling); of a repeated one the
// last counts, as encoding/json does.
func decodeAnswer(raw []byte, body *answerBody, facts *fhir.EntryFacts) bool {
	start := fhirjson.SkipSpace(raw, 0)
	if start == len(raw) || raw[start] != '{' {
		return false
	}
	n, err := fhir.ScanResource(raw[start:], facts)
	if err != nil || fhirjson.SkipSpace(raw, start+n) != len(raw) {
		return false
	}
	typ, id := facts.ResourceType, facts.ID
	if typ == nil {
		return false
	}
	var ok bool
	if body.ResourceType, ok = jsonString(typ); !ok || body.ResourceType == "" {
		return false
	}
	if id != nil {
		if body.ID, ok = jsonString(id); !ok && string(id) != "null" {
			return false // encoding/json refuses an id of another JSON type
		}
	}
	if body.ResourceType != "Bundle" {
		return true
	}
	var b struct {
		Type  string        `json:"type"`
		Entry []answerEntry `json:"entry"`
	}
	if json.Unmarshal(raw, &b) != nil {
		return false
	}
	body.Type, body.Entry = b.Type, b.Entry
	return true
}

// jsonString returns the string a JSON value holds, if it is one.
func jsonString(value []byte) (string, bool) {
	if len(value) < 2 || value[0] != '"' {
		return "", false
	}
	if bytes.IndexByte(value, '\\') < 0 {
		return string(value[1 : len(value)-1]), true
	}
	var s string
	if json.Unmarshal(value, &s) != nil {
		return "", false
	}
	return s, true
}

// verifyAnswer checks the upstream's answer to the client request r,
// classified as in, and returns the client's error when it does not confirm
// what was asked; nil means it may be passed on.
func verifyAnswer(in interaction, r *http.Request, res *captured) *fhir.Error {
	raw := res.body.Bytes()
	var body answerBody
	decoded := decodeAnswer(raw, &body, &res.facts)
	res.judged = decoded && body.ResourceType != "Bundle"
	notConfirmed := func(format string, args ...any) *fhir.Error {
		return fhir.Errorf(http.StatusBadGateway, fhir.CodeException,
			"the upstream FHIR server did not confirm the %s: it answered %s%s; treat it as not done",
			in.describe(), describeAnswer(res, decoded, &body), fmt.Sprintf(format, args...))
	}
	if res.status >= 300 {
		if decoded && body.ResourceType == "OperationOutcome" {
			return nil // the upstream's own refusal, stated in FHIR
		}
		if res.status == http.StatusNotModified && (in.kind == auth.InteractionRead || in.kind == auth.InteractionVRead) {
			return nil
		}
		e := notConfirmed("")
		switch res.status {
		case http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			e.Status = res.status
			if ra := res.header.Get("Retry-After"); ra != "" {
				e = e.WithHeader("Retry-After", ra)
			}
		}
		return e
	}
	if len(raw) > 0 && !decoded && !(in.typ == "Binary" && !isFHIRMediaType(res.header)) {
		return notConfirmed("")
	}
	bodyIs := func(typ string) bool { return decoded && body.ResourceType == typ }
	switch {
	case in.bundle:
		want := in.bundleType + "-response"
		if res.status != http.StatusOK || !bodyIs("Bundle") || body.Type != want {
			return notConfirmed(" instead of 200 with a %s Bundle", want)
		}
		if len(body.Entry) != in.entries {
			return notConfirmed(" for %d requests", in.entries)
		}
		for i, e := range body.Entry {
			if e.Response == nil || !statusLine.MatchString(e.Response.Status) {
				return notConfirmed(": entry %d has no response status", i)
			}
			if in.bundleType == "transaction" && !strings.HasPrefix(e.Response.Status, "2") {
				return notConfirmed(": entry %d failed (%s) in a transaction that claims success", i, e.Response.Status)
			}
		}
	case in.kind == auth.InteractionCreate:
		conditional := r.Header.Get("If-None-Exist") != ""
		if res.status != http.StatusCreated && !(conditional && res.status == http.StatusOK) {
			return notConfirmed(" instead of 201 Created")
		}
		if decoded && !bodyIs(in.typ) && !bodyIs("OperationOutcome") {
			return notConfirmed(" instead of a %s", in.typ)
		}
		if _, ok := locationID(res.header, in.typ); !ok && !(bodyIs(in.typ) && body.ID != "") {
			return notConfirmed(" without a Location naming the %s created", in.typ)
		}
	case in.kind == auth.InteractionUpdate || in.kind == auth.InteractionPatch:
		if res.status != http.StatusOK && res.status != http.StatusCreated {
			return notConfirmed(" instead of 200 or 201")
		}
		if decoded && !bodyIs(in.typ) && !bodyIs("OperationOutcome") {
			return notConfirmed(" instead of a %s", in.typ)
		}
		if bodyIs(in.typ) && in.id != "" && body.ID != in.id {
			return notConfirmed(" instead of %s/%s", in.typ, in.id)
		}
		_, located := locationID(res.header, in.typ)
		if !bodyIs(in.typ) && !located && res.header.Get("ETag") == "" {
			return notConfirmed(" without the resource, a Location or an ETag")
		}
	case in.kind == auth.InteractionDelete:
		if res.status != http.StatusOK && res.status != http.StatusAccepted && res.status != http.StatusNoContent {
			return notConfirmed(" instead of 200, 202 or 204")
		}
		// FHIR: 200 when the answer has a payload, 204 when it has none.
		if res.status == http.StatusOK && !decoded {
			return notConfirmed(" instead of an OperationOutcome (or 204 without a body)")
		}
	case in.kind == auth.InteractionRead || in.kind == auth.InteractionVRead:
		if res.status != http.StatusOK {
			return notConfirmed(" instead of 200")
		}
		if in.typ == "Binary" && !decoded && len(raw) > 0 && !isFHIRMediaType(res.header) {
			return nil // a Binary's own content, as the client's Accept asked
		}
		if !bodyIs(in.typ) || (in.id != "" && body.ID != in.id) {
			if in.id == "" {
				return notConfirmed(" instead of a %s", in.typ)
			}
			return notConfirmed(" instead of %s/%s", in.typ, in.id)
		}
	}
	return nil
}

// statusLine is a Bundle entry's response.status: a status code first.
var statusLine = regexp.MustCompile(`^[1-5][0-9][0-9](\s|$)`)

// describe names the interaction for messages.
func (in interaction) describe() string {
	switch {
	case in.bundle:
		return in.bundleType
	case in.id != "":
		return fmt.Sprintf("%s of %s/%s", in.kind, in.typ, in.id)
	case in.typ != "":
		return fmt.Sprintf("%s of %s", in.kind, in.typ)
	}
	return string(in.kind)
}

// describeAnswer says what the upstream answered, without its content: the
// status, and the kind and size of the body.
func describeAnswer(res *captured, decoded bool, body *answerBody) string {
	n := res.body.Len()
	switch {
	case n == 0:
		return fmt.Sprintf("HTTP %d with an empty body", res.status)
	case decoded && body.ResourceType == "Bundle":
		return fmt.Sprintf("HTTP %d with a Bundle of type %q and %d entries", res.status, body.Type, len(body.Entry))
	case decoded:
		return fmt.Sprintf("HTTP %d with a %s", res.status, body.ResourceType)
	}
	ct, _, _ := mime.ParseMediaType(res.header.Get("Content-Type"))
	if ct == "" {
		ct = "untyped"
	}
	if strings.Contains(ct, "json") {
		return fmt.Sprintf("HTTP %d with %d bytes of %s that are no FHIR resource (cut short?)", res.status, n, ct)
	}
	return fmt.Sprintf("HTTP %d with a %s body of %d bytes", res.status, ct, n)
}

// locationID returns the id of the resource of type typ that the answer's
// Location (or Content-Location) names.
func locationID(h http.Header, typ string) (string, bool) {
	for _, name := range []string{"Location", "Content-Location"} {
		if t, id, _, ok := fhir.ParseLocation(h.Get(name)); ok && t == typ {
			return id, true
		}
	}
	return "", false
}

// isFHIRMediaType reports whether the answer says it is FHIR (JSON or XML).
func isFHIRMediaType(h http.Header) bool {
	ct, _, _ := mime.ParseMediaType(h.Get("Content-Type"))
	return strings.Contains(ct, "json") || strings.Contains(ct, "xml")
}

// bundleAnswerCheck stands before the client on a streamed answer that must
// be a Bundle (search, history): a 200 that does not say it is FHIR (an
// empty 200 from a web server that is not the FHIR server, an HTML page)
// becomes a 502 OperationOutcome, and its body is dropped.
type bundleAnswerCheck struct {
	http.ResponseWriter
	in      interaction
	refused bool
	started bool
}

func (b *bundleAnswerCheck) WriteHeader(status int) {
	if b.started || status < 200 {
		if !b.started {
			b.ResponseWriter.WriteHeader(status)
		}
		return
	}
	b.started = true
	if status == http.StatusNotModified || isFHIRMediaType(b.Header()) {
		b.ResponseWriter.WriteHeader(status)
		return
	}
	b.refused = true
	what := fmt.Sprintf("HTTP %d with a body that does not say what it is", status)
	if ct, _, _ := mime.ParseMediaType(b.Header().Get("Content-Type")); b.Header().Get("Content-Length") == "0" {
		what = fmt.Sprintf("HTTP %d with an empty body", status)
	} else if ct != "" {
		what = fmt.Sprintf("HTTP %d with a %s body", status, ct)
	}
	e := fhir.Errorf(http.StatusBadGateway, fhir.CodeException,
		"the upstream FHIR server did not answer the %s with a Bundle: it answered %s", b.in.describe(), what)
	if status == http.StatusServiceUnavailable || status == http.StatusGatewayTimeout {
		e.Status = status
		if ra := b.Header().Get("Retry-After"); ra != "" {
			e = e.WithHeader("Retry-After", ra)
		}
	}
	h := b.Header()
	for k := range h {
		delete(h, k)
	}
	fhir.WriteError(b.ResponseWriter, e)
}

func (b *bundleAnswerCheck) Write(p []byte) (int, error) {
	if !b.started {
		b.WriteHeader(http.StatusOK)
	}
	if b.refused {
		return len(p), nil
	}
	return b.ResponseWriter.Write(p)
}

// Flush passes through unless the answer was refused.
func (b *bundleAnswerCheck) Flush() {
	if f, ok := b.ResponseWriter.(http.Flusher); ok && !b.refused {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (b *bundleAnswerCheck) Unwrap() http.ResponseWriter { return b.ResponseWriter }

// streamedBundle reports whether in's answer is a Bundle passed on as it
// streams.
func (in interaction) streamedBundle() bool {
	switch in.kind {
	case auth.InteractionSearch, auth.InteractionHistoryType, auth.InteractionHistoryInstance:
		return true
	}
	return false
}
