package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/http/httpguts"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/bulk"
	"github.com/pfrgateway/caddy-pfr/dopu"
	"github.com/pfrgateway/caddy-pfr/egress"
	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/internal/durable"
	"github.com/pfrgateway/caddy-pfr/tenancy"
)

// Import formats of bulk.Job.Format.
const (
	importNDJSON   = "ndjson"
	importBundle   = "bundle"
	importManifest = "manifest"
)

// DefaultMaxImportBytes bounds an import's upload (BulkConfig.MaxImportBytes).
const DefaultMaxImportBytes = 512 << 20

// importCallTimeout bounds the import's own calls upstream: its one
// transaction may hold thousands of entries.
const importCallTimeout = 15 * time.Minute

// importTag is the code of the dopu.TagSystem tag on what an import job
// writes: it finds an import an interrupted run had written.
func importTag(jobID string) string { return "import-" + jobID }

// ImportResult is an import job's result: what a pick-up reports.
type ImportResult struct {
	// Status is picked-up, or picked-up-partially with Reason (entries
	// about other people were left out).
	Status   string      `json:"status"`
	Reason   string      `json:"reason,omitempty"`
	Imported int         `json:"imported"`
	Match    dopu.Match  `json:"match"`
	Report   dopu.Report `json:"report"`
	// Transactions is how many transactions (chunks) wrote it.
	Transactions int `json:"transactions"`
	// Resumed is set when an earlier run of the job had written part or
	// all of it before it was interrupted.
	Resumed bool `json:"resumed,omitempty"`
}

// StartImport answers POST /pfr/v1/records/{slug}/import by id, for the
// record that resolve returns (the management API's check that id is one
// of its owners or managers): the upload (an NDJSON stream, NDJSON files
// in a multipart form, a Bundle, or a Bulk Data manifest URL to fetch) is
// stored with the job before the 202.
func (g *Gateway) StartImport(w http.ResponseWriter, r *http.Request, id *auth.Identity, resolve func() (*tenancy.Record, error)) error {
	if g.bulk == nil {
		return fhir.Errorf(http.StatusNotImplemented, fhir.CodeNotSupported, "imports are not enabled on this gateway")
	}
	rec, err := resolve()
	if err != nil {
		return err
	}
	force := r.URL.Query().Get("force") == "true"
	limit := g.cfg.Bulk.MaxImportBytes
	if limit <= 0 {
		limit = DefaultMaxImportBytes
	}
	mt, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var format string
	var input io.Reader
	switch mt {
	case "application/fhir+ndjson", "application/ndjson", "application/x-ndjson":
		format, input = importNDJSON, r.Body
	case "multipart/form-data":
		format, input = importNDJSON, ndjsonParts(multipart.NewReader(r.Body, params["boundary"]))
	case "application/fhir+json", "application/json":
		// A Bundle, or {"manifest": url, "token": …}: told apart by the
		// job, which reads the stored body. A small body naming a
		// manifest has its URL checked against the destination policy
		// now, so that a refused one gets its 422 at once.
		head, err := io.ReadAll(io.LimitReader(r.Body, manifestRequestMax+1))
		if err != nil {
			return fhir.Errorf(http.StatusBadRequest, fhir.CodeStructure, "the upload could not be read: %v", err)
		}
		if len(head) <= manifestRequestMax {
			var mr manifestRequest
			if json.Unmarshal(head, &mr) == nil && mr.Manifest != "" {
				if err := g.importPolicy().Check(r.Context(), mr.Manifest); err != nil {
					return fhir.Errorf(http.StatusUnprocessableEntity, fhir.CodeBusinessRule, "manifest url refused: %v", err)
				}
				if _, err := mr.credentials(); err != nil {
					return err
				}
			}
		}
		format, input = importBundle, io.MultiReader(bytes.NewReader(head), r.Body)
	default:
		return fhir.Errorf(http.StatusUnsupportedMediaType, fhir.CodeNotSupported,
			"send application/fhir+ndjson, NDJSON files as multipart/form-data, a Bundle as application/fhir+json, or {\"manifest\": url} as application/json")
	}
	base := g.RecordBase(r, rec.Slug)
	job, err := g.bulk.SubmitImport(&bulk.Job{
		RecordID: rec.ID, Slug: rec.Slug, Base: base, Issuer: id.Issuer, Subject: id.Subject,
		Request: g.apexOrigin(r) + r.URL.RequestURI(), Format: format, Force: force,
	}, input, limit)
	switch {
	case errors.Is(err, bulk.ErrInputTooLarge):
		return fhir.Errorf(http.StatusRequestEntityTooLarge, fhir.CodeTooLong, "the import is larger than %d bytes", limit)
	case err != nil:
		var fe *fhir.Error
		if errors.As(err, &fe) {
			return fe
		}
		return fhir.Errorf(http.StatusServiceUnavailable, fhir.CodeTransient, "the import could not be stored").WithCause(err)
	}
	g.AuditAction(r, rec, id, http.StatusAccepted, "C", "import", "", "import job "+job.ID)
	g.log.Info("import started", zap.String("record", rec.ID), zap.String("job", job.ID), zap.String("format", format))
	w.Header().Set("Content-Location", g.apexOrigin(r)+APIPrefix+"records/"+rec.Slug+"/import/"+job.ID)
	fhir.WriteJSON(w, http.StatusAccepted, fhir.NewOutcome(fhir.SeverityInformation, fhir.CodeInformational,
		"import started; poll the Content-Location URL for its progress and result"))
	return nil
}

// ndjsonParts concatenates the file parts of a multipart form, each ended
// by a newline.
func ndjsonParts(mr *multipart.Reader) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		for {
			part, err := mr.NextPart()
			if err == io.EOF {
				pw.Close()
				return
			}
			if err != nil {
				pw.CloseWithError(fhir.Errorf(http.StatusBadRequest, fhir.CodeStructure, "malformed multipart body: %v", err))
				return
			}
			if _, err := io.Copy(pw, part); err != nil {
				pw.CloseWithError(err)
				return
			}
			if _, err := pw.Write([]byte("\n")); err != nil {
				return
			}
		}
	}()
	return pr
}

// ImportStatus answers GET /pfr/v1/records/{slug}/import/{job} by id, for
// the record that resolve returns: 202 with X-Progress while it runs, 200
// with the result, or the failure.
func (g *Gateway) ImportStatus(w http.ResponseWriter, r *http.Request, id *auth.Identity, resolve func() (*tenancy.Record, error), jobID string) error {
	if g.bulk == nil {
		return noSuchExport()
	}
	rec, err := resolve()
	if err != nil {
		return err
	}
	job, p, err := g.ownJob(rec, id, jobID)
	if err == nil && job.Kind != bulk.KindImport {
		err = noSuchExport()
	}
	if err != nil {
		return err
	}
	switch job.Status {
	case bulk.StatusInProgress:
		progress := "queued"
		if p.Phase != "" {
			progress = p.Phase
		}
		w.Header().Set("X-Progress", progress)
		w.Header().Set("Retry-After", "2")
		WriteJSON(w, http.StatusAccepted, map[string]any{"job": job.ID, "status": job.Status, "progress": progress})
	case bulk.StatusFailed:
		f := job.Failure
		if job.ImportLeft {
			return fhir.Errorf(f.Status, f.Code, "the import failed: %s", f.Diagnostics)
		}
		return fhir.Errorf(f.Status, f.Code, "the import failed, nothing of it was written: %s", f.Diagnostics)
	default:
		WriteJSON(w, http.StatusOK, map[string]any{"job": job.ID, "status": job.Status, "result": job.Result})
	}
	return nil
}

// importer writes import jobs through the same rules as a pick-up
// (dopu.NewPlan and Plan.Rewrite, the ownership check), in transactions
// of at most BulkConfig.ImportChunk resources.
type importer struct{ g *Gateway }

// Import runs one import job. The input is read once, entry by entry,
// keeping only ids and references (dopu.Facts); the pick-up is decided
// from them (the Patient matched and merged, other people and what the
// record already holds left out); then the entries are written in chunks,
// each one transaction that passes the ownership check, in an order where
// every entry's references point at the same chunk or an earlier one
// (reference cycles stay in one chunk), read again from the input a chunk
// at a time. A small import is one chunk: one transaction.
//
// The job records each chunk before it is written (ImportPending) and
// where its entries went once it committed (a kept file per chunk): an
// interrupted run is resumed after the last committed chunk, references
// into it rewritten from that record; a chunk whose commit was not
// recorded is found by its content tags. A failed import takes out what
// its chunks wrote (latest first, then anything left with the job's tag),
// so that the record is as it was.
func (im importer) Import(ctx context.Context, job *bulk.Job, run *bulk.ImportRun) (json.RawMessage, error) {
	g := im.g
	if g.cfg.Bulk.Context != nil {
		ctx = g.cfg.Bulk.Context(ctx)
	}
	parent, err := http.NewRequestWithContext(ctx, http.MethodPost, job.Base, nil)
	if err != nil {
		return nil, err
	}
	id := &auth.Identity{Issuer: job.Issuer, Subject: job.Subject}
	rec, role, err := g.recordAndRole(parent, job.Slug, id)
	if fhir.AsError(err).Status == http.StatusNotFound || err == nil && (rec.ID != job.RecordID || !role.CanWrite()) {
		return nil, fhir.Errorf(http.StatusForbidden, fhir.CodeForbidden, "the importer no longer owns or manages the record")
	}
	if err != nil {
		return nil, err
	}
	rq := own(parent, guardedUpstream{up: g.cfg.Bulk.Upstream, callTimeout: max(g.cfg.CallTimeout, importCallTimeout)}, rec, job.Base)
	w := &importRun{g: g, rq: rq, job: job, run: run, tag: importTag(job.ID), size: g.cfg.Bulk.ImportChunk}
	if w.size <= 0 {
		w.size = DefaultImportChunk
	}
	res, err := w.importAll(ctx)
	if err != nil && ctx.Err() == nil && (job.ImportChunks > 0 || len(job.ImportPending) > 0 || job.ImportUndo != nil) {
		err = w.undo(err)
	}
	if err != nil {
		return nil, err
	}
	g.AuditAction(parent, rec, id, http.StatusOK, "C", "import", "", fmt.Sprintf("import job %s: %d resources", job.ID, res.Imported))
	g.log.Info("import done", zap.String("record", rec.ID), zap.String("job", job.ID), zap.Int("imported", res.Imported),
		zap.Int("chunks", job.ImportChunks), zap.Bool("resumed", res.Resumed))
	return json.Marshal(res)
}

// importRun is one run of an import job.
type importRun struct {
	g    *Gateway
	rq   *request
	job  *bulk.Job
	run  *bulk.ImportRun
	tag  string
	size int
	src  *importSource
}

func (w *importRun) progress(format string, args ...any) {
	w.run.Progress(bulk.Progress{Phase: fmt.Sprintf(format, args...)})
}

// importAll runs the import to its end (see importer.Import).
func (w *importRun) importAll(ctx context.Context) (*ImportResult, error) {
	g, job := w.g, w.job
	w.progress("reading the input")
	path, ndjson, err := w.input(ctx)
	if err != nil {
		return nil, err
	}
	if w.src, err = scanImport(path, ndjson); err != nil {
		return nil, err
	}
	if job.ImportUndo != nil {
		return nil, errors.New("an interrupted undo") // undo goes on
	}
	done, _, err := loadChunks(job, w.run)
	if err != nil {
		return nil, err
	}
	resumed := len(done) > 0
	if len(job.ImportPending) > 0 {
		// The run before was interrupted while it wrote this chunk.
		found, err := g.findWritten(w.rq, w.src, w.tag, job.ImportPending, done)
		if err != nil {
			return nil, err
		}
		if len(found) > 0 {
			if err := w.committed(job.ImportPending, found, done); err != nil {
				return nil, err
			}
			resumed = true
		} else {
			job.ImportPending = nil
			if err := w.run.Save(); err != nil {
				return nil, err
			}
		}
	}
	patient, _, err := g.recordPatient(w.rq)
	if err != nil {
		return nil, err
	}
	w.progress("matching the Patient and looking for what the record already holds")
	plan, err := dopu.NewPlan(w.src.bundleType, w.src.facts, w.tag, patient, w.rq.rec.PatientID,
		dopu.PrepareOptions{Force: job.Force, Search: notTagged(g.recordSearch(w.rq), w.tag)})
	if err != nil {
		var fe *fhir.Error
		if errors.As(err, &fe) {
			return nil, fe
		}
		return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeStructure, "the import cannot be read: %v", err)
	}
	var todo []int
	total := 0
	for i := range plan.Len() {
		if plan.Writes(i) {
			total++
			if _, ok := done[i]; !ok {
				todo = append(todo, i)
			}
		}
	}
	chunks := importChunks(plan.Len(), todo, plan.Targets, w.size)
	if len(chunks) == 0 && len(done) == 0 {
		chunks = [][]int{nil} // nothing to write but, maybe, the Patient's identifiers
	}
	f, err := os.Open(w.src.path)
	if err != nil {
		return nil, fmt.Errorf("import input: %w", err)
	}
	defer f.Close()
	for k, chunk := range chunks {
		w.progress("writing %d resources in %d transactions: %d written, writing %d more", total, job.ImportChunks+len(chunks)-k, len(done), len(chunk))
		job.ImportPending = chunk
		if err := w.run.Save(); err != nil {
			return nil, err
		}
		locations, err := w.writeChunk(plan, f, chunk, done, k == len(chunks)-1)
		if err != nil {
			return nil, err
		}
		if locations == nil && len(chunk) > 0 {
			// Written, but the answer did not say where: the content
			// tags do.
			if locations, err = g.findWritten(w.rq, w.src, w.tag, chunk, done); err != nil {
				return nil, err
			}
		}
		if err := w.committed(chunk, locations, done); err != nil {
			return nil, err
		}
	}
	status, reason := plan.Status()
	imp := plan.Import()
	res := &ImportResult{Status: string(status), Reason: reason, Imported: total, Match: imp.Match, Report: imp.Report,
		Transactions: job.ImportChunks, Resumed: resumed}
	for i, loc := range done {
		res.Report.Created = append(res.Report.Created, dopu.CreatedEntry{Entry: i, Resource: loc})
	}
	slices.SortFunc(res.Report.Created, func(a, b dopu.CreatedEntry) int { return a.Entry - b.Entry })
	if resumed {
		res.Report.Warnings = append(res.Report.Warnings,
			"an earlier run of this import was interrupted after it had written part of it; this run went on from there, nothing was written twice")
	}
	return res, nil
}

// committed records a chunk that committed: where its entries went (the
// kept file of the chunk), then the job.
func (w *importRun) committed(chunk []int, locations map[int]string, done map[int]string) error {
	c := chunkRecord{Entries: chunk, Locations: make([]string, len(chunk))}
	for k, i := range chunk {
		loc := locations[i]
		if loc == "" {
			return fhir.Errorf(http.StatusBadGateway, fhir.CodeException,
				"the record's FHIR server wrote a part of the import without saying where entry %d went", i)
		}
		c.Locations[k] = loc
		done[i] = loc
	}
	data, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if err := w.run.Keep(bulk.ImportChunkFile(w.job.ImportChunks), data); err != nil {
		return err
	}
	w.job.ImportChunks++
	w.job.ImportPending = nil
	return w.run.Save()
}

// writeChunk writes the entries of one chunk in one transaction, read
// again from the input and rewritten by the plan: references into the
// chunk become its fullUrls, references into earlier chunks the resources
// they wrote. The last chunk also keeps the sender's identifiers on the
// record's Patient (read again now, for its version). It returns where
// each entry went, nil when the answer does not say.
func (w *importRun) writeChunk(plan *dopu.Plan, f *os.File, chunk []int, done map[int]string, last bool) (map[int]string, error) {
	g, rq := w.g, w.rq
	urns := make(map[int]string, len(chunk))
	for _, i := range chunk {
		urns[i] = dopu.NewFullURL()
	}
	target := func(j int) string {
		if u, ok := urns[j]; ok {
			return u
		}
		return done[j]
	}
	entries := make([]any, 0, len(chunk)+1)
	for _, i := range chunk {
		e, err := w.src.entry(f, i)
		if err != nil {
			return nil, err
		}
		res := e.Resource()
		plan.Rewrite(i, res, target)
		// Another record's stamp (an export from an untrusted upstream)
		// means nothing here: it goes, and this record's is set when
		// the upstream is not trusted.
		unstamp(res)
		entries = append(entries, map[string]any{"fullUrl": urns[i], "resource": res,
			"request": map[string]any{"method": http.MethodPost, "url": plan.Type(i)}})
	}
	tx := map[string]any{"resourceType": "Bundle", "type": "transaction", "entry": entries}
	if last {
		patient, version, err := g.recordPatient(rq)
		if err != nil {
			return nil, err
		}
		addIdentifiersEntry(tx, patient, rq.rec.PatientID, version, plan.Import().SenderIdentifiers)
	}
	stampBundle(g.iso, tx, rq.rec.ID)
	if err := fhir.OwnershipError(rq.owner().CheckBundle(tx, g.cfg.Ownership)); err != nil {
		return nil, err
	}
	locations, err := g.runImport(rq, tx)
	if err != nil || locations == nil {
		return nil, err
	}
	out := make(map[int]string, len(chunk))
	for k, i := range chunk {
		if k < len(locations) {
			out[i] = locations[k]
		}
	}
	return out, nil
}

// undo takes out of the record what the import's chunks wrote, after the
// import failed with cause: the recorded chunks latest first (a chunk
// references only itself and earlier ones, so nothing is removed while a
// resource still references it), then whatever still carries the job's
// tag (a chunk whose commit was not recorded). The failure is recorded
// first and each chunk's removal after it: a run interrupted while it
// undoes goes on undoing, and the job ends failed with cause.
func (w *importRun) undo(cause error) error {
	g, job := w.g, w.job
	if job.ImportUndo == nil {
		fe := fhir.AsError(cause)
		job.ImportUndo = &bulk.Failure{Status: fe.Status, Code: fe.Issues[0].Code, Diagnostics: fe.Issues[0].Diagnostics}
		if err := w.run.Save(); err != nil {
			return err
		}
	}
	failure := fhir.Errorf(job.ImportUndo.Status, job.ImportUndo.Code, "%s", job.ImportUndo.Diagnostics)
	left := func(err error) error {
		job.ImportLeft = true
		return fhir.Errorf(job.ImportUndo.Status, job.ImportUndo.Code,
			"%s; what it had written could not all be taken out (%v): it carries the tag %s|%s", job.ImportUndo.Diagnostics, err, dopu.TagSystem, w.tag)
	}
	w.progress("the import failed: taking out what it wrote")
	types := map[string]bool{}
	for k := job.ImportChunks - 1; k >= 0; k-- {
		path, err := w.run.Path(bulk.ImportChunkFile(k))
		if err != nil {
			return left(err)
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return left(err)
		}
		var c chunkRecord
		if err := json.Unmarshal(raw, &c); err != nil {
			return left(err)
		}
		for _, loc := range c.Locations {
			typ, _, _ := strings.Cut(loc, "/")
			types[typ] = true
		}
		if err := g.deleteAll(w.rq, c.Locations); err != nil {
			return left(err)
		}
		job.ImportChunks = k
		if err := w.run.Save(); err != nil {
			return err
		}
	}
	if w.src != nil {
		for _, f := range w.src.facts {
			if t := f.Type(); t != "" && t != "Patient" {
				types[t] = true
			}
		}
	}
	tag := url.Values{"_tag": {dopu.TagSystem + "|" + w.tag}}
	for typ := range types {
		for range maxCountPages {
			found, _, err := g.searchRecord(w.rq, typ, tag, 1)
			if err != nil {
				return left(err)
			}
			var locs []string
			for _, res := range found {
				if id, _ := res["id"].(string); fhir.IsID(id) {
					locs = append(locs, typ+"/"+id)
				}
			}
			if len(locs) == 0 {
				break
			}
			if err := g.deleteAll(w.rq, locs); err != nil {
				return left(err)
			}
		}
	}
	job.ImportPending = nil
	g.log.Info("a failed import was taken out of the record", zap.String("record", w.rq.rec.ID), zap.String("job", job.ID))
	return failure
}

// deleteAll deletes the record's resources at locs ("Type/id") in one
// transaction.
func (g *Gateway) deleteAll(rq *request, locs []string) error {
	entries := make([]any, 0, len(locs))
	for _, loc := range locs {
		if loc != "" {
			entries = append(entries, map[string]any{"request": map[string]any{"method": http.MethodDelete, "url": loc}})
		}
	}
	_, err := g.runImport(rq, map[string]any{"resourceType": "Bundle", "type": "transaction", "entry": entries})
	return err
}

// input returns the file the import reads and whether it is NDJSON: the
// upload, or what the manifest it names held (fetched once, kept with the
// job).
func (w *importRun) input(ctx context.Context) (string, bool, error) {
	job, run := w.job, w.run
	if job.ImportInput != "" {
		path, err := run.Path(job.ImportInput)
		return path, true, err
	}
	if job.Format != importBundle {
		return run.Input, true, nil
	}
	if st, err := os.Stat(run.Input); err != nil || st.Size() > manifestRequestMax {
		return run.Input, false, err
	}
	raw, err := os.ReadFile(run.Input)
	if err != nil {
		return "", false, err
	}
	var mr manifestRequest
	if json.Unmarshal(raw, &mr) != nil || mr.Manifest == "" {
		return run.Input, false, nil
	}
	const name = "fetched.ndjson"
	if err := w.g.fetchManifest(ctx, mr, filepath.Join(run.Dir, name)); err != nil {
		return "", false, err
	}
	if err := run.Keep(name, nil); err != nil {
		return "", false, err
	}
	job.ImportInput = name
	if err := run.Save(); err != nil {
		return "", false, err
	}
	return filepath.Join(run.Dir, name), true, nil
}

// unstamp removes the record stamps (RecordTagSystem) from a resource.
func unstamp(res map[string]any) {
	meta, _ := res["meta"].(map[string]any)
	tags, _ := meta["tag"].([]any)
	if len(tags) == 0 {
		return
	}
	kept := tags[:0]
	for _, t := range tags {
		if m, _ := t.(map[string]any); m == nil || m["system"] != RecordTagSystem {
			kept = append(kept, t)
		}
	}
	meta["tag"] = kept
	if len(kept) == 0 {
		delete(meta, "tag")
	}
}

// manifestRequest is the JSON body of an import from a Bulk Data server.
type manifestRequest struct {
	// Manifest is the URL of a complete export's manifest (its status
	// URL); every file it names is fetched.
	Manifest string `json:"manifest"`
	// Token is sent as a bearer token to the manifest's URL and to the
	// files at the manifest's origin, never to another origin.
	Token string `json:"token"`
	// Headers are sent, like the token, only to the manifest's origin:
	// what a Bulk Data server needs besides a token (HAPI's partition
	// header X-Request-Partition-IDs, an API key). See credentials.
	Headers map[string]string `json:"headers,omitempty"`
}

// maxManifestHeaders bounds the headers an import request may name.
const maxManifestHeaders = 16

// credentials is what goes to the manifest's origin: the headers the
// request names and the token. A header name must be an HTTP token and
// not one that HTTP itself or the gateway sets (Host, Authorization: use
// token, hop-by-hop and framing headers, cookies); a value holds no
// control character. A request that breaks a rule is refused (400).
func (mr manifestRequest) credentials() (http.Header, error) {
	h := http.Header{}
	if len(mr.Headers) > maxManifestHeaders {
		return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeValue, "an import names at most %d headers", maxManifestHeaders)
	}
	for name, value := range mr.Headers {
		canonical := http.CanonicalHeaderKey(name)
		if !httpguts.ValidHeaderFieldName(name) || reservedHeader(canonical) {
			return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeValue, "the header %q cannot be sent with an import", name)
		}
		if !httpguts.ValidHeaderFieldValue(value) || len(value) > 4096 {
			return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeValue, "the value of the header %q is not a valid header value", name)
		}
		h.Set(canonical, value)
	}
	if mr.Token != "" {
		h.Set("Authorization", "Bearer "+mr.Token)
	}
	return h, nil
}

// reservedHeader reports whether an import request may not name the
// header (canonical form).
func reservedHeader(name string) bool {
	switch name {
	case "Host", "Authorization", "Cookie", "Connection", "Keep-Alive", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
		"Content-Length", "Content-Type", "Content-Encoding", "Accept", "Accept-Encoding", "Expect", "Forwarded", "Via":
		return true
	}
	return strings.HasPrefix(name, "Proxy-") || strings.HasPrefix(name, "X-Forwarded-")
}

// manifestRequestMax bounds the JSON body of an import from a manifest URL
// (a larger JSON body is a Bundle).
const manifestRequestMax = 64 << 10

// importPolicy is the destination policy of imports from a manifest URL.
func (g *Gateway) importPolicy() *egress.Policy {
	if p := g.cfg.Bulk.ImportPolicy; p != nil {
		return p
	}
	return g.cfg.Webhooks
}

// fetchManifest downloads what a Bulk Data manifest names into the file
// at path (NDJSON), through the destination policy (the gateway dials a
// URL a user chose): every address dialled is checked, redirects are not
// followed. File URLs are resolved against the manifest's; the token goes
// only to the manifest's origin.
func (g *Gateway) fetchManifest(ctx context.Context, req manifestRequest, path string) error {
	creds, err := req.credentials()
	if err != nil {
		return err
	}
	policy := g.importPolicy()
	client := policy.Client(time.Minute)
	home := egress.Origin(req.Manifest)
	get := func(u, accept string) (*http.Response, error) {
		if err := policy.Check(ctx, u); err != nil {
			return nil, fhir.Errorf(http.StatusUnprocessableEntity, fhir.CodeBusinessRule, "manifest url refused: %v", err)
		}
		r, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeValue, "bad url %q", u)
		}
		r.Header.Set("Accept", accept)
		egress.AtOrigin(r, home, creds)
		res, err := client.Do(r)
		if err != nil {
			return nil, fhir.Errorf(http.StatusBadGateway, fhir.CodeTransient, "fetching %s: %v", u, err)
		}
		if res.StatusCode != http.StatusOK {
			res.Body.Close()
			return nil, fhir.Errorf(http.StatusBadGateway, fhir.CodeTransient, "fetching %s: HTTP %d", u, res.StatusCode)
		}
		return res, nil
	}
	res, err := get(req.Manifest, "application/json")
	if err != nil {
		return err
	}
	var m struct {
		Output []struct {
			Type string `json:"type"`
			URL  string `json:"url"`
		} `json:"output"`
	}
	err = json.NewDecoder(io.LimitReader(res.Body, 8<<20)).Decode(&m)
	res.Body.Close()
	if err != nil {
		return fhir.Errorf(http.StatusBadGateway, fhir.CodeStructure, "the manifest is unreadable: %v", err)
	}
	limit := g.cfg.Bulk.MaxImportBytes
	if limit <= 0 {
		limit = DefaultMaxImportBytes
	}
	return durable.WriteFile(path, func(w io.Writer) error {
		written := int64(0)
		base, _ := url.Parse(req.Manifest)
		for _, o := range m.Output {
			ref, err := url.Parse(o.URL)
			if err != nil || o.URL == "" {
				return fhir.Errorf(http.StatusBadGateway, fhir.CodeStructure, "the manifest names a file at %q, not a URL", o.URL)
			}
			res, err := get(base.ResolveReference(ref).String(), "application/fhir+ndjson")
			if err != nil {
				return err
			}
			n, err := io.Copy(w, io.LimitReader(res.Body, limit-written+1))
			res.Body.Close()
			written += n
			if err != nil {
				return fhir.Errorf(http.StatusBadGateway, fhir.CodeTransient, "fetching %s: %v", o.URL, err)
			}
			if written > limit {
				return fhir.Errorf(http.StatusRequestEntityTooLarge, fhir.CodeTooLong, "the export is larger than %d bytes", limit)
			}
			if _, err := w.Write([]byte("\n")); err != nil {
				return err
			}
		}
		return nil
	})
}
