package dopu

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/pfrgateway/caddy-pfr/fhir"
)

// TagSystem is the meta.tag system of every resource a pick-up imports;
// the code is the drop-off's id.
const TagSystem = "urn:pfr:dopu"

// Import is a drop-off turned into one FHIR transaction for the record.
type Import struct {
	// Transaction is a transaction Bundle (JSON) to run against the
	// record's FHIR base. Nil when the match was refused.
	Transaction []byte
	// Entries is the number of entries in Transaction.
	Entries int
	// Match is the sender's patient scored against the record's Patient.
	Match Match
	// SenderIdentifiers are the sender's Patient.identifier elements, as
	// JSON values, for the caller to add to the record's Patient.
	SenderIdentifiers []any
	// Unresolved lists references that the Bundle does not resolve: kept
	// as they are, for the upstream server to resolve or refuse.
	Unresolved []string
}

// decodedBundle is a Bundle decoded for rewriting.
type decodedBundle struct {
	Type  string `json:"type"`
	Entry []struct {
		FullURL  string         `json:"fullUrl"`
		Resource map[string]any `json:"resource"`
		Request  *entryRequest  `json:"request"`
	} `json:"entry"`
}

type transactionEntry struct {
	FullURL  string         `json:"fullUrl"`
	Resource map[string]any `json:"resource"`
	Request  entryRequest   `json:"request"`
}

// Prepare turns the drop-off into a transaction for the record whose
// Patient is pfrPatient, with id pfrPatientID.
//
// The sender's patient is the Bundle's subject Patient: in a document,
// the one the Composition's subject references; otherwise the one most
// entries' subject or patient references; otherwise the only or first
// Patient entry. It is scored against pfrPatient with ScoreMatch; below
// the threshold Prepare returns an Import with only Match set and a 422
// *fhir.Error listing the reasons (errors.Is ErrMismatch), unless force.
//
// Then:
//   - the sender's Patient entry is dropped, its identifiers returned in
//     SenderIdentifiers (without assigner references that are not
//     absolute URLs: they would not resolve outside the Bundle);
//   - every reference to it (its fullUrl, "urn:uuid:…", "Patient/<id>",
//     "http://…/Patient/<id>", or a conditional "Patient?identifier=…"
//     matching it) becomes "Patient/<pfrPatientID>"; when the subject is a
//     Patient outside the Bundle, references to that Patient do;
//   - every other entry becomes a POST of its resourceType; a urn:uuid
//     fullUrl is kept, any other fullUrl (or none) is replaced by a new
//     urn:uuid and every reference that resolves to the entry (by fullUrl
//     or Type/id, following the Bundle resolution rules) points to it;
//   - a transaction or batch entry keeps its ifNoneExist, and a
//     conditional PUT "Type?query" becomes a POST with ifNoneExist
//     "query": a drop-off creates, it never overwrites;
//   - resource ids, meta.versionId and meta.lastUpdated are removed (the
//     server assigns them), and so are meta.tag entries of TagSystem the
//     sender wrote; meta.tag gets {TagSystem, <drop-off id>};
//   - conditional references that match no single entry, and relative
//     references to resources not in the Bundle, are kept and reported in
//     Unresolved.
func (p *Pickup) Prepare(pfrPatient map[string]any, pfrPatientID string, force bool) (*Import, error) {
	if !relativeRESTful.MatchString("Patient/" + pfrPatientID) {
		return nil, fmt.Errorf("dopu: preparing pick-up: invalid Patient id %q", pfrPatientID)
	}
	dec := json.NewDecoder(bytes.NewReader(p.body))
	dec.UseNumber() // decimals must survive to the last digit
	var b decodedBundle
	if err := dec.Decode(&b); err != nil {
		return nil, fmt.Errorf("dopu: decoding drop-off %s: %w", p.dropOff.ID, err)
	}
	heads := make([]entryHead, len(b.Entry))
	for i, e := range b.Entry {
		heads[i] = headOf(e.FullURL, e.Resource)
	}
	ix := newBundleIndex(heads)
	subject, outside := ix.subject()

	imp := &Import{}
	var sender *PatientSummary
	if subject >= 0 {
		sender = SummarizePatient(b.Entry[subject].Resource)
	}
	imp.Match = ScoreMatch(sender, SummarizePatient(pfrPatient))
	if outside != "" {
		imp.Match.Reasons = append([]string{fmt.Sprintf("the Bundle's patient %s is not included in it", outside)}, imp.Match.Reasons...)
	}
	if !imp.Match.Accepted && !force {
		return imp, mismatchError(imp.Match)
	}
	if subject >= 0 {
		imp.SenderIdentifiers = senderIdentifiers(b.Entry[subject].Resource)
	}

	// Every entry kept gets a urn:uuid fullUrl that references can use.
	fullURLs := make([]string, len(b.Entry))
	for i, e := range b.Entry {
		if i == subject {
			continue
		}
		if u := strings.TrimSpace(e.FullURL); strings.HasPrefix(u, "urn:uuid:") {
			fullURLs[i] = u
		} else {
			fullURLs[i] = newURN()
		}
	}

	patientRef := "Patient/" + pfrPatientID
	unresolved := map[string]bool{}
	var entries []transactionEntry
	for i, e := range b.Entry {
		if i == subject {
			continue
		}
		where := fmt.Sprintf("Bundle.entry[%d] (%s)", i, heads[i].Type)
		rewriteReferences(e.Resource, func(ref string) string {
			target, kind, canonical := ix.resolve(ref, i)
			switch {
			case kind == refLocal && target == subject:
				return patientRef
			case kind == refLocal:
				return fullURLs[target]
			case outside != "" && canonical == outside:
				return patientRef
			case kind == refConditional:
				unresolved[fmt.Sprintf("%s: conditional reference %q matches no single entry; left for the server to resolve", where, ref)] = true
			case kind == refRelative:
				unresolved[fmt.Sprintf("%s: reference %q is not in the Bundle", where, ref)] = true
			}
			return ref
		})
		prepareResource(e.Resource, p.dropOff.ID)
		entries = append(entries, transactionEntry{
			FullURL:  fullURLs[i],
			Resource: e.Resource,
			Request:  importRequest(heads[i].Type, b.Type, e.Request),
		})
	}
	for msg := range unresolved {
		imp.Unresolved = append(imp.Unresolved, msg)
	}
	slices.Sort(imp.Unresolved)

	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	err := enc.Encode(map[string]any{"resourceType": "Bundle", "type": "transaction", "entry": entries})
	if err != nil {
		return nil, fmt.Errorf("dopu: encoding the import of %s: %w", p.dropOff.ID, err)
	}
	imp.Transaction = bytes.TrimSpace(buf.Bytes())
	imp.Entries = len(entries)
	return imp, nil
}

// senderIdentifiers returns the Patient's identifiers for the record's
// Patient. An assigner reference only means something inside the Bundle
// (or on the sender's server) unless it is absolute, so other ones are
// removed, keeping the assigner's display and identifier.
func senderIdentifiers(patient map[string]any) []any {
	ids, _ := patient["identifier"].([]any)
	var out []any
	for _, v := range ids {
		id, ok := v.(map[string]any)
		if !ok {
			continue
		}
		if assigner, ok := id["assigner"].(map[string]any); ok {
			if ref, _ := assigner["reference"].(string); ref != "" && !strings.HasPrefix(ref, "http://") && !strings.HasPrefix(ref, "https://") {
				delete(assigner, "reference")
				if len(assigner) == 0 {
					delete(id, "assigner")
				}
			}
		}
		out = append(out, id)
	}
	return out
}

// mismatchError is the 422 of a refused match, one issue per reason.
func mismatchError(m Match) error {
	fe := fhir.Errorf(http.StatusUnprocessableEntity, fhir.CodeBusinessRule,
		"the drop-off's patient does not match this record's Patient (score %.2f, threshold %.2f); pick it up with force to import it anyway",
		m.Score, m.Threshold)
	for _, r := range m.Reasons {
		fe.Issues = append(fe.Issues, fhir.Issue{Severity: fhir.SeverityInformation, Code: fhir.CodeBusinessRule, Diagnostics: r})
	}
	return fe.WithCause(ErrMismatch)
}

// importRequest is the transaction request that creates an entry.
func importRequest(resourceType, bundleType string, req *entryRequest) entryRequest {
	out := entryRequest{Method: http.MethodPost, URL: resourceType}
	if req == nil || (bundleType != "transaction" && bundleType != "batch") {
		return out
	}
	switch strings.ToUpper(req.Method) {
	case http.MethodPost:
		out.IfNoneExist = req.IfNoneExist
	case http.MethodPut:
		if _, query, ok := strings.Cut(req.URL, "?"); ok {
			out.IfNoneExist = query
		}
	}
	return out
}

// rewriteReferences replaces every Reference.reference in v, at any depth
// (contained resources and extensions included), with rewrite's answer.
func rewriteReferences(v any, rewrite func(string) string) {
	switch v := v.(type) {
	case map[string]any:
		for k, child := range v {
			if s, ok := child.(string); ok && k == "reference" {
				v[k] = rewrite(s)
				continue
			}
			rewriteReferences(child, rewrite)
		}
	case []any:
		for _, child := range v {
			rewriteReferences(child, rewrite)
		}
	}
}

// prepareResource removes what the server assigns and tags the resource
// with the drop-off it came from.
func prepareResource(res map[string]any, dropOffID string) {
	delete(res, "id")
	meta, ok := res["meta"].(map[string]any)
	if !ok {
		meta = map[string]any{}
	}
	delete(meta, "versionId")
	delete(meta, "lastUpdated")
	// A sender's own urn:pfr:dopu tags go: they could make a retried
	// pick-up believe another drop-off was already imported.
	var tags []any
	old, _ := meta["tag"].([]any)
	for _, tag := range old {
		if m, ok := tag.(map[string]any); ok && m["system"] == TagSystem {
			continue
		}
		tags = append(tags, tag)
	}
	meta["tag"] = append(tags, map[string]any{"system": TagSystem, "code": dropOffID})
	res["meta"] = meta
}

// newURN returns a random (version 4) UUID as a URN.
func newURN() string {
	var b [16]byte
	copy(b[:], mustRandom(16))
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("urn:uuid:%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
