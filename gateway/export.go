package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/bulk"
	"github.com/pfrgateway/caddy-pfr/egress"
	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/fhir/searchparam"
	"github.com/pfrgateway/caddy-pfr/internal/kv"
	"github.com/pfrgateway/caddy-pfr/tenancy"
)

// BulkConfig enables FHIR Bulk Data export ($export) on every record.
type BulkConfig struct {
	// Dir holds the export jobs and their NDJSON files. "" disables
	// $export.
	Dir string
	// TTL is how long a finished export's files stay. Default 24h.
	TTL time.Duration
	// Upstream reaches the upstream for jobs that run outside any client
	// request (the Caddy module's upstream handler). Required with Dir.
	Upstream Upstream
	// Context prepares the context of the gateway's requests made outside
	// any client request (in Caddy: what the upstream handler expects from
	// its server). Default: the context as it is.
	Context func(context.Context) context.Context
	// MaxImportBytes bounds an import's upload, or what an import fetches
	// from a manifest. Default DefaultMaxImportBytes.
	MaxImportBytes int64
	// ImportChunk is how many resources an import writes per transaction
	// (more when a reference cycle is larger). An import of at most this
	// many is one transaction. Default DefaultImportChunk.
	ImportChunk int
	// ImportPolicy is the destination policy of imports from a manifest
	// URL (the gateway dials a URL a user chose). Default: the webhooks'
	// policy (Config.Webhooks).
	ImportPolicy *egress.Policy
	// Shared, when set, keeps the jobs and their files in the state the
	// nodes of a cluster share (bulk.Options.Shared), so that a status
	// URL or a file is answered by any node and a job whose node died is
	// finished by another.
	Shared kv.DB
	// Settle, PageSize and Workers tune the jobs; Node, LeaseTTL and
	// SweepEvery the sharing (bulk.Options).
	Settle     time.Duration
	PageSize   int
	Workers    int
	Node       string
	LeaseTTL   time.Duration
	SweepEvery time.Duration
}

// Bulk Data paths below a record's FHIR base.
const (
	exportStatusPath = "/$export-status/"
	exportFilePath   = "/$export-file/"
)

// newBulk builds the export job manager of the gateway.
func (g *Gateway) newBulk() error {
	bc := g.cfg.Bulk
	if bc.Dir == "" {
		return nil
	}
	if bc.Upstream == nil {
		return errors.New("gateway: bulk export needs an upstream for its jobs")
	}
	m, err := bulk.NewManager(bulk.Options{Dir: bc.Dir, Source: exportSource{g}, Importer: importer{g}, TTL: bc.TTL, Settle: bc.Settle,
		PageSize: bc.PageSize, Workers: bc.Workers, Logger: g.log.Named("bulk"),
		Shared: bc.Shared, Node: bc.Node, LeaseTTL: bc.LeaseTTL, SweepEvery: bc.SweepEvery})
	if err != nil {
		return err
	}
	g.bulk = m
	return nil
}

// RunBulk runs the export jobs (and resumes those an earlier process left)
// until ctx ends. Without BulkConfig.Dir it returns at once.
func (g *Gateway) RunBulk(ctx context.Context) error {
	if g.bulk == nil {
		return nil
	}
	return g.bulk.Run(ctx)
}

// serveBulk serves the Bulk Data paths of a record: the kick-off
// ($export, Patient/$export), the status URL and the files. handled is
// false for any other path.
func (g *Gateway) serveBulk(w http.ResponseWriter, rq *request, query url.Values, ae *auditEntry) (handled bool, err error) {
	r, rest := rq.r, rq.rest
	bulkPath := rest == "/$export" || rest == "/Patient/$export" || strings.HasPrefix(rest, exportStatusPath) || strings.HasPrefix(rest, exportFilePath)
	if !bulkPath {
		return false, nil
	}
	if !rq.role.CanWrite() {
		ae.action, ae.interaction, ae.detail = "E", "operation", "$export"
		return true, fhir.Errorf(http.StatusForbidden, fhir.CodeForbidden, "only the record's owners and managers may export it")
	}
	switch {
	case rest == "/$export" || rest == "/Patient/$export":
		ae.action, ae.interaction, ae.detail = "E", "operation", "$export"
		if rest == "/Patient/$export" {
			ae.target = "Patient"
		}
		if r.Method != http.MethodGet {
			return true, fhir.Errorf(http.StatusMethodNotAllowed, fhir.CodeNotSupported, "$export is started with GET").WithHeader("Allow", "GET")
		}
		if g.bulk == nil {
			return true, fhir.Errorf(http.StatusNotImplemented, fhir.CodeNotSupported, "bulk export is not enabled on this gateway")
		}
		level := bulk.LevelSystem
		if rest == "/Patient/$export" {
			level = bulk.LevelPatient
		}
		return true, g.kickOffExport(w, rq, level, query)
	case strings.HasPrefix(rest, exportStatusPath):
		ae.action, ae.interaction, ae.detail = "R", "operation", "$export-status"
		if g.bulk == nil {
			return true, noSuchExport()
		}
		return true, g.exportStatus(w, rq, strings.TrimPrefix(rest, exportStatusPath))
	case strings.HasPrefix(rest, exportFilePath):
		ae.action, ae.interaction, ae.detail = "R", "operation", "$export-file"
		if g.bulk == nil {
			return true, noSuchExport()
		}
		return true, g.exportFile(w, rq, strings.TrimPrefix(rest, exportFilePath))
	}
	return false, nil
}

func noSuchExport() *fhir.Error {
	return fhir.Errorf(http.StatusNotFound, fhir.CodeNotFound, "no such export (it may have expired or been cancelled)")
}

// exportableTypes are the resource types an export reads by default: every
// R4 type that a server stores (not Parameters or OperationOutcome), and
// for a Patient-level export the Patient and its compartment's types.
func exportableTypes(level bulk.Level) []string {
	var out []string
	for _, t := range searchparam.ResourceTypes() {
		if t == "Parameters" || t == "OperationOutcome" {
			continue
		}
		if level == bulk.LevelPatient && t != "Patient" && !fhir.InPatientCompartment(t) {
			continue
		}
		out = append(out, t)
	}
	return out
}

// kickOffExport checks and stores an export request: 202 with the status
// URL in Content-Location.
func (g *Gateway) kickOffExport(w http.ResponseWriter, rq *request, level bulk.Level, query url.Values) error {
	r, rec, id, publicBase := rq.r, rq.rec, rq.id, rq.base
	if !preferAsync(r.Header) {
		return fhir.Errorf(http.StatusBadRequest, fhir.CodeInvalid, "$export runs asynchronously: send Prefer: respond-async")
	}
	if a := r.Header.Get("Accept"); a != "" && !strings.Contains(a, "json") && !strings.Contains(a, "*/*") {
		return fhir.Errorf(http.StatusNotAcceptable, fhir.CodeNotSupported, "$export answers application/fhir+json")
	}
	lenient := !strings.Contains(strings.ToLower(strings.Join(r.Header.Values("Prefer"), ",")), "handling=strict")
	for k := range query {
		switch k {
		case "_type", "_since", "_outputFormat", "_format":
		case "_typeFilter", "_elements", "patient", "includeAssociatedData", "organizeOutputBy", "_until":
			return fhir.Errorf(http.StatusBadRequest, fhir.CodeNotSupported, "$export does not support %s here", k).WithExpression(k)
		default:
			if !lenient {
				return fhir.Errorf(http.StatusBadRequest, fhir.CodeNotSupported, "unknown $export parameter %s", k).WithExpression(k)
			}
		}
	}
	if f := query.Get("_outputFormat"); f != "" && !slices.Contains(bulk.OutputFormats, f) {
		return fhir.Errorf(http.StatusBadRequest, fhir.CodeNotSupported,
			"_outputFormat %q is not supported; use application/fhir+ndjson", f).WithExpression("_outputFormat")
	}
	types := exportableTypes(level)
	if raw := strings.Join(query["_type"], ","); raw != "" {
		types = nil
		for _, t := range strings.Split(raw, ",") {
			t = strings.TrimSpace(t)
			if !slices.Contains(exportableTypes(level), t) {
				return fhir.Errorf(http.StatusBadRequest, fhir.CodeNotSupported,
					"_type %q is not a resource type this export can hold", t).WithExpression("_type")
			}
			if !slices.Contains(types, t) {
				types = append(types, t)
			}
		}
	}
	for _, t := range types {
		for _, in := range []auth.Interaction{auth.InteractionSearch, auth.InteractionRead} {
			if ok, missing := rq.grants.Allows(auth.Request{Interaction: in, ResourceType: t}); !ok {
				return insufficientScope(publicBase, missing)
			}
		}
	}
	var since *time.Time
	if s := query.Get("_since"); s != "" {
		t, err := bulk.ParseInstant(s)
		if err != nil {
			return fhir.Errorf(http.StatusBadRequest, fhir.CodeValue, "_since must be a FHIR instant, not %q", s).WithExpression("_since")
		}
		since = &t
	}
	job, err := g.bulk.Submit(&bulk.Job{
		RecordID: rec.ID, Slug: rec.Slug, Base: publicBase, Issuer: id.Issuer, Subject: id.Subject,
		Scopes: id.Scopes, Request: publicBase + strings.TrimPrefix(r.URL.Path, g.cfg.FHIRPath) + queryString(r.URL.RawQuery),
		Level: level, Types: types, Since: since,
	})
	if errors.Is(err, bulk.ErrTooMany) {
		return fhir.Errorf(http.StatusTooManyRequests, fhir.CodeThrottled, "%v; wait for one to finish or cancel one", err).
			WithHeader("Retry-After", "60")
	}
	if err != nil {
		return fhir.Errorf(http.StatusServiceUnavailable, fhir.CodeTransient, "the export could not be started").WithCause(err)
	}
	g.log.Info("bulk export started", zap.String("record", rec.ID), zap.String("job", job.ID),
		zap.String("level", string(level)), zap.Int("types", len(types)), zap.String("sub", id.Subject))
	w.Header().Set("Content-Location", publicBase+exportStatusPath+job.ID)
	fhir.WriteJSON(w, http.StatusAccepted, fhir.NewOutcome(fhir.SeverityInformation, fhir.CodeInformational,
		"export started; poll the Content-Location URL for its progress and manifest"))
	return nil
}

func queryString(raw string) string {
	if raw == "" {
		return ""
	}
	return "?" + raw
}

// preferAsync reports whether a Prefer header asks for respond-async.
func preferAsync(h http.Header) bool {
	for _, v := range h.Values("Prefer") {
		for _, p := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(p), "respond-async") {
				return true
			}
		}
	}
	return false
}

// ownJob returns the job id names if it is the caller's and this record's;
// anything else is the same 404 (job ids are no oracle).
func (g *Gateway) ownJob(rec *tenancy.Record, id *auth.Identity, jobID string) (*bulk.Job, bulk.Progress, error) {
	job, p, err := g.bulk.Job(jobID)
	if errors.Is(err, bulk.ErrNotFound) || err == nil && (job.RecordID != rec.ID || job.Issuer != id.Issuer || job.Subject != id.Subject) {
		return nil, p, noSuchExport()
	}
	if err != nil {
		return nil, p, fhir.Errorf(http.StatusServiceUnavailable, fhir.CodeTransient, "the export's state cannot be read").WithCause(err)
	}
	return job, p, nil
}

// exportStatus answers the status URL: 202 with X-Progress while the job
// runs, the manifest when it is complete, the failure's OperationOutcome;
// DELETE cancels the job and removes its files.
func (g *Gateway) exportStatus(w http.ResponseWriter, rq *request, jobID string) error {
	r, rec := rq.r, rq.rec
	job, p, err := g.ownJob(rec, rq.id, jobID)
	if err != nil {
		return err
	}
	if job.Kind != bulk.KindExport {
		return noSuchExport()
	}
	switch r.Method {
	case http.MethodDelete:
		if err := g.bulk.Cancel(job.ID); err != nil && !errors.Is(err, bulk.ErrNotFound) {
			return fhir.Errorf(http.StatusServiceUnavailable, fhir.CodeTransient, "the export could not be cancelled").WithCause(err)
		}
		g.log.Info("bulk export cancelled", zap.String("record", rec.ID), zap.String("job", job.ID))
		fhir.WriteJSON(w, http.StatusAccepted, fhir.NewOutcome(fhir.SeverityInformation, fhir.CodeInformational, "export cancelled; its files are removed"))
		return nil
	case http.MethodGet, http.MethodHead:
	default:
		return fhir.Errorf(http.StatusMethodNotAllowed, fhir.CodeNotSupported, "use GET or DELETE").WithHeader("Allow", "GET, DELETE")
	}
	switch job.Status {
	case bulk.StatusInProgress:
		progress := "queued"
		if p.Type != "" {
			progress = fmt.Sprintf("%d resources; reading %s (type %d of %d)", p.Written, p.Type, p.TypeIndex+1, len(job.Types))
		} else if n := len(job.Done); n > 0 {
			// Running on another node of a cluster, or about to resume
			// here: what the stored job says.
			written := 0
			for _, d := range job.Done {
				written += d.Count
			}
			progress = fmt.Sprintf("%d resources; %d of %d types done", written, n, len(job.Types))
		}
		w.Header().Set("X-Progress", progress)
		w.Header().Set("Retry-After", "2")
		w.WriteHeader(http.StatusAccepted)
		return nil
	case bulk.StatusFailed:
		f := job.Failure
		if f == nil {
			f = &bulk.Failure{Status: http.StatusServiceUnavailable, Code: fhir.CodeException, Diagnostics: "the export failed"}
		}
		return fhir.Errorf(f.Status, f.Code, "the export failed: %s", f.Diagnostics)
	}
	w.Header().Set("Expires", job.Expires.UTC().Format(http.TimeFormat))
	w.Header().Set("Cache-Control", "no-store")
	WriteJSON(w, http.StatusOK, manifest(job))
	return nil
}

// manifest is the complete job's Bulk Data manifest.
func manifest(job *bulk.Job) map[string]any {
	output := []any{}
	for _, d := range job.Done {
		if d.File == "" {
			continue
		}
		output = append(output, map[string]any{
			"type": d.Type, "url": job.Base + exportFilePath + job.ID + "/" + d.File, "count": d.Count,
			"extension": map[string]any{"sha256": d.SHA256, "bytes": d.Bytes},
		})
	}
	errs := []any{}
	if len(job.ErrorLines) > 0 {
		errs = append(errs, map[string]any{"type": "OperationOutcome", "url": job.Base + exportFilePath + job.ID + "/" + bulk.ErrorFile})
	}
	return map[string]any{
		"transactionTime":     bulk.FormatInstant(job.TransactionTime),
		"request":             job.Request,
		"requiresAccessToken": true,
		"output":              output,
		"error":               errs,
	}
}

// exportFile streams one file of a complete export (Range requests work).
func (g *Gateway) exportFile(w http.ResponseWriter, rq *request, rest string) error {
	r := rq.r
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return fhir.Errorf(http.StatusMethodNotAllowed, fhir.CodeNotSupported, "use GET").WithHeader("Allow", "GET")
	}
	jobID, name, ok := strings.Cut(rest, "/")
	if !ok || strings.Contains(name, "/") {
		return noSuchExport()
	}
	job, _, err := g.ownJob(rq.rec, rq.id, jobID)
	if err != nil {
		return err
	}
	f, err := g.bulk.Open(job, name)
	if errors.Is(err, bulk.ErrNotFound) {
		return noSuchExport()
	}
	if err != nil {
		return fhir.Errorf(http.StatusServiceUnavailable, fhir.CodeTransient, "the export file cannot be read").WithCause(err)
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/fhir+ndjson")
	w.Header().Set("Cache-Control", "no-store")
	http.ServeContent(w, r, "", job.Finished, f)
	return nil
}

// exportSource reads a record for an export job through the gateway's own
// pipeline, in the name of the job's owner: the membership is checked
// again on every page (a member removed meanwhile stops the job), the
// request is authorized with the token's scopes, sent in the record's
// partition, and its answer rewritten and filtered like a client's.
type exportSource struct{ g *Gateway }

func (s exportSource) Get(ctx context.Context, job *bulk.Job, pathQuery string) (body []byte, err error) {
	g := s.g
	if g.cfg.Bulk.Context != nil {
		ctx = g.cfg.Bulk.Context(ctx)
	}
	u, err := url.Parse(job.Base + pathQuery)
	if err != nil {
		return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeInvalid, "bad export read %q", pathQuery)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeInvalid, "bad export read %q", pathQuery)
	}
	req.RequestURI = u.RequestURI()
	req.Header.Set("Accept", "application/fhir+json")
	// Fresh answers, never a search result an upstream cached (HAPI keeps
	// them 60 s by default), but kept by the upstream for paging.
	req.Header.Set("Cache-Control", "no-cache")
	id := &auth.Identity{Issuer: job.Issuer, Subject: job.Subject, Scopes: job.Scopes}
	rec, role, err := g.recordAndRole(req, job.Slug, id)
	if fhir.AsError(err).Status == http.StatusNotFound || err == nil && (rec.ID != job.RecordID || !role.CanWrite()) {
		return nil, fhir.Errorf(http.StatusForbidden, fhir.CodeForbidden, "the export's owner no longer owns or manages the record")
	}
	if err != nil {
		return nil, err
	}
	rest, err := g.fhirSubpath(req)
	if err != nil {
		return nil, err
	}
	query, err := parseQuery(req.URL.RawQuery)
	if err != nil {
		return nil, err
	}
	in, err := classify(http.MethodGet, rest, query)
	if err != nil {
		return nil, err
	}
	// The deletions in a history are kept: the export needs them to know
	// what existed at its transaction time, and they never reach a client.
	in.keepDeletions = true
	rq := &request{r: req, up: g.guard(g.cfg.Bulk.Upstream), rec: rec, base: job.Base, rest: rest,
		id: id, role: role, grants: g.grantsFor(id), in: in}
	if _, err := g.authorize(rq, in); err != nil {
		return nil, err
	}
	res := &captured{header: http.Header{}, limit: g.answerLimit()}
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler {
				panic(p)
			}
			body, err = nil, fhir.Errorf(http.StatusBadGateway, fhir.CodeTransient, "the upstream's answer to %s was cut short", rest)
		}
	}()
	g.proxy(res, rq)
	if res.over {
		return nil, fhir.Errorf(http.StatusBadGateway, fhir.CodeTooCostly, "%s", answerTooLarge{res.limit}.Error())
	}
	if res.status != http.StatusOK {
		return nil, &fhir.Error{Status: res.status, Issues: outcomeIssues(res.body.Bytes(), fmt.Sprintf("reading %s failed (HTTP %d)", rest, res.status))}
	}
	return res.body.Bytes(), nil
}

// Bulk Data Access 2.0 canonical URLs the CapabilityStatement names.
const (
	bulkCapability      = "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"
	bulkExportOp        = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"
	bulkPatientExportOp = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"
)

// advertiseExport adds the Bulk Data operations to a record's
// CapabilityStatement: it instantiates the Bulk Data capability, the
// server offers export and the Patient type patient-export. A body that
// is not a CapabilityStatement is returned unchanged.
func advertiseExport(body []byte) []byte {
	var cs map[string]any
	if json.Unmarshal(body, &cs) != nil || cs["resourceType"] != "CapabilityStatement" {
		return body
	}
	inst, _ := cs["instantiates"].([]any)
	if !slices.Contains(inst, any(bulkCapability)) {
		cs["instantiates"] = append(inst, bulkCapability)
	}
	addOp := func(holder map[string]any, name, def string) {
		ops, _ := holder["operation"].([]any)
		for _, o := range ops {
			if m, _ := o.(map[string]any); m["name"] == name {
				m["definition"] = def
				return
			}
		}
		holder["operation"] = append(ops, map[string]any{"name": name, "definition": def})
	}
	rests, _ := cs["rest"].([]any)
	for _, r := range rests {
		rest, _ := r.(map[string]any)
		if rest == nil || rest["mode"] != "server" && rest["mode"] != nil {
			continue
		}
		addOp(rest, "export", bulkExportOp)
		resources, _ := rest["resource"].([]any)
		for _, res := range resources {
			if m, _ := res.(map[string]any); m["type"] == "Patient" {
				addOp(m, "export", bulkPatientExportOp)
			}
		}
	}
	out, err := json.Marshal(cs)
	if err != nil {
		return body
	}
	return out
}

// advertiseExportScopes lists in a SMART configuration the scopes an
// export needs (patient/*.rs, or system/*.rs for backend services).
func advertiseExportScopes(doc map[string]any) {
	var scopes []any
	switch v := doc["scopes_supported"].(type) {
	case []any:
		scopes = append([]any(nil), v...) // the discovery document is cached: never append to its slice
	case []string:
		for _, s := range v {
			scopes = append(scopes, s)
		}
	}
	for _, s := range []string{"patient/*.rs", "system/*.rs"} {
		if !slices.Contains(scopes, any(s)) {
			scopes = append(scopes, s)
		}
	}
	doc["scopes_supported"] = scopes
}
