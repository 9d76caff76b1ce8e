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
	Type  string `json:"type"`
	Entry []struct {
		FullURL  string         `json:"fullUrl"`
		Resource map[string]any `json:"resource"`
		Request  *entryRequest  `json:"request"`
		Search   *entrySearch   `json:"search"`
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
	imp, left, total, err := prepareBundle(body, id, pfrPatient, pfrPatientID, opts)
	if err != nil {
		return imp, "", "", err
	}
	if left > 0 {
		return imp, StatusPickedUpPartially, fmt.Sprintf("%d of the %d entries were not imported: they are about another person than the record's", left, total), nil
	}
	return imp, StatusPickedUp, "", nil
}

func prepareBundle(body []byte, dropOffID string, pfrPatient map[string]any, pfrPatientID string, opts PrepareOptions) (*Import, int, int, error) {
	if !fhir.IsID(pfrPatientID) {
		return nil, 0, 0, fmt.Errorf("dopu: preparing pick-up: invalid Patient id %q", pfrPatientID)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber() // decimals must survive to the last digit
	var b decodedBundle
	if err := dec.Decode(&b); err != nil {
		return nil, 0, 0, fmt.Errorf("dopu: decoding drop-off %s: %w", dropOffID, err)
	}
	pr := &preparer{
		b: &b, pfrPatientID: pfrPatientID, patientRef: "Patient/" + pfrPatientID,
		heads: make([]entryHead, len(b.Entry)), outcome: make([]bool, len(b.Entry)),
		ours: map[int]bool{}, excluded: map[int]bool{}, existing: map[int]string{},
		finder: newFinder(opts.Search), imp: &Import{Report: Report{Imported: map[string]int{}}},
		logical: map[[2]string]*LogicalReference{},
	}
	for i, e := range b.Entry {
		typ, _ := e.Resource["resourceType"].(string)
		if e.Resource == nil || outcomeEntry(b.Type, e.Search, typ) {
			pr.outcome[i] = true
			continue
		}
		pr.heads[i] = headOf(e.FullURL, e.Resource)
	}
	pr.ix = newBundleIndex(pr.heads)
	pr.subject, pr.outside = pr.ix.subject()

	record := SummarizePatient(pfrPatient)
	var sender *PatientSummary
	if pr.subject >= 0 {
		sender = SummarizePatient(b.Entry[pr.subject].Resource)
	}
	imp := pr.imp
	aboutNoOne := pr.subject < 0 && pr.outside == "" && !anyCompartmentType(pr.heads)
	imp.Match = matchSubject(sender, record, aboutNoOne)
	if pr.outside != "" {
		imp.Match.Reasons = append([]string{fmt.Sprintf("the Bundle's patient %s is not included in it", pr.outside)}, imp.Match.Reasons...)
	}
	if !imp.Match.Accepted && !opts.Force {
		return imp, 0, 0, mismatchError(imp.Match)
	}
	if pr.subject >= 0 {
		imp.SenderIdentifiers = senderIdentifiers(b.Entry[pr.subject].Resource)
		pr.ours[pr.subject] = true
		imp.Report.SenderPatient = fmt.Sprintf("Bundle.entry[%d] merged into %s (its identifiers kept)", pr.subject, pr.patientRef)
	}
	for i, h := range pr.heads {
		if h.Type == "Patient" && i != pr.subject && ScoreMatch(SummarizePatient(b.Entry[i].Resource), record).Accepted {
			pr.ours[i] = true
		}
	}

	pr.ask()
	if err := pr.finder.run(); err != nil {
		return nil, 0, 0, fmt.Errorf("dopu: looking for drop-off %s's resources in the record: %w", dropOffID, err)
	}
	imp.Report.Warnings = append(imp.Report.Warnings, pr.finder.warnings...)
	pr.people()
	if len(imp.Report.OtherPatients) > 0 && opts.OtherPatients == OtherPatientsRefuse {
		return imp, 0, 0, fhir.Errorf(http.StatusConflict, fhir.CodeBusinessRule,
			"the drop-off holds %d other people besides this record's person; nothing was imported (pick it up with otherPatients skip to import only what is about this record's person, or reject it)",
			len(imp.Report.OtherPatients))
	}
	pr.inRecord()
	entries := pr.rewrite(dropOffID)

	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	err := enc.Encode(map[string]any{"resourceType": "Bundle", "type": "transaction", "entry": entries})
	if err != nil {
		return nil, 0, 0, fmt.Errorf("dopu: encoding the import of %s: %w", dropOffID, err)
	}
	imp.Transaction = bytes.TrimSpace(buf.Bytes())
	imp.Entries = len(entries)

	left := 0
	for _, sk := range imp.Report.Skipped {
		if sk.Reason == SkipAnotherPerson || sk.Reason == SkipOtherPatient {
			left++
		}
	}
	return imp, left, len(b.Entry), nil
}

// preparer holds the state of one Prepare.
type preparer struct {
	b            *decodedBundle
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
	content      map[int]string  // content digests
	identifying  map[string]bool // "Type|system|value" unique in the Bundle
	finder       *finder
	imp          *Import
	logical      map[[2]string]*LogicalReference
	resolved     map[string]string
}

// entryQueries are the questions about entry i: its ifNoneExist, its
// identifiers and its content.
func (pr *preparer) entryQueries(i int) (ifNoneExist *query, ids []query, content query) {
	e := pr.b.Entry[i]
	typ := pr.heads[i].Type
	if crit := conditionalCreate(pr.b.Type, e.Request); crit != "" {
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
	return ifNoneExist, ids, query{typ: typ, kind: queryTag, value: ContentTagSystem + "|" + pr.content[i]}
}

// ask collects every question for the record: conditional references
// that no entry answers, and what tells an entry already imported.
func (pr *preparer) ask() {
	pr.content = map[int]string{}
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
	for i, e := range pr.b.Entry {
		if pr.outcome[i] {
			continue
		}
		fhir.EachReference(e.Resource, func(_ map[string]any, ref string) {
			if _, kind, _ := pr.ix.resolve(ref, i); kind == refConditional {
				if typ, params, ok := fhir.ParseConditionalReference(ref); ok {
					pr.finder.want(criteriaQuery(typ, params))
				}
			}
		})
		if pr.heads[i].Type == "Patient" {
			continue
		}
		pr.content[i] = contentDigest(e.Resource)
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
			o.Patient = SummarizePatient(pr.b.Entry[entry].Resource)
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

// rewrite builds the transaction's entries.
func (pr *preparer) rewrite(dropOffID string) []transactionEntry {
	fullURLs := make([]string, len(pr.b.Entry))
	for i, h := range pr.heads {
		if !pr.outcome[i] && !pr.excluded[i] && h.Type != "Patient" && pr.existing[i] == "" {
			fullURLs[i] = newURN()
		}
	}
	pr.resolved = map[string]string{}
	var entries []transactionEntry
	for i, e := range pr.b.Entry {
		if fullURLs[i] == "" {
			continue
		}
		fhir.EachReference(e.Resource, func(obj map[string]any, ref string) {
			pr.reference(obj, ref, i, fullURLs)
		})
		prepareResource(e.Resource, dropOffID, pr.content[i])
		entries = append(entries, transactionEntry{
			FullURL:  fullURLs[i],
			Resource: e.Resource,
			Request:  entryRequest{Method: http.MethodPost, URL: pr.heads[i].Type},
		})
		pr.imp.Sources = append(pr.imp.Sources, i)
		pr.imp.Report.Imported[pr.heads[i].Type]++
	}
	rep := &pr.imp.Report
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
	return entries
}

// reference rewrites one Reference object of entry from.
func (pr *preparer) reference(obj map[string]any, ref string, from int, fullURLs []string) {
	ref = strings.TrimSpace(ref)
	if ref == "" || strings.HasPrefix(ref, "#") {
		return
	}
	if isPatient, ours, _, _ := pr.patientTarget(ref, from); isPatient {
		if ours {
			obj["reference"] = pr.patientRef
		} else {
			pr.makeLogical(obj, ref, from, "Patient", nil, "another person than the record's")
		}
		return
	}
	target, kind, _ := pr.ix.resolve(ref, from)
	switch kind {
	case refLocal:
		switch {
		case pr.existing[target] != "":
			obj["reference"] = pr.existing[target]
		case fullURLs[target] != "":
			obj["reference"] = fullURLs[target]
		default:
			pr.makeLogical(obj, ref, from, pr.heads[target].Type, nil, "the entry it points at is about another person and was not imported")
		}
	case refConditional:
		typ, params, ok := fhir.ParseConditionalReference(ref)
		if !ok {
			pr.makeLogical(obj, ref, from, "", nil, "a conditional reference that cannot be searched")
			return
		}
		ids := pr.finder.ids(criteriaQuery(typ, params))
		switch len(ids) {
		case 1:
			obj["reference"] = typ + "/" + ids[0]
			pr.resolved[ref] = typ + "/" + ids[0]
		case 0:
			pr.makeLogical(obj, ref, from, typ, fhir.IdentifierFromQuery(params), "no resource of the record matches it")
		default:
			pr.makeLogical(obj, ref, from, typ, fhir.IdentifierFromQuery(params), fmt.Sprintf("%d resources of the record match it", len(ids)))
			pr.imp.Report.Warnings = append(pr.imp.Report.Warnings,
				fmt.Sprintf("the conditional reference %q matches %d resources of the record; it was kept as a logical reference", ref, len(ids)))
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
		pr.makeLogical(obj, ref, from, typ, identifier, "the resource it points at is not in the drop-off")
	}
}

// makeLogical turns obj into a logical reference and reports it.
func (pr *preparer) makeLogical(obj map[string]any, ref string, from int, typ string, identifier map[string]any, why string) {
	fhir.MakeLogical(obj, typ, identifier, describeRef(ref))
	key := [2]string{ref, why}
	if l, ok := pr.logical[key]; ok {
		l.Count++
		return
	}
	pr.logical[key] = &LogicalReference{Reference: ref, Why: why, Entry: from, Count: 1}
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
