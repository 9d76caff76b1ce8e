package dopu

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/fhir/fhirjson"
)

// acceptedTypes are the media types of a FHIR JSON body; R4 servers also
// see the DSTU2 spelling in the wild.
var acceptedTypes = map[string]bool{
	"application/fhir+json": true,
	"application/json":      true,
	"application/json+fhir": true,
}

// bundleTypes are the Bundle types a drop-off may have: those that carry
// resources for someone. A searchset is accepted too (some vendors send a
// patient summary as the answer of a search): its match and include
// entries are its resources, its outcome entries are dropped. A history
// is not: it holds versions, not a record.
var bundleTypes = map[string]bool{
	"document": true, "collection": true, "transaction": true, "batch": true, "message": true, "searchset": true,
}

// outcomeEntry reports whether an entry of a Bundle of bundleType is a
// search outcome (an OperationOutcome about the search, not data).
func outcomeEntry(bundleType string, search *entrySearch, resourceType string) bool {
	if bundleType != "searchset" {
		return false
	}
	if search != nil && search.Mode != "" {
		return search.Mode == "outcome"
	}
	return resourceType == "OperationOutcome"
}

// entrySearch is Bundle.entry.search.
type entrySearch struct {
	Mode string `json:"mode"`
}

// checkContentType refuses anything but FHIR JSON in UTF-8.
func checkContentType(contentType string) error {
	mediaType, params, err := mime.ParseMediaType(contentType)
	if err != nil || !acceptedTypes[mediaType] {
		return fhir.Errorf(http.StatusUnsupportedMediaType, fhir.CodeNotSupported,
			"a drop-off must be a FHIR JSON Bundle (Content-Type application/fhir+json), not %q", contentType)
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return fhir.Errorf(http.StatusUnsupportedMediaType, fhir.CodeNotSupported,
			"a drop-off must be UTF-8, not charset %q", cs)
	}
	return nil
}

// checkEncoding reports whether the body is gzip; other codings are refused.
func checkEncoding(contentEncoding string) (gzipped bool, err error) {
	switch strings.ToLower(strings.TrimSpace(contentEncoding)) {
	case "", "identity":
		return false, nil
	case "gzip", "x-gzip":
		return true, nil
	}
	return false, fhir.Errorf(http.StatusUnsupportedMediaType, fhir.CodeNotSupported,
		"Content-Encoding %q is not supported; use gzip or none", contentEncoding)
}

func tooLarge(limit int64) error {
	return fhir.Errorf(http.StatusRequestEntityTooLarge, fhir.CodeTooCostly,
		"the Bundle is larger than the limit of %d bytes", limit)
}

// readBody reads the body, inflating gzip, and refuses more than limit
// bytes before or after inflating: reading stops at limit+1 bytes, so a
// gzip bomb never costs more than that. The body is read into a pooled
// buffer (see bodyBuffers): call release when done with it.
func readBody(r io.Reader, gzipped bool, limit int64) (data []byte, release func(), err error) {
	raw := bodyBuffers.get()
	if err := raw.readFrom(r, limit); err != nil {
		raw.put()
		return nil, nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeStructure, "cannot read the body").WithCause(err)
	}
	if int64(len(raw.b)) > limit {
		raw.put()
		return nil, nil, tooLarge(limit)
	}
	if !gzipped {
		return raw.b, raw.put, nil
	}
	defer raw.put()
	zr, err := gzip.NewReader(bytes.NewReader(raw.b))
	if err != nil {
		return nil, nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeStructure, "the body is not valid gzip").WithCause(err)
	}
	inflated := bodyBuffers.get()
	err = inflated.readFrom(zr, limit)
	if int64(len(inflated.b)) > limit {
		inflated.put()
		return nil, nil, tooLarge(limit)
	}
	if err != nil {
		inflated.put()
		return nil, nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeStructure, "the body is not valid gzip").WithCause(err)
	}
	return inflated.b, inflated.put, nil
}

// bodyBuffers are the buffers bodies are read into, reused: a 2 MB body
// read with io.ReadAll costs about 5 MB of allocations (it grows by
// copying) and the garbage collections they bring, which show in the
// latency's tail. Buffers above maxPooledBody are not kept.
var bodyBuffers bufferPool

const maxPooledBody = 8 << 20

type bufferPool struct{ pool sync.Pool }

// buffer is a pooled buffer; b is its contents.
type buffer struct {
	b    []byte
	pool *bufferPool
}

func (p *bufferPool) get() *buffer {
	if b, ok := p.pool.Get().(*buffer); ok {
		return b
	}
	return &buffer{b: make([]byte, 0, 64<<10), pool: p}
}

// put returns b to its pool; b.b must not be used afterwards.
func (b *buffer) put() {
	if cap(b.b) <= maxPooledBody {
		b.b = b.b[:0]
		b.pool.pool.Put(b)
	}
}

// readFrom reads r to its end into b.b (replacing what it held), but at
// most limit+1 bytes, growing b.b as needed.
func (b *buffer) readFrom(r io.Reader, limit int64) error {
	r = io.LimitReader(r, limit+1)
	buf := b.b[:0]
	defer func() { b.b = buf }()
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// rawBundle is a Bundle with its entries still encoded, so that intake
// decodes one resource at a time.
type rawBundle struct {
	ResourceType any             `json:"resourceType"` // any: described when wrong
	Type         any             `json:"type"`
	Identifier   json.RawMessage `json:"identifier"`
	Entry        []rawEntry      `json:"entry"`
}

type rawEntry struct {
	FullURL  string          `json:"fullUrl"`
	Resource json.RawMessage `json:"resource"`
	Request  *entryRequest   `json:"request"`
	Search   *entrySearch    `json:"search"`
	// head is the resource's head when scanned is set (scanBundle read
	// it with the body); otherwise checkEntry reads it from Resource.
	head    resourceHead
	scanned bool
}

type entryRequest struct {
	Method      string `json:"method"`
	URL         string `json:"url"`
	IfNoneExist string `json:"ifNoneExist,omitempty"`
}

// bundleFacts is what intake learns of a valid Bundle.
type bundleFacts struct {
	Type           string
	ResourceCounts map[string]int
	Subject        *PatientSummary
	// AboutNoOne: the Bundle names no patient and holds no resource of a
	// type in the Patient compartment.
	AboutNoOne bool
	// Keys tell a re-sent Bundle (see DropOff).
	BundleIdentifier, IdentifiersDigest string
}

// parseBundle validates data as a drop-off and summarizes it.
func parseBundle(data []byte, limits Limits) (*bundleFacts, error) {
	// What cannot round-trip (invalid UTF-8, lone surrogates, repeated
	// members, numbers no double holds) is refused at the door, as on every
	// write: it would be stored and then fail at pick-up. The same pass
	// bounds the nesting and reads everything intake needs (the Bundle's
	// head and each entry's); entries stay encoded. The full parse is at
	// preview and pick-up.
	var b rawBundle
	notObject, decodeErr, err := scanBundle(data, limits.MaxDepth, &b)
	if err != nil {
		var fe *fhirjson.Error
		if errors.As(err, &fe) && fe.TooDeep && limits.MaxDepth < fhirjson.MaxDepth {
			return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeStructure,
				"the JSON is nested deeper than the limit of %d levels", limits.MaxDepth)
		}
		return nil, fhir.JSONError(err)
	}
	if notObject != "" {
		return nil, fhir.Errorf(http.StatusUnprocessableEntity, fhir.CodeStructure,
			"the body is not a FHIR resource: the top level must not be a JSON %s", notObject)
	}
	if decodeErr != nil && !isTypeError(decodeErr) {
		return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeStructure, "the body is not valid JSON")
	}
	if b.ResourceType != "Bundle" {
		return nil, fhir.Errorf(http.StatusUnprocessableEntity, fhir.CodeInvalid,
			"only a Bundle can be dropped off, not %s", describe(b.ResourceType)).WithExpression("resourceType")
	}
	bundleType, _ := b.Type.(string)
	if !bundleTypes[bundleType] {
		return nil, fhir.Errorf(http.StatusUnprocessableEntity, fhir.CodeInvalid,
			"Bundle.type must be document, collection, transaction, batch, message or searchset, not %s", describe(b.Type)).WithExpression("Bundle.type")
	}
	if decodeErr != nil {
		return nil, fhir.Errorf(http.StatusUnprocessableEntity, fhir.CodeStructure,
			"the Bundle is malformed: %s", decodeProblem(decodeErr))
	}
	if len(b.Entry) == 0 {
		return nil, fhir.Errorf(http.StatusUnprocessableEntity, fhir.CodeRequired,
			"the Bundle has no entries; there is nothing to drop off").WithExpression("Bundle.entry")
	}
	if len(b.Entry) > limits.MaxEntries {
		return nil, fhir.Errorf(http.StatusRequestEntityTooLarge, fhir.CodeTooCostly,
			"the Bundle has %d entries, more than the limit of %d", len(b.Entry), limits.MaxEntries).WithExpression("Bundle.entry")
	}
	facts := &bundleFacts{Type: bundleType, ResourceCounts: map[string]int{}, BundleIdentifier: bundleIdentifier(b.Identifier)}
	heads := make([]entryHead, len(b.Entry))
	patients := map[int]json.RawMessage{}
	kept := 0
	for i, e := range b.Entry {
		head, err := checkEntry(i, e, bundleType)
		if err != nil {
			return nil, err
		}
		if outcomeEntry(bundleType, e.Search, head.Type) {
			continue // not data: its head stays empty and resolves nothing
		}
		kept++
		heads[i] = head
		facts.ResourceCounts[heads[i].Type]++
		if heads[i].Type == "Patient" {
			patients[i] = e.Resource
		}
	}
	if kept == 0 {
		return nil, fhir.Errorf(http.StatusUnprocessableEntity, fhir.CodeRequired,
			"the searchset has only outcome entries; there is nothing to drop off").WithExpression("Bundle.entry")
	}
	subject, outside := newBundleIndex(heads).subject()
	if subject >= 0 {
		facts.Subject = summarizePatientJSON(patients[subject])
	}
	facts.AboutNoOne = subject < 0 && outside == "" && !anyCompartmentType(heads)
	facts.IdentifiersDigest = identifiersDigest(heads)
	return facts, nil
}

// anyCompartmentType reports whether any entry is of a type that can be
// in a Patient compartment.
func anyCompartmentType(heads []entryHead) bool {
	for _, h := range heads {
		if h.Type == "Patient" || fhir.InPatientCompartment(h.Type) {
			return true
		}
	}
	return false
}

// bundleIdentifier returns Bundle.identifier as "system|value", or "".
func bundleIdentifier(raw json.RawMessage) string {
	if len(raw) == 0 || raw[0] != '{' {
		return ""
	}
	id := readIdentifier(raw)
	if id.Value == "" {
		return ""
	}
	return id.System + "|" + id.Value
}

// readIdentifiers reads an identifier (raw valid JSON): a list of them,
// or a single one (Composition, Bundle). Members of another JSON type are
// left empty.
func readIdentifiers(raw []byte) []Identifier {
	var ids []Identifier
	switch {
	case len(raw) > 0 && raw[0] == '[':
		_ = fhirjson.Elements(raw, func(_ int, v []byte) error {
			if v[0] == '{' {
				ids = append(ids, readIdentifier(v))
			}
			return nil
		})
	case len(raw) > 0 && raw[0] == '{':
		ids = []Identifier{readIdentifier(raw)}
	}
	return ids
}

// readIdentifier reads the system and value of an Identifier object.
func readIdentifier(raw []byte) Identifier {
	var id Identifier
	decodeStrings(raw, "identifier", func(error) {}, func(name string) *string {
		switch name {
		case "system":
			return &id.System
		case "value":
			return &id.Value
		}
		return nil
	})
	return id
}

// identifiersDigest is a digest of the set of the entries' identifiers
// ("Type|system|value"), or "" when no entry has one: two Bundles with the
// same resources, however encoded, have the same digest.
func identifiersDigest(heads []entryHead) string {
	var keys []string
	for _, h := range heads {
		for _, id := range h.Identifiers {
			keys = append(keys, h.Type+"|"+id.System+"|"+id.Value)
		}
	}
	if len(keys) == 0 {
		return ""
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	sum := sha256.Sum256([]byte(strings.Join(keys, "\n")))
	return hex.EncodeToString(sum[:])
}

// resourceHead is the part of a resource that intake reads: what an
// entryHead needs. Fields of unexpected JSON types are left empty.
type resourceHead struct {
	ResourceType string          `json:"resourceType"`
	ID           string          `json:"id"`
	Identifier   json.RawMessage `json:"identifier"`
	Subject      *reference      `json:"subject"`
	Patient      *reference      `json:"patient"`
}

// reference is a Reference of which intake reads the reference.
type reference struct {
	Reference string `json:"reference"`
}

// checkEntry validates one entry and returns its head. Every entry must
// carry a resource: a drop-off adds data, it never deletes, reads or
// patches.
func checkEntry(i int, e rawEntry, bundleType string) (entryHead, error) {
	expr := entryExpr(i)
	res := e.head
	var err error
	if !e.scanned {
		err = scanResourceHead(e.Resource, &res)
	}
	if len(e.Resource) == 0 || e.Resource[0] != '{' || err != nil {
		return entryHead{}, fhir.Errorf(http.StatusUnprocessableEntity, fhir.CodeRequired,
			"%s has no resource; every entry of a drop-off must carry one", expr).WithExpression(expr.String() + ".resource")
	}
	if !isTypeName(res.ResourceType) {
		return entryHead{}, fhir.Errorf(http.StatusUnprocessableEntity, fhir.CodeRequired,
			"%s.resource has no valid resourceType", expr).WithExpression(expr.String() + ".resource.resourceType")
	}
	if (bundleType == "transaction" || bundleType == "batch") && e.Request != nil {
		if m := strings.ToUpper(e.Request.Method); m != "POST" && m != "PUT" {
			return entryHead{}, fhir.Errorf(http.StatusUnprocessableEntity, fhir.CodeNotSupported,
				"%s.request.method is %q; a drop-off may only create or update (POST, PUT)", expr, e.Request.Method).WithExpression(expr.String() + ".request.method")
		}
	}
	h := entryHead{FullURL: strings.TrimSpace(e.FullURL), Type: res.ResourceType, ID: res.ID}
	// Most resources have a list of identifiers, some (Composition,
	// Bundle) a single one.
	h.Identifiers = nonEmptyIdentifiers(readIdentifiers(res.Identifier))
	for _, ref := range []*reference{res.Subject, res.Patient} {
		if ref != nil && ref.Reference != "" {
			h.SubjectRefs = append(h.SubjectRefs, ref.Reference)
		}
	}
	return h, nil
}

// scanBundle checks data as every write is checked (fhirjson.CheckVisit:
// UTF-8, repeated members, numbers, syntax, nesting up to maxDepth) and,
// in the same pass, reads into b what intake needs of the Bundle: the top
// level's resourceType, type and identifier, and each entry's fullUrl,
// resource (its bytes and its head), request and search. Nothing else is
// decoded; each byte is read once. Member names match exactly, as FHIR
// spells them. Like encoding/json it goes on after a member of the wrong
// JSON type and returns the first such error (*json.UnmarshalTypeError,
// naming the field) as typeErr; notObject names the JSON kind of a body
// that is not an object. err is the check's refusal.
func scanBundle(data []byte, maxDepth int, b *rawBundle) (notObject string, typeErr, err error) {
	note := func(err error) {
		if typeErr == nil {
			typeErr = err
		}
	}
	var e rawEntry // the entry being read
	err = fhirjson.CheckVisit(data, maxDepth, 4, func(path []fhirjson.Step, start, end int) {
		value := data[start:end]
		if path[0].Index >= 0 {
			return // the top level is an array: refused below
		}
		switch {
		case len(path) == 1:
			readBundleMember(b, path[0].Name, value, note)
		case string(path[0].Name) != "entry" || path[1].Index < 0:
			// Not an entry.
		case len(path) == 2: // an entry, after its members
			if value[0] != '{' && value[0] != 'n' {
				note(&json.UnmarshalTypeError{Value: jsonKind(value[0]), Field: "entry"})
			}
			b.Entry = append(b.Entry, e)
			e = rawEntry{}
		case path[2].Index >= 0:
			// An entry that is an array.
		case len(path) == 3:
			readEntryMember(&e, path[2].Name, value, note)
		case string(path[2].Name) == "resource" && path[3].Index < 0:
			e.scanned = true
			readHeadMember(&e.head, path[3].Name, value)
		}
	})
	if err != nil {
		return "", nil, err
	}
	if i := fhirjson.SkipSpace(data, 0); data[i] != '{' {
		return jsonKind(data[i]), nil, nil
	}
	return "", typeErr, nil
}

// readBundleMember reads a member of the Bundle into b.
func readBundleMember(b *rawBundle, name, value []byte, note func(error)) {
	switch string(name) {
	case "resourceType":
		decodeValue(value, &b.ResourceType, "", note)
	case "type":
		decodeValue(value, &b.Type, "", note)
	case "identifier":
		b.Identifier = json.RawMessage(value)
	case "entry":
		if value[0] != '[' && value[0] != 'n' { // null is no entries
			note(&json.UnmarshalTypeError{Value: jsonKind(value[0]), Field: "entry"})
		}
	}
}

// readEntryMember reads a member of a Bundle entry into e.
func readEntryMember(e *rawEntry, name, value []byte, note func(error)) {
	switch string(name) {
	case "fullUrl":
		decodeValue(value, &e.FullURL, "entry.fullUrl", note)
	case "resource":
		e.Resource = json.RawMessage(value)
	case "request":
		decodeValue(value, &e.Request, "entry.request", note)
	case "search":
		decodeValue(value, &e.Search, "entry.search", note)
	}
}

// readHeadMember reads a member of a resource into its head; members of
// an unexpected JSON type leave their field empty.
func readHeadMember(res *resourceHead, name, value []byte) {
	ignore := func(error) {}
	switch string(name) {
	case "resourceType":
		decodeValue(value, &res.ResourceType, "resourceType", ignore)
	case "id":
		decodeValue(value, &res.ID, "id", ignore)
	case "identifier":
		res.Identifier = json.RawMessage(value)
	case "subject":
		decodeValue(value, &res.Subject, "subject", ignore)
	case "patient":
		decodeValue(value, &res.Patient, "patient", ignore)
	}
}

// decodeValue decodes value, one small valid JSON value, into v, noting a
// type error (its field named under field) as json.Unmarshal does.
func decodeValue(value []byte, v any, field string, note func(error)) {
	if sp, ok := v.(*string); ok && value[0] == '"' && bytes.IndexByte(value, '\\') < 0 {
		*sp = string(value[1 : len(value)-1]) // a plain string: nothing to decode
		return
	}
	if rp, ok := v.(**entryRequest); ok && value[0] == '{' {
		*rp = new(entryRequest)
		decodeStrings(value, field, note, func(name string) *string {
			switch name {
			case "method":
				return &(*rp).Method
			case "url":
				return &(*rp).URL
			case "ifNoneExist":
				return &(*rp).IfNoneExist
			}
			return nil
		})
		return
	}
	if sp, ok := v.(**entrySearch); ok && value[0] == '{' {
		*sp = new(entrySearch)
		decodeStrings(value, field, note, func(name string) *string {
			if name == "mode" {
				return &(*sp).Mode
			}
			return nil
		})
		return
	}
	if rp, ok := v.(**reference); ok && value[0] == '{' {
		// subject and patient: only their reference is read.
		*rp = new(reference)
		_ = fhirjson.Members(value, func(name, member []byte) error {
			if string(memberName(name)) == "reference" {
				decodeValue(member, &(*rp).Reference, field+".reference", note)
			}
			return nil
		})
		return
	}
	if err := json.Unmarshal(value, v); err != nil {
		var te *json.UnmarshalTypeError
		if !errors.As(err, &te) {
			note(err)
			return
		}
		if field != "" {
			if te.Field != "" {
				te.Field = field + "." + te.Field
			} else {
				te.Field = field
			}
		}
		note(te)
	}
}

// decodeStrings decodes the object value (valid JSON) into the string
// fields that fieldOf names (nil for members it does not read), as
// json.Unmarshal into a struct would, but matching names exactly, as the
// rest of intake and pick-up do: null leaves a field as it is, another
// JSON type is noted as a type error under field.
func decodeStrings(value []byte, field string, note func(error), fieldOf func(name string) *string) {
	_ = fhirjson.Members(value, func(name, member []byte) error {
		name = memberName(name)
		sp := fieldOf(string(name))
		if sp != nil && member[0] != 'n' {
			decodeValue(member, sp, field+"."+string(name), note)
		}
		return nil
	})
}

// scanResourceHead reads res from the resource raw without decoding the
// rest of it. The error is a syntax error or "not an object".
func scanResourceHead(raw []byte, res *resourceHead) error {
	if len(raw) == 0 || raw[0] != '{' {
		return errors.New("not an object")
	}
	return fhirjson.Members(raw, func(name, value []byte) error {
		readHeadMember(res, memberName(name), value)
		return nil
	})
}

// memberName decodes a member name as fhirjson.Members gives it (quoted,
// escapes and all).
func memberName(quoted []byte) []byte {
	if bytes.IndexByte(quoted, '\\') < 0 {
		return quoted[1 : len(quoted)-1]
	}
	var s string
	_ = json.Unmarshal(quoted, &s)
	return []byte(s)
}

// jsonKind names the JSON kind of a value by its first byte, as
// json.UnmarshalTypeError.Value does.
func jsonKind(c byte) string {
	switch c {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "bool"
	case 'n':
		return "null"
	}
	return "number"
}

// entryExpr is the FHIRPath of entry i, for refusals.
type entryExpr int

func (i entryExpr) String() string { return "Bundle.entry[" + strconv.Itoa(int(i)) + "]" }

func isTypeError(err error) bool {
	var typeErr *json.UnmarshalTypeError
	return errors.As(err, &typeErr)
}

func nonEmptyIdentifiers(ids []Identifier) []Identifier {
	var out []Identifier
	for _, id := range ids {
		if id.Value != "" {
			out = append(out, id)
		}
	}
	return out
}

// describe names a JSON value for a diagnostic without echoing much of it.
func describe(v any) string {
	switch v := v.(type) {
	case nil:
		return "nothing"
	case string:
		if len(v) > 64 {
			v = v[:64] + "…"
		}
		return fmt.Sprintf("%q", v)
	default:
		return fmt.Sprintf("a JSON %T", v)
	}
}

// decodeProblem explains a decoding error without quoting the body.
func decodeProblem(err error) string {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		field := typeErr.Field
		if field == "" {
			field = "the top level"
		}
		return fmt.Sprintf("%s must not be a JSON %s", field, typeErr.Value)
	}
	return "invalid structure"
}
