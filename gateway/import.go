package gateway

import (
	"bufio"
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
	"time"

	"go.uber.org/zap"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/bulk"
	"github.com/pfrgateway/caddy-pfr/dopu"
	"github.com/pfrgateway/caddy-pfr/egress"
	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/fhir/fhirjson"
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
	// Resumed is set when an earlier run of the job had already written
	// the data (it was interrupted before it could say so).
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
		return fhir.Errorf(f.Status, f.Code, "the import failed, nothing of it was written: %s", f.Diagnostics)
	default:
		WriteJSON(w, http.StatusOK, map[string]any{"job": job.ID, "status": job.Status, "result": job.Result})
	}
	return nil
}

// importer writes import jobs through the same rules as a pick-up
// (dopu.PrepareBundle, the ownership check, one atomic transaction).
type importer struct{ g *Gateway }

// Import runs one import job: the input becomes one Bundle; its Patient is
// matched against the record's and becomes it, every reference is
// rewritten, what the record already holds is skipped, and the rest is
// written in one transaction that passes the ownership check. A failure
// anywhere leaves the record as it was; a run interrupted after the
// transaction committed finds its resources by the job's tag and writes
// nothing again.
func (im importer) Import(ctx context.Context, job *bulk.Job, input string, progress func(bulk.Progress)) (json.RawMessage, error) {
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
	progress(bulk.Progress{Phase: "reading the input"})
	body, err := g.importBody(ctx, job, input)
	if err != nil {
		return nil, err
	}
	rq := own(parent, guardedUpstream{up: g.cfg.Bulk.Upstream, callTimeout: max(g.cfg.CallTimeout, importCallTimeout)}, rec, job.Base)
	patient, version, err := g.recordPatient(rq)
	if err != nil {
		return nil, err
	}
	tag := importTag(job.ID)
	// A run interrupted after its transaction committed: the job's tag on
	// any of the input's types proves all of it is there.
	done, err := g.alreadyImported(rq, tag, bundleTypes(body))
	if err != nil {
		return nil, err
	}
	res := &ImportResult{Status: string(dopu.StatusPickedUp)}
	if done {
		res.Resumed = true
		res.Report = dopu.Report{Imported: map[string]int{},
			Warnings: []string{"an earlier run of this import had written it before it was interrupted; nothing was written again"}}
	} else {
		progress(bulk.Progress{Phase: "matching the Patient and looking for what the record already holds"})
		imp, status, reason, err := dopu.PrepareBundle(body, tag, patient, rec.PatientID,
			dopu.PrepareOptions{Force: job.Force, Search: g.recordSearch(rq)})
		body = nil
		if err != nil {
			var fe *fhir.Error
			if errors.As(err, &fe) {
				return nil, fe
			}
			return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeStructure, "the import cannot be read: %v", err)
		}
		res = &ImportResult{Status: string(status), Reason: reason, Imported: imp.Entries, Match: imp.Match, Report: imp.Report}
		tx, err := fhir.DecodeResource(imp.Transaction)
		if err != nil {
			return nil, fhir.Errorf(http.StatusInternalServerError, fhir.CodeException, "the prepared import is unreadable").WithCause(err)
		}
		// Another record's stamp (an export from an untrusted upstream)
		// means nothing here: it goes, and this record's is set when
		// the upstream is not trusted.
		forEachBundleResource(tx, func(res map[string]any) { unstamp(res) })
		addIdentifiersEntry(tx, patient, rec.PatientID, version, imp.SenderIdentifiers)
		stampBundle(g.iso, tx, rec.ID)
		if err := fhir.OwnershipError(rq.owner().CheckBundle(tx, g.cfg.Ownership)); err != nil {
			return nil, err
		}
		progress(bulk.Progress{Phase: fmt.Sprintf("writing %d resources in one transaction", imp.Entries)})
		locations, err := g.runImport(rq, tx)
		if err != nil {
			return nil, err
		}
		for k, loc := range locations {
			if k < len(imp.Sources) && loc != "" {
				res.Report.Created = append(res.Report.Created, dopu.CreatedEntry{Entry: imp.Sources[k], Resource: loc})
			}
		}
	}
	g.AuditAction(parent, rec, id, http.StatusOK, "C", "import", "", fmt.Sprintf("import job %s: %d resources", job.ID, res.Imported))
	g.log.Info("import done", zap.String("record", rec.ID), zap.String("job", job.ID), zap.Int("imported", res.Imported), zap.Bool("resumed", res.Resumed))
	return json.Marshal(res)
}

// bundleTypes counts the resource types of a Bundle's entries.
func bundleTypes(body []byte) map[string]int {
	var b struct {
		Entry []struct {
			Resource struct {
				ResourceType string `json:"resourceType"`
			} `json:"resource"`
		} `json:"entry"`
	}
	_ = json.Unmarshal(body, &b)
	out := map[string]int{}
	for _, e := range b.Entry {
		out[e.Resource.ResourceType]++
	}
	return out
}

// forEachBundleResource calls fn with every entry's resource of a Bundle.
func forEachBundleResource(bundle map[string]any, fn func(map[string]any)) {
	entries, _ := bundle["entry"].([]any)
	for _, e := range entries {
		if m, ok := e.(map[string]any); ok {
			if res, ok := m["resource"].(map[string]any); ok {
				fn(res)
			}
		}
	}
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

// importBody reads an import job's input as one Bundle (JSON): NDJSON
// lines become the entries of a collection; a Bundle is taken as it is; a
// manifest is fetched first. Every resource passes the strict JSON door
// (fhirjson), so values stay byte for byte.
func (g *Gateway) importBody(ctx context.Context, job *bulk.Job, input string) ([]byte, error) {
	f, err := os.Open(input)
	if err != nil {
		return nil, fmt.Errorf("import input: %w", err)
	}
	defer f.Close()
	if job.Format == importBundle {
		raw, err := io.ReadAll(f)
		if err != nil {
			return nil, err
		}
		var probe struct {
			ResourceType string `json:"resourceType"`
			Manifest     string `json:"manifest"`
		}
		if err := json.Unmarshal(raw, &probe); err != nil {
			return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeStructure, "the import is not JSON: %v", err)
		}
		switch {
		case probe.ResourceType == "Bundle":
			if err := fhirjson.Check(raw); err != nil {
				return nil, fhir.JSONError(err)
			}
			return raw, nil
		case probe.Manifest != "":
			var buf bytes.Buffer
			if err := g.fetchManifest(ctx, raw, &buf); err != nil {
				return nil, err
			}
			return ndjsonBundle(&buf)
		}
		return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeInvalid, "the import must be a Bundle, NDJSON, or {\"manifest\": url}")
	}
	return ndjsonBundle(f)
}

// ndjsonBundle turns NDJSON (one resource a line; empty lines skipped)
// into a collection Bundle. A line that is not a resource refuses the
// whole import, naming the line.
func ndjsonBundle(r io.Reader) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(`{"resourceType":"Bundle","type":"collection","entry":[`)
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 64<<20)
	n, line := 0, 0
	for sc.Scan() {
		line++
		raw := bytes.TrimSpace(sc.Bytes())
		if len(raw) == 0 {
			continue
		}
		if err := fhirjson.Check(raw); err != nil {
			fe := fhir.JSONError(err)
			fe.Issues[0].Diagnostics = fmt.Sprintf("line %d: %s", line, fe.Issues[0].Diagnostics)
			return nil, fe
		}
		var h struct {
			ResourceType string `json:"resourceType"`
		}
		if json.Unmarshal(raw, &h) != nil || !fhir.IsResourceType(h.ResourceType) {
			return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeStructure, "line %d is not a FHIR resource", line)
		}
		if n > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"resource":`)
		b.Write(raw)
		b.WriteByte('}')
		n++
	}
	if err := sc.Err(); err != nil {
		return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeStructure, "line %d: %v", line+1, err)
	}
	if n == 0 {
		return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeRequired, "the import holds no resources")
	}
	b.WriteString("]}")
	return b.Bytes(), nil
}

// manifestRequest is the JSON body of an import from a Bulk Data server.
type manifestRequest struct {
	// Manifest is the URL of a complete export's manifest (its status
	// URL); every file it names is fetched.
	Manifest string `json:"manifest"`
	// Token is sent as a bearer token to the manifest's URL and to the
	// files at the manifest's origin, never to another origin.
	Token string `json:"token"`
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

// fetchManifest downloads what a Bulk Data manifest names, through the
// destination policy (the gateway dials a URL a user chose): every address
// dialled is checked, redirects are not followed. File URLs are resolved
// against the manifest's; the token goes only to the manifest's origin.
func (g *Gateway) fetchManifest(ctx context.Context, raw []byte, out *bytes.Buffer) error {
	var req manifestRequest
	if err := json.Unmarshal(raw, &req); err != nil {
		return fhir.Errorf(http.StatusBadRequest, fhir.CodeStructure, "the import request is not JSON: %v", err)
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
		if req.Token != "" && egress.Origin(u) == home {
			r.Header.Set("Authorization", "Bearer "+req.Token)
		}
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
		_, err = io.Copy(out, io.LimitReader(res.Body, limit-int64(out.Len())+1))
		res.Body.Close()
		if err != nil {
			return fhir.Errorf(http.StatusBadGateway, fhir.CodeTransient, "fetching %s: %v", o.URL, err)
		}
		if int64(out.Len()) > limit {
			return fhir.Errorf(http.StatusRequestEntityTooLarge, fhir.CodeTooLong, "the export is larger than %d bytes", limit)
		}
		out.WriteByte('\n')
	}
	return nil
}
