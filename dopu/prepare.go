package dopu

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/fhir/fhirjson"
)

// TagSystem is the meta.tag system of every resource a pick-up imports;
// the code is the drop-off's id.
const TagSystem = "urn:pfr:dopu"

// ContentTagSystem is the meta.tag system of the digest of an imported
// resource's content as the sender wrote it (without id and meta): a
// later pick-up of the same content finds it with _tag and skips it.
const ContentTagSystem = "urn:pfr:dopu:content"

// OtherPatients says what a pick-up does with a drop-off that holds
// Patients other than the record's person (a baby, a relative).
type OtherPatients string

const (
	// OtherPatientsSkip (the default) imports what belongs to the
	// record's person and leaves the other people out.
	OtherPatientsSkip OtherPatients = "skip"
	// OtherPatientsRefuse imports nothing when the drop-off holds other
	// people: Prepare answers 409 and the drop-off stays pending.
	OtherPatientsRefuse OtherPatients = "refuse"
)

// PrepareOptions tune a pick-up.
type PrepareOptions struct {
	// Force imports even when the patient does not match.
	Force bool
	// OtherPatients: see the type. Empty means OtherPatientsSkip.
	OtherPatients OtherPatients
	// Search finds resources in the record (see the type). Nil means the
	// record holds nothing that could match.
	Search Search
}

// Import is a drop-off turned into one FHIR transaction for the record.
type Import struct {
	// Transaction is a transaction Bundle (JSON) to run against the
	// record's FHIR base. Nil when the pick-up was refused.
	Transaction []byte
	// Entries is the number of entries in Transaction.
	Entries int
	// Sources gives, for each entry of Transaction, the index of the
	// drop-off's entry it writes.
	Sources []int
	// Match is the sender's patient scored against the record's Patient.
	Match Match
	// SenderIdentifiers are the sender's Patient.identifier elements, as
	// JSON values, for the caller to add to the record's Patient.
	SenderIdentifiers []any
	// Report says what the pick-up imports, skips and rewrites.
	Report Report
}

// Report is the pick-up report: what was imported per type, what was
// skipped and why, which references became logical.
type Report struct {
	// Imported counts the resources written, by type.
	Imported map[string]int `json:"imported"`
	// Created says where each entry written went (filled in by the caller
	// that ran the transaction).
	Created []CreatedEntry `json:"created,omitempty"`
	// SenderPatient says what became of the sender's Patient entry.
	SenderPatient string `json:"senderPatient,omitempty"`
	// Skipped lists the entries not written.
	Skipped []SkippedEntry `json:"skipped,omitempty"`
	// Resolved lists the conditional references that matched one
	// resource of the record.
	Resolved []ResolvedReference `json:"resolved,omitempty"`
	// Logical lists the references that became logical (or display only).
	Logical []LogicalReference `json:"logical,omitempty"`
	// OtherPatients lists the people in the drop-off other than the
	// record's person.
	OtherPatients []OtherPatient `json:"otherPatients,omitempty"`
	// Warnings are things the person may want to look at.
	Warnings []string `json:"warnings,omitempty"`
}

// SkipReason says why an entry was not written.
type SkipReason string

// The reasons an entry is skipped.
const (
	// SkipInRecord: the record already holds it (ifNoneExist matched, or
	// a resource of the same type with one of its identifiers, or the
	// same content); references to it point at the record's resource.
	SkipInRecord SkipReason = "already-in-record"
	// SkipRecordPatient: a further Patient entry that matches the
	// record's person; merged like the sender's Patient.
	SkipRecordPatient SkipReason = "record-patient"
	// SkipOtherPatient: a Patient entry of another person.
	SkipOtherPatient SkipReason = "other-patient"
	// SkipAnotherPerson: a resource about another person.
	SkipAnotherPerson SkipReason = "another-person"
	// SkipSearchOutcome: an outcome entry of a searchset.
	SkipSearchOutcome SkipReason = "search-outcome"
)

// CreatedEntry is an entry of the drop-off and the record's resource it
// became.
type CreatedEntry struct {
	Entry    int    `json:"entry"`
	Resource string `json:"resource"` // "Type/id"
}

// SkippedEntry is an entry the pick-up does not write.
type SkippedEntry struct {
	Entry  int        `json:"entry"` // index in Bundle.entry
	Type   string     `json:"type"`
	Reason SkipReason `json:"reason"`
	Detail string     `json:"detail"`
	// Existing is the record's resource it stands for ("Type/id").
	Existing string `json:"existing,omitempty"`
}

// ResolvedReference is a conditional reference and the record's resource
// it became.
type ResolvedReference struct {
	Reference string `json:"reference"`
	Target    string `json:"target"`
}

// LogicalReference is a reference the pick-up turned into a logical one
// (Reference.identifier, display kept) or a display only.
type LogicalReference struct {
	Reference string `json:"reference"`
	Why       string `json:"why"`
	// Entry is the first entry where it was found; Count how often.
	Entry int `json:"entry"`
	Count int `json:"count"`
}

// OtherPatient is a person in the drop-off other than the record's.
type OtherPatient struct {
	// Entry is the Patient's entry, -1 when the Bundle only references it.
	Entry     int             `json:"entry"`
	Reference string          `json:"reference,omitempty"`
	Patient   *PatientSummary `json:"patient,omitempty"`
	// Entries counts the entries about this person that were left out.
	Entries int `json:"entries"`
}

// decodedBundle is a Bundle decoded for rewriting.
type decodedBundle struct {
	Type  string        `json:"type"`
	Entry []bundleEntry `json:"entry"`
}

// bundleEntry is a Bundle entry as a pick-up reads it.
type bundleEntry struct {
	FullURL  string         `json:"fullUrl"`
	Resource map[string]any `json:"resource"`
	Request  *entryRequest  `json:"request"`
	Search   *entrySearch   `json:"search"`
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
// *fhir.Error listing the reasons (errors.Is ErrMismatch), unless
// opts.Force. A drop-off that names no patient and holds nothing of a
// Patient-compartment type (an organization directory) needs no match.
//
// Entries are known by fullUrl, whatever their ids look like (an id
// longer than 64 characters included): every entry written gets a new
// urn:uuid fullUrl and the record's own id.
//
// People: every further Patient entry that matches the record's person
// is merged like the sender's Patient; the other Patients (a baby, a
// relative), and a Patient only referenced that is not the record's, are
// other people. Their Patient entries and every entry whose subject or
// patient is one of them are left out (listed in Report.OtherPatients and
// Report.Skipped); with opts.OtherPatients refuse, Prepare imports
// nothing and answers 409. A reference to another person from an entry
// that is imported keeps only its display.
//
// What the record already holds (found with opts.Search, inside the
// record only) is not written again: an entry whose ifNoneExist (or
// conditional PUT criteria) match, or that has an identifier (with a
// system) of a resource of its type in the record, or whose content (as
// the sender wrote it, without id and meta) was imported before (the
// ContentTagSystem tag). References to it point at the record's resource.
//
// References:
//   - to the sender's Patient (its fullUrl, "urn:uuid:…", "Patient/<id>",
//     "http://…/Patient/<id>", or a conditional "Patient?identifier=…"
//     matching it) become "Patient/<pfrPatientID>"; when the subject is a
//     Patient outside the Bundle, references to that Patient do;
//   - to an entry (by fullUrl, or Type/id following the Bundle
//     resolution rules) become that entry's new fullUrl;
//   - a conditional reference "Type?criteria" that matches no single
//     entry is searched in the record: one match becomes "Type/<id>";
//     none becomes a logical reference (Reference.identifier from
//     identifier=system|value, display kept); several also, with a
//     warning;
//   - a reference to a resource not in the Bundle ("Type/id", an absolute
//     URL, a URN) would dangle or point at something else in the record:
//     it becomes a logical reference (an absolute one as an identifier of
//     system urn:ietf:rfc:3986).
//
// Each resource loses its id, meta.versionId, meta.lastUpdated and any
// meta.tag of TagSystem or ContentTagSystem the sender wrote, and gets
// {TagSystem, <drop-off id>} and {ContentTagSystem, <digest>}. Every entry
// is a POST of its type. Values, numbers included, are kept as sent.
//
// The rules are NewPlan's and Plan.Rewrite's: an import too large for one
// transaction applies the same ones chunk by chunk.
func (p *Pickup) Prepare(pfrPatient map[string]any, pfrPatientID string, opts PrepareOptions) (*Import, error) {
	imp, status, reason, err := PrepareBundle(p.body, p.dropOff.ID, pfrPatient, pfrPatientID, opts)
	if err == nil {
		p.status, p.reason = status, reason
	}
	return imp, err
}

// PrepareBundle is Prepare for any Bundle, a drop-off's or an import's:
// id names it in the tags of what it writes (TagSystem). It also returns
// the status a pick-up of it ends in and why.
func PrepareBundle(body []byte, id string, pfrPatient map[string]any, pfrPatientID string, opts PrepareOptions) (*Import, Status, string, error) {
	if !fhir.IsID(pfrPatientID) {
		return nil, "", "", fmt.Errorf("dopu: preparing pick-up: invalid Patient id %q", pfrPatientID)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber() // decimals must survive to the last digit
	var b decodedBundle
	if err := dec.Decode(&b); err != nil {
		return nil, "", "", fmt.Errorf("dopu: decoding drop-off %s: %w", id, err)
	}
	facts := make([]Facts, len(b.Entry))
	for i, e := range b.Entry {
		facts[i] = Entry{fullURL: e.FullURL, resource: e.Resource, request: e.Request, search: e.Search}.Facts()
	}
	plan, err := NewPlan(b.Type, facts, id, pfrPatient, pfrPatientID, opts)
	if err != nil {
		if plan != nil {
			return plan.Import(), "", "", err
		}
		return nil, "", "", err
	}
	fullURLs := make([]string, len(b.Entry))
	for i := range b.Entry {
		if plan.Writes(i) {
			fullURLs[i] = newURN()
		}
	}
	imp := plan.Import()
	var entries []transactionEntry
	for i, e := range b.Entry {
		if fullURLs[i] == "" {
			continue
		}
		plan.Rewrite(i, e.Resource, func(j int) string { return fullURLs[j] })
		entries = append(entries, transactionEntry{
			FullURL:  fullURLs[i],
			Resource: e.Resource,
			Request:  entryRequest{Method: http.MethodPost, URL: plan.Type(i)},
		})
		imp.Sources = append(imp.Sources, i)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	err = enc.Encode(map[string]any{"resourceType": "Bundle", "type": "transaction", "entry": entries})
	if err != nil {
		return nil, "", "", fmt.Errorf("dopu: encoding the import of %s: %w", id, err)
	}
	imp.Transaction = bytes.TrimSpace(buf.Bytes())
	imp.Entries = len(entries)
	status, reason := plan.Status()
	return imp, status, reason, nil
}

// Entry is one entry of what a pick-up or an import reads: a Bundle
// entry, or a resource on its own (a line of NDJSON).
type Entry struct {
	fullURL  string
	resource map[string]any
	request  *entryRequest
	search   *entrySearch
}

// DecodeEntry reads one entry through the strict JSON door (fhirjson:
// values byte for byte, numbers as json.Number): a Bundle entry (fullUrl,
// resource, request, search), or, with resourceOnly, a resource. A
// refusal is a *fhirjson.Error.
func DecodeEntry(raw []byte, resourceOnly bool) (Entry, error) {
	m, err := fhirjson.DecodeObject(raw)
	if err != nil {
		return Entry{}, err
	}
	if resourceOnly {
		return Entry{resource: m}, nil
	}
	e := Entry{}
	e.fullURL, _ = m["fullUrl"].(string)
	e.resource, _ = m["resource"].(map[string]any)
	if r, ok := m["request"].(map[string]any); ok {
		e.request = &entryRequest{}
		e.request.Method, _ = r["method"].(string)
		e.request.URL, _ = r["url"].(string)
		e.request.IfNoneExist, _ = r["ifNoneExist"].(string)
	}
	if s, ok := m["search"].(map[string]any); ok {
		e.search = &entrySearch{}
		e.search.Mode, _ = s["mode"].(string)
	}
	return e, nil
}

// Resource is the entry's resource (nil when it has none).
func (e Entry) Resource() map[string]any { return e.resource }

// Facts is what planning a pick-up keeps of one entry: who and what it
// is, the references it holds and the digest of its content; not the
// resource itself, so that the plan of a large import holds ids and
// references only.
type Facts struct {
	head    entryHead
	empty   bool // the entry has no resource
	search  *entrySearch
	request *entryRequest
	// refs are the resource's references, as written, one per
	// occurrence (contained "#…" ones left out).
	refs    []string
	content string // contentDigest, but of Patients
	// A Patient's summary and its identifiers for the record's Patient.
	patient   *PatientSummary
	senderIDs []any
}

// Facts reads what NewPlan needs of the entry. (A Patient's identifier
// assigners lose their Bundle-local references: a Patient is never
// written, it is merged into the record's or left out.)
func (e Entry) Facts() Facts {
	f := Facts{empty: e.resource == nil, search: e.search, request: e.request}
	if e.resource == nil {
		return f
	}
	f.head = headOf(e.fullURL, e.resource)
	fhir.EachReference(e.resource, func(_ map[string]any, ref string) {
		if r := strings.TrimSpace(ref); r != "" && !strings.HasPrefix(r, "#") {
			f.refs = append(f.refs, ref)
		}
	})
	if f.head.Type == "Patient" {
		f.patient = SummarizePatient(e.resource)
		f.senderIDs = senderIdentifiers(e.resource)
	} else {
		f.content = contentDigest(e.resource)
	}
	return f
}

// Type is the entry's resource type ("" without a resource).
func (f Facts) Type() string { return f.head.Type }

// Content is the digest of the entry's content as the sender wrote it: the
// code of the ContentTagSystem tag on what is written of it ("" for a
// Patient).
func (f Facts) Content() string { return f.content }

// NewFullURL returns a new urn:uuid for an entry of a transaction.
func NewFullURL() string { return newURN() }

// Plan is a pick-up decided from the Facts of every entry: who the
// sender's Patient is and whether it matches, which entries are left out
// (other people, what the record already holds) and what each reference
// becomes. Its entries are then written in one transaction (PrepareBundle)
// or, for a large import, in chunks: Rewrite readies one entry at a time.
type Plan struct {
	pr     *preparer
	status Status
	reason string
}

// NewPlan decides the pick-up of the entries facts describes (in Bundle
// order; bundleType is the Bundle's type, "collection" for NDJSON) into
// the record whose Patient is pfrPatient, with id pfrPatientID, by the
// rules of Prepare. id names the pick-up in the tags of what it writes.
// It asks opts.Search what the record holds. On a refusal the error is
// returned with the Plan when its Import says why (its Match).
func NewPlan(bundleType string, facts []Facts, id string, pfrPatient map[string]any, pfrPatientID string, opts PrepareOptions) (*Plan, error) {
	if !fhir.IsID(pfrPatientID) {
		return nil, fmt.Errorf("dopu: preparing pick-up: invalid Patient id %q", pfrPatientID)
	}
	pr := &preparer{
		facts: facts, bundleType: bundleType, id: id, pfrPatientID: pfrPatientID, patientRef: "Patient/" + pfrPatientID,
		heads: make([]entryHead, len(facts)), outcome: make([]bool, len(facts)),
		ours: map[int]bool{}, excluded: map[int]bool{}, existing: map[int]string{},
		finder: newFinder(opts.Search), imp: &Import{Report: Report{Imported: map[string]int{}}},
		logical: map[[2]string]*LogicalReference{}, resolved: map[string]string{},
	}
	plan := &Plan{pr: pr}
	for i, f := range facts {
		if f.empty || outcomeEntry(bundleType, f.search, f.head.Type) {
			pr.outcome[i] = true
			continue
		}
		pr.heads[i] = f.head
	}
	pr.ix = newBundleIndex(pr.heads)
	pr.subject, pr.outside = pr.ix.subject()

	record := SummarizePatient(pfrPatient)
	var sender *PatientSummary
	if pr.subject >= 0 {
		sender = facts[pr.subject].patient
	}
	imp := pr.imp
	aboutNoOne := pr.subject < 0 && pr.outside == "" && !anyCompartmentType(pr.heads)
	imp.Match = matchSubject(sender, record, aboutNoOne)
	if pr.outside != "" {
		imp.Match.Reasons = append([]string{fmt.Sprintf("the Bundle's patient %s is not included in it", pr.outside)}, imp.Match.Reasons...)
	}
	if !imp.Match.Accepted && !opts.Force {
		return plan, mismatchError(imp.Match)
	}
	if pr.subject >= 0 {
		imp.SenderIdentifiers = facts[pr.subject].senderIDs
		pr.ours[pr.subject] = true
		imp.Report.SenderPatient = fmt.Sprintf("Bundle.entry[%d] merged into %s (its identifiers kept)", pr.subject, pr.patientRef)
	}
	for i, h := range pr.heads {
		if h.Type == "Patient" && i != pr.subject && ScoreMatch(facts[i].patient, record).Accepted {
			pr.ours[i] = true
		}
	}

	pr.ask()
	if err := pr.finder.run(); err != nil {
		return nil, fmt.Errorf("dopu: looking for %s's resources in the record: %w", id, err)
	}
	imp.Report.Warnings = append(imp.Report.Warnings, pr.finder.warnings...)
	pr.people()
	if len(imp.Report.OtherPatients) > 0 && opts.OtherPatients == OtherPatientsRefuse {
		return plan, fhir.Errorf(http.StatusConflict, fhir.CodeBusinessRule,
			"the drop-off holds %d other people besides this record's person; nothing was imported (pick it up with otherPatients skip to import only what is about this record's person, or reject it)",
			len(imp.Report.OtherPatients))
	}
	pr.inRecord()
	pr.report()

	left := 0
	for _, sk := range imp.Report.Skipped {
		if sk.Reason == SkipAnotherPerson || sk.Reason == SkipOtherPatient {
			left++
		}
	}
	plan.status = StatusPickedUp
	if left > 0 {
		plan.status = StatusPickedUpPartially
		plan.reason = fmt.Sprintf("%d of the %d entries were not imported: they are about another person than the record's", left, len(facts))
	}
	return plan, nil
}

// Import is what the plan decided: the match, the sender's identifiers
// and the report (the caller fills in Report.Created and, writing one
// transaction, Transaction, Entries and Sources).
func (p *Plan) Import() *Import { return p.pr.imp }

// Status is the status the pick-up ends in, and why.
func (p *Plan) Status() (Status, string) { return p.status, p.reason }

// Len is the number of entries.
func (p *Plan) Len() int { return len(p.pr.facts) }

// Writes reports whether entry i is written (not left out, not already
// in the record, not a Patient).
func (p *Plan) Writes(i int) bool { return p.pr.writes(i) }

// Type is entry i's resource type.
func (p *Plan) Type(i int) string { return p.pr.facts[i].head.Type }

// Content is the digest of entry i's content (its ContentTagSystem code).
func (p *Plan) Content(i int) string { return p.pr.facts[i].content }

// Targets lists the written entries that entry i's references point at:
// they must be written before it, or in the same transaction.
func (p *Plan) Targets(i int) []int {
	var out []int
	for _, ref := range p.pr.facts[i].refs {
		if a := p.pr.decide(ref, i); a.kind == actLocal && !slices.Contains(out, a.entry) {
			out = append(out, a.entry)
		}
	}
	return out
}

// Rewrite readies entry i's resource res (decoded anew, as it came) to be
// written: its references rewritten (target(j) is where written entry j
// is, a fullUrl of the same transaction or "Type/id" of the record), what
// the server assigns removed, the pick-up's tags set.
func (p *Plan) Rewrite(i int, res map[string]any, target func(j int) string) {
	pr := p.pr
	fhir.EachReference(res, func(obj map[string]any, ref string) {
		switch a := pr.decide(ref, i); a.kind {
		case actSet:
			obj["reference"] = a.value
		case actLocal:
			obj["reference"] = target(a.entry)
		case actLogical:
			fhir.MakeLogical(obj, a.typ, a.identifier, describeRef(a.ref))
		}
	})
	prepareResource(res, pr.id, pr.facts[i].content)
}

// preparer holds the state of one plan.
type preparer struct {
	facts        []Facts
	bundleType   string
	id           string
	pfrPatientID string
	patientRef   string
	heads        []entryHead
	ix           *bundleIndex
	subject      int
	outside      string
	outcome      []bool          // searchset outcome entries
	ours         map[int]bool    // Patient entries of the record's person
	excluded     map[int]bool    // entries left out: other people and what is about them
	existing     map[int]string  // entries the record already holds → "Type/id"
	identifying  map[string]bool // "Type|system|value" unique in the Bundle
	finder       *finder
	imp          *Import
	logical      map[[2]string]*LogicalReference
	resolved     map[string]string
}

// writes reports whether entry i is written.
func (pr *preparer) writes(i int) bool {
	return !pr.outcome[i] && !pr.excluded[i] && pr.heads[i].Type != "Patient" && pr.existing[i] == ""
}

// entryQueries are the questions about entry i: its ifNoneExist, its
// identifiers and its content.
func (pr *preparer) entryQueries(i int) (ifNoneExist *query, ids []query, content query) {
	typ := pr.heads[i].Type
	if crit := conditionalCreate(pr.bundleType, pr.facts[i].request); crit != "" {
		if params, err := url.ParseQuery(crit); err == nil && len(params) > 0 {
			q := criteriaQuery(typ, params)
			ifNoneExist = &q
		}
	}
	for _, id := range pr.heads[i].Identifiers {
		if q, ok := identifierQuery(typ, id); ok && pr.identifying[typ+"|"+id.System+"|"+id.Value] {
			ids = append(ids, q)
		}
	}
	return ifNoneExist, ids, query{typ: typ, kind: queryTag, value: ContentTagSystem + "|" + pr.facts[i].content}
}

// ask collects every question for the record: conditional references
// that no entry answers, and what tells an entry already imported.
func (pr *preparer) ask() {
	// An identifier identifies only if no other entry of the type has it
	// (Synthea gives every ExplanationOfBenefit the same claim-group).
	seen := map[string]int{}
	for i, h := range pr.heads {
		if !pr.outcome[i] {
			for _, id := range h.Identifiers {
				seen[h.Type+"|"+id.System+"|"+id.Value]++
			}
		}
	}
	pr.identifying = map[string]bool{}
	for k, n := range seen {
		pr.identifying[k] = n == 1
	}
	for i, f := range pr.facts {
		if pr.outcome[i] {
			continue
		}
		for _, ref := range f.refs {
			if _, kind, _ := pr.ix.resolve(ref, i); kind == refConditional {
				if typ, params, ok := fhir.ParseConditionalReference(ref); ok {
					pr.finder.want(criteriaQuery(typ, params))
				}
			}
		}
		if pr.heads[i].Type == "Patient" {
			continue
		}
		ine, ids, content := pr.entryQueries(i)
		if ine != nil {
			pr.finder.want(*ine)
		}
		for _, q := range ids {
			pr.finder.want(q)
		}
		pr.finder.want(content)
	}
}

// patientTarget says whether ref, in entry from, points at a Patient and
// whether that Patient is the record's person; entry is the Patient's
// entry, or -1.
func (pr *preparer) patientTarget(ref string, from int) (isPatient, ours bool, entry int, canonical string) {
	e, kind, canonical := pr.ix.resolve(ref, from)
	switch kind {
	case refLocal:
		if pr.heads[e].Type != "Patient" {
			return false, false, e, canonical
		}
		return true, pr.ours[e], e, canonical
	case refConditional:
		typ, params, ok := fhir.ParseConditionalReference(ref)
		if !ok || typ != "Patient" {
			return false, false, -1, canonical
		}
		ids := pr.finder.ids(criteriaQuery(typ, params))
		return true, canonical == pr.outside || (len(ids) == 1 && ids[0] == pr.pfrPatientID), -1, canonical
	case refRelative, refExternal:
		if strings.HasPrefix(canonical, patientCanonical) {
			return true, canonical == pr.outside || canonical == pr.patientRef, -1, canonical
		}
	}
	return false, false, -1, canonical
}

// people finds the other people and leaves out what is about them.
func (pr *preparer) people() {
	others := map[string]*OtherPatient{}
	var order []string
	other := func(entry int, canonical string) *OtherPatient {
		key := canonical
		if entry >= 0 {
			key = fmt.Sprintf("entry %d", entry)
		}
		if o, ok := others[key]; ok {
			return o
		}
		o := &OtherPatient{Entry: entry}
		if entry >= 0 {
			o.Patient = pr.facts[entry].patient
		} else {
			o.Reference = canonical
		}
		others[key] = o
		order = append(order, key)
		return o
	}
	rep := &pr.imp.Report
	for i, h := range pr.heads {
		switch {
		case pr.outcome[i]:
			rep.Skipped = append(rep.Skipped, SkippedEntry{Entry: i, Type: "OperationOutcome", Reason: SkipSearchOutcome,
				Detail: "an outcome of the search that produced the searchset, not data"})
		case h.Type == "Patient" && i != pr.subject && pr.ours[i]:
			rep.Skipped = append(rep.Skipped, SkippedEntry{Entry: i, Type: h.Type, Reason: SkipRecordPatient,
				Detail: "this Patient matches the record's person: references to it point at " + pr.patientRef, Existing: pr.patientRef})
		case h.Type == "Patient" && !pr.ours[i]:
			other(i, "")
			pr.excluded[i] = true
			rep.Skipped = append(rep.Skipped, SkippedEntry{Entry: i, Type: h.Type, Reason: SkipOtherPatient,
				Detail: "another person than the record's: not imported"})
		case h.Type != "Patient":
			for _, ref := range h.SubjectRefs {
				isPatient, ours, entry, canonical := pr.patientTarget(ref, i)
				if !isPatient || ours {
					continue
				}
				other(entry, canonical).Entries++
				pr.excluded[i] = true
				rep.Skipped = append(rep.Skipped, SkippedEntry{Entry: i, Type: h.Type, Reason: SkipAnotherPerson,
					Detail: fmt.Sprintf("about %s, another person than the record's: not imported", describeRef(ref))})
				break
			}
		}
	}
	for _, k := range order {
		rep.OtherPatients = append(rep.OtherPatients, *others[k])
	}
}

// inRecord finds the entries the record already holds.
func (pr *preparer) inRecord() {
	rep := &pr.imp.Report
	for i, h := range pr.heads {
		if pr.outcome[i] || pr.excluded[i] || h.Type == "Patient" {
			continue
		}
		ine, ids, content := pr.entryQueries(i)
		var found []string
		why := ""
		if ine != nil {
			if found = pr.finder.ids(*ine); len(found) > 0 {
				why = "its ifNoneExist criteria match"
			}
		}
		for _, q := range ids {
			// An identifier that several resources of the record share
			// identifies none of them.
			if m := pr.finder.ids(q); len(found) == 0 && len(m) == 1 {
				found, why = m, "a resource of the record has its identifier "+q.value
			}
		}
		if len(found) == 0 {
			if found = pr.finder.ids(content); len(found) > 0 {
				why = "the same content was imported before"
			}
		}
		if len(found) == 0 {
			continue
		}
		target := h.Type + "/" + found[0]
		pr.existing[i] = target
		rep.Skipped = append(rep.Skipped, SkippedEntry{Entry: i, Type: h.Type, Reason: SkipInRecord,
			Detail: "already in the record (" + why + ")", Existing: target})
		if len(found) > 1 {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("Bundle.entry[%d] (%s) matches %d resources of the record; references to it point at %s",
				i, h.Type, len(found), target))
		}
	}
}

// report fills in the report of what the entries written become: counts
// by type, conditional references resolved, references made logical.
func (pr *preparer) report() {
	rep := &pr.imp.Report
	for i, f := range pr.facts {
		if !pr.writes(i) {
			continue
		}
		for _, ref := range f.refs {
			switch a := pr.decide(ref, i); {
			case a.kind == actLogical:
				key := [2]string{a.ref, a.why}
				if l, ok := pr.logical[key]; ok {
					l.Count++
				} else {
					pr.logical[key] = &LogicalReference{Reference: a.ref, Why: a.why, Entry: i, Count: 1}
				}
				if a.warning != "" {
					rep.Warnings = append(rep.Warnings, a.warning)
				}
			case a.resolved:
				pr.resolved[a.ref] = a.value
			}
		}
		rep.Imported[pr.heads[i].Type]++
	}
	for ref, target := range pr.resolved {
		rep.Resolved = append(rep.Resolved, ResolvedReference{Reference: ref, Target: target})
	}
	slices.SortFunc(rep.Resolved, func(a, b ResolvedReference) int { return strings.Compare(a.Reference, b.Reference) })
	for _, l := range pr.logical {
		rep.Logical = append(rep.Logical, *l)
	}
	slices.SortFunc(rep.Logical, func(a, b LogicalReference) int {
		if a.Entry != b.Entry {
			return a.Entry - b.Entry
		}
		return strings.Compare(a.Reference, b.Reference)
	})
}

// refActionKind is what becomes of one reference.
type refActionKind int

const (
	actKeep    refActionKind = iota // left as it is (empty, contained)
	actSet                          // becomes value
	actLocal                        // becomes where the written entry goes
	actLogical                      // becomes logical (or a display only)
)

// refAction is what becomes of one reference of an entry written.
type refAction struct {
	kind  refActionKind
	ref   string // the reference, trimmed
	value string // actSet
	entry int    // actLocal
	// actLogical: the type, identifier and why.
	typ        string
	identifier map[string]any
	why        string
	// resolved: a conditional reference that matched one resource of
	// the record; warning: something to tell the person.
	resolved bool
	warning  string
}

// decide says what becomes of reference ref of entry from.
func (pr *preparer) decide(ref string, from int) refAction {
	ref = strings.TrimSpace(ref)
	a := refAction{ref: ref}
	logical := func(typ string, identifier map[string]any, why string) refAction {
		a.kind, a.typ, a.identifier, a.why = actLogical, typ, identifier, why
		return a
	}
	if ref == "" || strings.HasPrefix(ref, "#") {
		return a
	}
	if isPatient, ours, _, _ := pr.patientTarget(ref, from); isPatient {
		if ours {
			a.kind, a.value = actSet, pr.patientRef
			return a
		}
		return logical("Patient", nil, "another person than the record's")
	}
	target, kind, _ := pr.ix.resolve(ref, from)
	switch kind {
	case refLocal:
		switch {
		case pr.existing[target] != "":
			a.kind, a.value = actSet, pr.existing[target]
		case pr.writes(target):
			a.kind, a.entry = actLocal, target
		default:
			return logical(pr.heads[target].Type, nil, "the entry it points at is about another person and was not imported")
		}
	case refConditional:
		typ, params, ok := fhir.ParseConditionalReference(ref)
		if !ok {
			return logical("", nil, "a conditional reference that cannot be searched")
		}
		ids := pr.finder.ids(criteriaQuery(typ, params))
		switch len(ids) {
		case 1:
			a.kind, a.value, a.resolved = actSet, typ+"/"+ids[0], true
		case 0:
			return logical(typ, fhir.IdentifierFromQuery(params), "no resource of the record matches it")
		default:
			a = logical(typ, fhir.IdentifierFromQuery(params), fmt.Sprintf("%d resources of the record match it", len(ids)))
			a.warning = fmt.Sprintf("the conditional reference %q matches %d resources of the record; it was kept as a logical reference", ref, len(ids))
			return a
		}
	case refRelative, refExternal:
		typ, _, _ := strings.Cut(ref, "/")
		abs := ref
		if kind == refRelative {
			if m := absoluteRESTful.FindStringSubmatch(pr.heads[from].FullURL); m != nil {
				abs = m[1] + "/" + ref
			}
		}
		var identifier map[string]any
		if scheme, _, ok := strings.Cut(abs, ":"); ok && isURIScheme(scheme) {
			identifier = map[string]any{"system": fhir.URIIdentifierSystem, "value": abs}
			if m := absoluteRESTful.FindStringSubmatch(historySuffix.ReplaceAllString(abs, "")); m != nil {
				typ = m[2]
			}
		}
		return logical(typ, identifier, "the resource it points at is not in the drop-off")
	}
	return a
}

// isURIScheme reports whether s is a URI scheme (RFC 3986).
func isURIScheme(s string) bool {
	if s == "" || !(s[0] >= 'a' && s[0] <= 'z' || s[0] >= 'A' && s[0] <= 'Z') {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// describeRef quotes a reference for a display or a report, bounded.
func describeRef(ref string) string {
	return truncate(ref, 200)
}

// contentDigest is the digest of a resource's content as the sender wrote
// it: without id and meta, keys sorted, numbers as written.
func contentDigest(res map[string]any) string {
	c := make(map[string]any, len(res))
	for k, v := range res {
		if k != "id" && k != "meta" {
			c[k] = v
		}
	}
	raw, err := json.Marshal(c)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:16])
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

// conditionalCreate returns the criteria under which an entry of a
// transaction or batch is not to be created: its ifNoneExist, or the
// criteria of a conditional PUT ("Type?criteria"; a drop-off creates, it
// never overwrites).
func conditionalCreate(bundleType string, req *entryRequest) string {
	if req == nil || (bundleType != "transaction" && bundleType != "batch") {
		return ""
	}
	switch strings.ToUpper(req.Method) {
	case http.MethodPost:
		return req.IfNoneExist
	case http.MethodPut:
		if _, query, ok := strings.Cut(req.URL, "?"); ok {
			return query
		}
	}
	return ""
}

// prepareResource removes what the server assigns and tags the resource
// with the drop-off it came from.
func prepareResource(res map[string]any, dropOffID, content string) {
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
		if m, ok := tag.(map[string]any); ok && (m["system"] == TagSystem || m["system"] == ContentTagSystem) {
			continue
		}
		tags = append(tags, tag)
	}
	if content != "" {
		tags = append(tags, map[string]any{"system": ContentTagSystem, "code": content})
	}
	tags = append(tags, map[string]any{"system": TagSystem, "code": dropOffID})
	meta["tag"] = tags
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
