package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"go.uber.org/zap"

	"github.com/pfrgateway/caddy-pfr/dopu"
	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/tenancy"
)

// dopuTagSystem tags every resource a pick-up imports, with the drop-off id
// as code (set by dopu.Pickup.Prepare).
const dopuTagSystem = "urn:pfr:dopu"

// RecordPatient reads the record's Patient from the upstream, with its
// version id.
func (g *Gateway) RecordPatient(r *http.Request, up Upstream, rec *tenancy.Record) (map[string]any, string, error) {
	return g.recordPatient(own(r, up, rec, g.RecordBase(r, rec.Slug)))
}

// recordPatient reads the record's Patient, with its version id.
func (g *Gateway) recordPatient(rq *request) (map[string]any, string, error) {
	return g.fetch(rq, "Patient", rq.rec.PatientID)
}

// UndoInterruptedImport takes out of the record what a pick-up of dropID
// imported before it died unmarked (found by the drop-off's tag), so that a
// rejected drop-off leaves nothing behind. It holds the pick-up lease while
// it works, and removes everything in one transaction.
func (g *Gateway) UndoInterruptedImport(r *http.Request, up Upstream, rec *tenancy.Record, dropID string) error {
	p, err := g.cfg.DOPU.BeginPickup(r.Context(), rec.ID, dropID)
	if err != nil {
		return dopu.HTTPError(err)
	}
	defer p.Abort()
	rq := own(r, up, rec, g.RecordBase(r, rec.Slug))
	tag := url.Values{"_tag": {dopuTagSystem + "|" + dropID}}
	var entries []any
	for typ := range p.Summary().ResourceCounts {
		if !fhir.IsResourceType(typ) || typ == "Patient" {
			continue
		}
		// Only the record's own: never a delete of another record's resource.
		found, _, err := g.searchRecord(rq, typ, tag, maxCountPages)
		if err != nil {
			return err
		}
		for _, res := range found {
			if id, _ := res["id"].(string); fhir.IsID(id) {
				entries = append(entries, map[string]any{"request": map[string]any{"method": "DELETE", "url": typ + "/" + id}})
			}
		}
	}
	if len(entries) == 0 {
		return nil
	}
	body, err := json.Marshal(map[string]any{"resourceType": "Bundle", "type": "transaction", "entry": entries})
	if err != nil {
		return fhir.Errorf(http.StatusInternalServerError, fhir.CodeException, "encoding the removal").WithCause(err)
	}
	req, _, err := g.upstreamRequest(rq, http.MethodPost, "", body)
	if err != nil {
		return err
	}
	out, err := call(rq.up, req)
	if err != nil {
		return upstreamError(err)
	}
	if out.status != http.StatusOK {
		return &fhir.Error{Status: http.StatusBadGateway, Issues: outcomeIssues(out.body.Bytes(),
			"the record's FHIR server could not remove an interrupted import; the drop-off stays pending")}
	}
	if ferr := verifyAnswer(ownTransaction(len(entries)), req, out); ferr != nil {
		return ferr
	}
	g.log.Info("removed the import of an interrupted pick-up before rejecting", zap.String("record", rec.ID),
		zap.String("dropoff", dropID), zap.Int("resources", len(entries)))
	return nil
}

// PickupResult is the answer to a pick-up: the pick-up report.
type PickupResult struct {
	DropOff string `json:"dropoff"`
	// Status is picked-up, or picked-up-partially with Reason (what the
	// sender sees too).
	Status   string      `json:"status"`
	Reason   string      `json:"reason,omitempty"`
	Imported int         `json:"imported"`
	Match    dopu.Match  `json:"match"`
	Report   dopu.Report `json:"report"`
	// Resumed is set when an earlier attempt had already written the data
	// (it crashed before marking the drop-off picked up).
	Resumed bool `json:"resumed,omitempty"`
}

// PickUp imports a drop-off into the record: the sender's Patient becomes
// the record's, the rest is written as one transaction that passes the
// ownership check, and only then is the drop-off marked picked up. A
// failure anywhere leaves the drop-off pending and the record unchanged.
func (g *Gateway) PickUp(r *http.Request, up Upstream, rec *tenancy.Record, dropID string, opts dopu.PrepareOptions) (*PickupResult, error) {
	ctx := r.Context()
	p, err := g.cfg.DOPU.BeginPickup(ctx, rec.ID, dropID)
	if err != nil {
		return nil, dopu.HTTPError(err)
	}
	defer p.Abort()
	rq := own(r, up, rec, g.RecordBase(r, rec.Slug))
	patient, version, err := g.recordPatient(rq)
	if err != nil {
		return nil, err
	}
	opts.Search = g.recordSearch(rq)
	imp, err := p.Prepare(patient, rec.PatientID, opts)
	if err != nil {
		return nil, dopu.HTTPError(err)
	}
	status, reason := p.Outcome()
	res := &PickupResult{DropOff: dropID, Status: string(status), Reason: reason, Imported: imp.Entries, Match: imp.Match, Report: imp.Report}

	// Numbers stay json.Number: a lab value of 0.40 is written as 0.40.
	tx, err := fhir.DecodeResource(imp.Transaction)
	if err != nil {
		return nil, fhir.Errorf(http.StatusInternalServerError, fhir.CodeException, "the prepared import is unreadable").WithCause(err)
	}
	done, err := g.alreadyImported(rq, dropID, p.Summary().ResourceCounts)
	if err != nil {
		return nil, err
	}
	if !done {
		addIdentifiersEntry(tx, patient, rec.PatientID, version, imp.SenderIdentifiers)
		stampBundle(g.iso, tx, rec.ID)
		if err := fhir.OwnershipError(rq.owner().CheckBundle(tx, g.cfg.Ownership)); err != nil {
			return nil, err
		}
		locations, err := g.runImport(rq, tx)
		if err != nil {
			return nil, err
		}
		for k, loc := range locations {
			if k < len(imp.Sources) && loc != "" {
				res.Report.Created = append(res.Report.Created, dopu.CreatedEntry{Entry: imp.Sources[k], Resource: loc})
			}
		}
	} else {
		// What Prepare found "already in the record" is that earlier
		// import: the report says so instead.
		res.Resumed, res.Imported = true, 0
		res.Report = dopu.Report{Imported: map[string]int{}, SenderPatient: imp.Report.SenderPatient, OtherPatients: imp.Report.OtherPatients,
			Warnings: []string{"an earlier pick-up of this drop-off had written it before it was interrupted; it is now marked picked up, nothing was written again"}}
	}
	if err := p.Commit(ctx); err != nil {
		return nil, dopu.HTTPError(err)
	}
	return res, nil
}

// runImport runs a prepared import upstream, unless it has nothing to
// write (everything was already in the record), and returns where each
// entry went ("Type/id", in entry order; "" where the answer says none).
func (g *Gateway) runImport(rq *request, tx map[string]any) ([]string, error) {
	if entries, _ := tx["entry"].([]any); len(entries) == 0 {
		return nil, nil
	}
	body, err := json.Marshal(tx)
	if err != nil {
		return nil, fhir.Errorf(http.StatusInternalServerError, fhir.CodeException, "encoding the import").WithCause(err)
	}
	req, route, err := g.upstreamRequest(rq, http.MethodPost, "", body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Prefer", "return=minimal")
	out, err := call(rq.up, req)
	if err != nil {
		return nil, upstreamError(err)
	}
	if out.status != http.StatusOK {
		return nil, &fhir.Error{Status: http.StatusUnprocessableEntity,
			Issues: outcomeIssues(out.body.Bytes(), fmt.Sprintf("the record's FHIR server refused the import (HTTP %d)", out.status))}
	}
	sent, _ := tx["entry"].([]any)
	if ferr := verifyAnswer(ownTransaction(len(sent)), req, out); ferr != nil {
		return nil, ferr // the drop-off stays pending: nothing is reported as imported
	}
	var answer struct {
		Entry []struct {
			Response struct {
				Location string `json:"location"`
			} `json:"response"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(out.body.Bytes(), &answer); err != nil {
		// Written: the transaction succeeded; only the report is poorer.
		g.log.Warn("unreadable transaction answer after a pick-up", zap.String("record", rq.rec.ID), zap.Error(err))
		return nil, nil
	}
	locations := make([]string, len(answer.Entry))
	for i, e := range answer.Entry {
		loc := e.Response.Location
		if rest, ok := restBelow(loc, route.UpstreamBases); ok {
			loc = strings.TrimPrefix(rest, "/")
		}
		loc, _, _ = strings.Cut(loc, "/_history/")
		if typ, id, _, ok := fhir.ParseReference(loc); ok {
			locations[i] = typ + "/" + id
		}
	}
	return locations, nil
}

// recordSearch is a dopu.Search on the record: the search runs in the
// record's partition and its answer is filtered like any read of the
// record, so that an upstream that ignores partitions matches nothing of
// another record.
func (g *Gateway) recordSearch(rq *request) dopu.Search {
	return func(typ string, params url.Values) ([]map[string]any, error) {
		if !fhir.IsResourceType(typ) {
			return nil, nil
		}
		found, _, err := g.searchRecord(rq, typ, params, maxCountPages)
		return found, err
	}
}

// alreadyImported reports whether an earlier pick-up of this drop-off
// wrote its transaction and then died before marking it: the upstream
// transaction is atomic, so one resource carrying the drop-off's tag
// proves all of it is there. It looks in each type the drop-off holds.
func (g *Gateway) alreadyImported(rq *request, dropID string, counts map[string]int) (bool, error) {
	types := make([]string, 0, len(counts))
	for typ := range counts {
		if typ != "Patient" && fhir.IsResourceType(typ) {
			types = append(types, typ)
		}
	}
	slices.Sort(types)
	// Only the record's own resources count: an upstream that does not keep
	// partitions apart would count a resource another record's member
	// tagged with this drop-off's id, and the pick-up would import nothing.
	tag := url.Values{"_tag": {dopuTagSystem + "|" + dropID}}
	for _, typ := range types {
		found, _, err := g.searchRecord(rq, typ, tag, 1)
		if err != nil {
			return false, err
		}
		if len(found) > 0 {
			return true, nil
		}
	}
	return false, nil
}

// addIdentifiersEntry adds to tx the update of the record's Patient that
// keeps the sender's identifiers for it, in the same transaction, guarded
// by the version read (If-Match).
func addIdentifiersEntry(tx, patient map[string]any, patientID, version string, senderIDs []any) {
	existing, _ := patient["identifier"].([]any)
	seen := map[string]bool{}
	key := func(v any) string {
		m, _ := v.(map[string]any)
		sys, _ := m["system"].(string)
		val, _ := m["value"].(string)
		return sys + "|" + val
	}
	for _, e := range existing {
		seen[key(e)] = true
	}
	added := false
	for _, s := range senderIDs {
		if k := key(s); k != "|" && !seen[k] {
			seen[k] = true
			existing = append(existing, s)
			added = true
		}
	}
	if !added {
		return
	}
	updated := make(map[string]any, len(patient))
	for k, v := range patient {
		if k != "meta" {
			updated[k] = v
		}
	}
	updated["identifier"] = existing
	request := map[string]any{"method": "PUT", "url": "Patient/" + patientID}
	if version != "" {
		request["ifMatch"] = `W/"` + version + `"`
	}
	entries, _ := tx["entry"].([]any)
	tx["entry"] = append(entries, map[string]any{
		"fullUrl": "Patient/" + patientID, "resource": updated, "request": request,
	})
}
