package gateway

import (
	"errors"
	"net/http"
	"path"
	"strings"

	"go.uber.org/zap"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/backend"
	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/tenancy"
)

// serveRecord runs the FHIR pipeline for the record at slug (DESIGN.md, "The
// request pipeline").
func (g *Gateway) serveRecord(w http.ResponseWriter, r *http.Request, up Upstream, slug string) {
	if cors(w, r) {
		return
	}
	if r.URL.Path == smartConfigPath || r.URL.Path == g.cfg.FHIRPath+smartConfigPath {
		if _, _, err := g.recordAndRole(r, slug, nil); err != nil {
			fhir.WriteError(w, err)
			return
		}
		g.serveSMARTConfig(w, r, slug)
		return
	}
	sw := &statusRecorder{ResponseWriter: w}
	var ae auditEntry
	defer func() { g.audit(r, sw.status, &ae) }()
	rest, err := g.fhirSubpath(r)
	if err == nil {
		err = g.serveFHIR(sw, r, up, slug, rest, origin(r)+g.cfg.FHIRPath, &ae)
	}
	if err != nil {
		g.logServerError(r, err)
		fhir.WriteError(sw, err)
	}
}

// logServerError logs an error the client gets as a 5xx from the gateway
// itself, naming the file when the disk is full.
func (g *Gateway) logServerError(r *http.Request, err error) {
	fe := fhir.AsError(err)
	if fe.Status < http.StatusInternalServerError {
		return
	}
	if path, full := fhir.StorageFull(err); full {
		if path == "" {
			path = g.cfg.DataPath
		}
		g.log.Error("disk full: nothing of the request was stored", zap.String("path", path),
			zap.String("method", r.Method), zap.String("host", r.Host), zap.String("uri", r.RequestURI), zap.Error(err))
		return
	}
	g.log.Error("request failed", zap.Int("status", fe.Status), zap.String("method", r.Method),
		zap.String("host", r.Host), zap.String("uri", r.RequestURI), zap.Error(err))
}

// serveFHIR authenticates, authorizes and proxies one FHIR request.
func (g *Gateway) serveFHIR(w http.ResponseWriter, r *http.Request, up Upstream, slug, rest, publicBase string, ae *auditEntry) error {
	// Public: the CapabilityStatement.
	if rest == "/metadata" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		rec, _, err := g.recordAndRole(r, slug, nil)
		if err != nil {
			return err
		}
		g.serveMetadata(w, r, up, rec, rest, publicBase)
		return nil
	}
	query, err := parseQuery(r.URL.RawQuery)
	if err != nil {
		return err
	}
	id, err := g.authenticate(r, []string{publicBase})
	if err != nil {
		return err
	}
	rec, role, err := g.recordAndRole(r, slug, id)
	if err != nil {
		return err
	}
	ae.rec, ae.id = rec, id
	// Drop-off: a Bundle from someone who may not write here is parked for
	// the record's owners instead of refused.
	if g.cfg.DOPU != nil && isDropOffTarget(r, rest) && !role.CanWrite() {
		ae.action, ae.interaction = "C", "dropoff"
		return g.dropOff(w, r, rec, id, ae)
	}
	if id == nil {
		return fhir.Errorf(http.StatusUnauthorized, fhir.CodeLogin, "a bearer token is required to access this record").
			WithHeader("WWW-Authenticate", auth.WWWAuthenticate(publicBase, nil))
	}
	if handled, err := g.serveBulk(w, r, rec, role, id, rest, publicBase, query, ae); handled {
		return err
	}
	in, err := classify(r.Method, rest, query)
	if err != nil {
		return err
	}
	if err := checkFormat(r, in); err != nil {
		return err
	}
	ae.fromInteraction(in)
	if role == "" {
		g.log.Info("access denied: not a member",
			zap.String("record", rec.ID), zap.String("iss", id.Issuer), zap.String("sub", id.Subject))
		return fhir.Errorf(http.StatusForbidden, fhir.CodeForbidden, "you have no access to this Personal FHIR Record")
	}
	grants := g.grantsFor(id)
	if in.kind == auth.InteractionSearch && r.Method == http.MethodPost {
		// POST _search carries its parameters in a form body: the scope
		// check must see them.
		form, err := readSearchForm(w, r)
		if err != nil {
			return err
		}
		for k, vs := range form {
			in.query[k] = append(in.query[k], vs...)
		}
	}
	var bundleDoc map[string]any
	if in.bundle {
		_, bundle, err := g.readBundle(w, r)
		if err != nil {
			return err
		}
		if t, _ := bundle["type"].(string); t != "batch" && t != "transaction" {
			return fhir.Errorf(http.StatusBadRequest, fhir.CodeInvalid,
				"only batch and transaction Bundles can be posted to the base (got type %q)", t)
		}
		if err := g.checkBundleEntries(rec, role, grants, bundle, publicBase); err != nil {
			return err
		}
		bundleDoc = bundle
		entries, _ := bundle["entry"].([]any)
		in.bundleType, _ = bundle["type"].(string)
		in.entries = len(entries)
	}
	needsMatch, err := g.authorize(rec, role, grants, in, publicBase)
	if err != nil {
		return err
	}
	guarded := !g.cfg.TrustUpstreamIsolation
	switch {
	case in.bundle:
		if err := g.resolveConditionalReferences(r, up, rec, bundleDoc, publicBase); err != nil {
			return err
		}
		if err := fhir.OwnershipError(owner(rec, publicBase).CheckBundle(bundleDoc, g.cfg.Ownership)); err != nil {
			return err
		}
		if guarded {
			confineBundleConditions(bundleDoc, rec.ID)
			if err := g.checkEntryTargets(r, up, rec, bundleDoc, publicBase); err != nil {
				return err
			}
			if err := g.confineBundleIfNoneExist(r, up, rec, bundleDoc, publicBase); err != nil {
				return err
			}
			stampBundle(bundleDoc, rec.ID)
		}
		if err := setJSONBody(r, bundleDoc); err != nil {
			return err
		}
	case in.isWrite():
		if err := g.checkWrite(w, r, up, rec, role, in, rest, publicBase); err != nil {
			return err
		}
		if guarded {
			if in.conditional && (in.kind == auth.InteractionUpdate || in.kind == auth.InteractionDelete) {
				// Confined to the record: the upstream matches only what
				// carries the record's stamp.
				r.URL.RawQuery = recordCriterion(r.URL.RawQuery, rec.ID)
				in.query.Add("_tag", RecordTagSystem+"|"+rec.ID)
			}
			if err := g.checkTargetsBelong(r, up, rec, in, publicBase); err != nil {
				return err
			}
			if criteria := r.Header.Get("If-None-Exist"); in.kind == auth.InteractionCreate && criteria != "" {
				confined, err := g.confineIfNoneExist(r, up, rec, in.typ, criteria, publicBase)
				if err != nil {
					return err
				}
				r.Header.Del("If-None-Exist")
				if confined != "" {
					r.Header.Set("If-None-Exist", confined)
				}
			}
		}
	case guarded && in.kind == auth.InteractionSearch && isCountOnly(in.query):
		return g.serveCount(w, r, up, rec, in, publicBase)
	}
	if needsMatch {
		return g.proxyRestrictedRead(w, r, up, rec, rest, publicBase, grants, in)
	}
	g.proxy(w, r, up, rec, rest, publicBase, in, grants)
	return nil
}

// recordAndRole returns, in one transaction, the active record at slug and
// the role of the caller (none for an anonymous caller or a non-member); a
// missing or inactive record is a 404.
func (g *Gateway) recordAndRole(r *http.Request, slug string, id *auth.Identity) (*tenancy.Record, tenancy.Role, error) {
	var rec *tenancy.Record
	var role tenancy.Role
	err := g.cfg.Tenancy.View(r.Context(), func(tx tenancy.Tx) error {
		var err error
		if rec, err = tx.RecordBySlug(slug); err != nil {
			return err
		}
		if rec.Status != tenancy.StatusActive {
			return tenancy.ErrNotFound
		}
		if id == nil {
			return nil
		}
		acct, err := tx.AccountByIdentity(id.Issuer, id.Subject)
		if errors.Is(err, tenancy.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		m, err := tx.Membership(rec.ID, acct.ID)
		if errors.Is(err, tenancy.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		role = m.Role
		return nil
	})
	if errors.Is(err, tenancy.ErrNotFound) {
		return nil, "", unknownHost(normalizeHost(hostOnly(r.Host)))
	}
	if err != nil {
		return nil, "", fhir.Errorf(http.StatusServiceUnavailable, fhir.CodeTransient, "record lookup failed").WithCause(err)
	}
	return rec, role, nil
}

// fhirSubpath returns the part of the request path below the FHIR base
// ("" for the base itself), refusing paths that could mean something else
// upstream than they seem to mean here.
func (g *Gateway) fhirSubpath(r *http.Request) (string, error) {
	p := r.URL.Path
	if p != g.cfg.FHIRPath && !strings.HasPrefix(p, g.cfg.FHIRPath+"/") {
		return "", fhir.Errorf(http.StatusNotFound, fhir.CodeNotFound,
			"this Personal FHIR Record serves FHIR at %s", g.cfg.FHIRPath)
	}
	raw := r.URL.EscapedPath()
	lower := strings.ToLower(raw)
	if strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c") || strings.Contains(lower, "%2e") ||
		strings.Contains(p, "\\") || strings.Contains(p, "//") {
		return "", fhir.Errorf(http.StatusBadRequest, fhir.CodeInvalid, "encoded or doubled separators are not allowed in FHIR paths")
	}
	if clean := path.Clean(p); clean != strings.TrimSuffix(p, "/") && clean != p {
		return "", fhir.Errorf(http.StatusBadRequest, fhir.CodeInvalid, "dot segments are not allowed in FHIR paths")
	}
	if r.Header.Get("X-HTTP-Method-Override") != "" || r.Header.Get("X-HTTP-Method") != "" || r.Header.Get("X-Method-Override") != "" {
		return "", fhir.Errorf(http.StatusBadRequest, fhir.CodeNotSupported, "HTTP method overrides are not supported")
	}
	return strings.TrimSuffix(strings.TrimPrefix(p, g.cfg.FHIRPath), "/"), nil
}

// outbound clones r for the upstream: the path below the upstream's FHIR
// base, no client credentials, and the record's partition.
//
// The upstream is asked for FHIR JSON, the only format the gateway checks,
// unless raw: the content of a Binary (see format.go).
func (g *Gateway) outbound(r *http.Request, rec *tenancy.Record, rest string, raw bool) (*http.Request, *backend.Route, error) {
	out := r.Clone(r.Context())
	out.URL.Path = g.cfg.UpstreamFHIRPath + rest
	// Keep the client's escaping of the rest (e.g. an encoded space in an id).
	out.URL.RawPath = g.cfg.UpstreamFHIRPath + strings.TrimPrefix(r.URL.EscapedPath(), g.cfg.FHIRPath)
	if out.URL.RawPath == out.URL.Path || strings.HasSuffix(r.URL.Path, "/") {
		out.URL.RawPath = ""
	}
	out.RequestURI = ""
	// A HEAD is asked upstream as a GET: the gateway judges what it would
	// send (ownership, scopes, the answer's checks) on the body, and the
	// client's HEAD answer then carries the headers only (net/http drops
	// the body). An upstream's own HEAD answer has nothing to judge: HAPI's
	// was a 502 here.
	if out.Method == http.MethodHead {
		out.Method = http.MethodGet
	}
	// The upstream trusts the gateway, not the client: the caller's
	// credentials stay here (an upstream that needs its own goes in the
	// upstream handler's config, e.g. reverse_proxy header_up).
	out.Header.Del("Authorization")
	out.Header.Del("Cookie")
	askJSON(out, raw)
	route, err := g.cfg.Backend.Outbound(out, target(rec))
	if err != nil {
		return nil, nil, fhir.AsError(err)
	}
	if route.Upstream != nil && g.cfg.SetUpstream != nil {
		g.cfg.SetUpstream(out, route.DialAddress())
	}
	return out, route, nil
}

// proxy sends r to the upstream in rec's partition and streams the
// response back, rewritten to publicBase.
func (g *Gateway) proxy(w http.ResponseWriter, r *http.Request, up Upstream, rec *tenancy.Record, rest, publicBase string, in interaction, grants auth.Grants) {
	out, route, err := g.outbound(r, rec, rest, rawBinary(r, in))
	if err != nil {
		fhir.WriteError(w, err)
		return
	}
	tw := &trackingWriter{ResponseWriter: w}
	var sink http.ResponseWriter = tw
	var filter *filteringWriter
	ownership := !g.cfg.TrustUpstreamIsolation || !g.cfg.DisableResponseFilter
	scopeKeep, scopeFast := scopeKeeper(grants), scopeQuick(grants)
	if ownership || scopeKeep != nil {
		shape, err := shaping(in)
		if err != nil {
			fhir.WriteError(w, err)
			return
		}
		var link func(string) string
		if shape != nil {
			out.URL.RawQuery = dropParams(out.URL.RawQuery, shapingParams...)
			link = withShaping(in.query)
		}
		// The filter judges absolute references against the record's own
		// base, so it runs after the rewriter.
		var ownKeep func(map[string]any) bool
		if ownership {
			ownKeep = g.keeper(rec, publicBase)
		}
		// The answer to a write (create, update, patch) is judged like a
		// read: an upstream that matched an If-None-Exist, or a conditional
		// update, elsewhere must not show it. The token's scopes decide
		// only whether its body is shown.
		write := in.isWrite() && !in.bundle && in.kind != auth.InteractionDelete
		keep := both(ownKeep, scopeKeep)
		if write {
			keep = both(ownKeep, func(map[string]any) bool { return true })
		}
		filter = &filteringWriter{
			w: tw, log: g.log, record: rec.ID, limit: g.cfg.MaxBodyBytes, shape: shape,
			keep: keep, write: write, hide: scopeKeep, raw: rawBinary(r, in),
			single: in.kind == auth.InteractionRead || in.kind == auth.InteractionVRead || write,
			opts: fhir.FilterOptions{
				// HAPI serves a paged search (_getpages) to any partition
				// that names its id: its total may count another record's.
				DropTotal: !g.cfg.TrustUpstreamIsolation || in.query.Has("_getpages"),
				DropResourceless: !g.cfg.TrustUpstreamIsolation && !in.keepDeletions &&
					(in.kind == auth.InteractionHistoryInstance || in.kind == auth.InteractionHistoryType),
				Quick: g.combinedQuick(rec, publicBase, ownership, scopeFast),
				// A batch or transaction answer carries search results as
				// nested Bundles: their entries are judged one by one too.
				Nested: true,
				Shape:  shape,
				Link:   link,
			},
		}
		sink = filter
	}
	rw := backend.NewResponseRewriter(sink, route.UpstreamBases, publicBase)
	if in.verified() {
		// Held whole and checked before anything reaches the client.
		res, err := capture(up, out, g.answerLimit(), 0)
		if err != nil {
			g.log.Warn("upstream failed", zap.String("record", rec.ID), zap.Error(err))
			fhir.WriteError(w, writeOutcomeUnknown(in, upstreamError(err)))
			return
		}
		if ferr := verifyAnswer(in, r, res); ferr != nil {
			g.log.Warn("upstream answer refused", zap.String("record", rec.ID), zap.String("method", r.Method),
				zap.String("path", out.URL.Path), zap.Int("status", res.status), zap.String("diagnostics", ferr.Error()))
			fhir.WriteError(w, ferr)
			return
		}
		for k, vs := range res.header {
			rw.Header()[k] = vs
		}
		rw.WriteHeader(res.status)
		_, _ = rw.Write(res.body.Bytes()) // a client gone away is no upstream failure
	} else {
		var to http.ResponseWriter = rw
		if in.streamedBundle() {
			to = &bundleAnswerCheck{ResponseWriter: rw, in: in}
		}
		err = up.ServeHTTP(to, out)
	}
	if err != nil && !tw.wroteHeader {
		g.log.Warn("upstream failed", zap.String("record", rec.ID), zap.Error(err))
		fhir.WriteError(w, upstreamError(err))
		return
	}
	if err != nil {
		// Started and then cut: the client must see an incomplete answer,
		// not a short one that looks whole.
		g.log.Warn("upstream answer cut short", zap.String("record", rec.ID), zap.Error(err))
		panic(http.ErrAbortHandler)
	}
	if cerr := rw.Close(); cerr != nil {
		g.log.Warn("finishing response", zap.String("record", rec.ID), zap.Error(cerr))
	}
	if filter != nil {
		if ferr := filter.Close(); ferr != nil {
			g.log.Warn("filtering response", zap.String("record", rec.ID), zap.Error(ferr))
			panic(http.ErrAbortHandler) // a half-filtered body must not look complete
		}
	}
}

// answerLimit is the most the gateway holds of an upstream answer it checks
// before passing it on: a transaction-response may carry every resource
// the request did, and more.
func (g *Gateway) answerLimit() int {
	return int(min(2*g.cfg.MaxBodyBytes+1<<20, 1<<30))
}

func target(rec *tenancy.Record) backend.Target {
	return backend.Target{RecordID: rec.ID, PartitionID: rec.PartitionID, PartitionName: rec.PartitionName}
}

// StatusError is implemented by upstream errors that carry an HTTP status
// (the Caddy module adapts caddyhttp.HandlerError to it).
type StatusError interface {
	error
	HTTPStatus() int
}

// writeOutcomeUnknown adds to a timeout's answer to a write that the write
// may still happen upstream (the request had been sent), and how to retry
// it safely.
func writeOutcomeUnknown(in interaction, e *fhir.Error) *fhir.Error {
	if e.Status == http.StatusGatewayTimeout && in.isWrite() {
		e.Issues = append(e.Issues, fhir.Issue{Severity: fhir.SeverityInformation, Code: fhir.CodeInformational,
			Diagnostics: "the upstream may still carry out this write: read before repeating it, or repeat a create with If-None-Exist on an identifier"})
	}
	return e
}

// upstreamError is the client's answer when the upstream could not be
// reached or did not answer completely: 504 when it did not answer in time
// (the gateway's own deadline, or the upstream handler's timeouts), the
// upstream handler's status when it has one (reverse_proxy: 502, 503 when
// no upstream is healthy), 502 otherwise.
func upstreamError(err error) *fhir.Error {
	status := http.StatusBadGateway
	var se StatusError
	if errors.As(err, &se) && se.HTTPStatus() >= 400 {
		status = se.HTTPStatus()
	}
	var te interface{ Timeout() bool }
	if errors.As(err, &te) && te.Timeout() {
		status = http.StatusGatewayTimeout
	}
	var msg string
	var tl answerTooLarge
	var ut upstreamTimeout
	switch {
	case errors.As(err, &ut):
		msg = "the upstream FHIR server did not answer within " + ut.after.String()
	case status == http.StatusGatewayTimeout:
		msg = "the upstream FHIR server did not answer in time"
	case errors.Is(err, errAnswerCut):
		msg = "the upstream FHIR server's answer was cut short"
	case errors.As(err, &tl):
		msg = tl.Error()
	case status == http.StatusServiceUnavailable:
		msg = "the upstream FHIR server is unavailable"
	default:
		msg = "the upstream FHIR server could not be reached"
	}
	return fhir.Errorf(status, fhir.CodeTransient, "%s", msg).WithCause(err)
}
