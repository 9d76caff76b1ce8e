package gateway

import (
	"errors"
	"net/http"
	"net/url"
	"path"
	"slices"
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
		rq := &request{r: r, up: up, base: origin(r) + g.cfg.FHIRPath, rest: rest}
		err = g.serveFHIR(sw, rq, slug, &ae)
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

// serveFHIR authenticates, authorizes and proxies one FHIR request. rq
// holds the request, its upstream, base and path; serveFHIR fills in the
// rest as it learns it.
func (g *Gateway) serveFHIR(w http.ResponseWriter, rq *request, slug string, ae *auditEntry) error {
	r := rq.r
	// Public: the CapabilityStatement.
	if rq.rest == "/metadata" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		rec, _, err := g.recordAndRole(r, slug, nil)
		if err != nil {
			return err
		}
		rq.rec = rec
		g.serveMetadata(w, rq)
		return nil
	}
	query, err := parseQuery(r.URL.RawQuery)
	if err != nil {
		return err
	}
	if rq.id, err = g.authenticate(r, []string{rq.base}); err != nil {
		return err
	}
	if rq.rec, rq.role, err = g.recordAndRole(r, slug, rq.id); err != nil {
		return err
	}
	ae.rec, ae.id = rq.rec, rq.id
	// Drop-off: a Bundle from someone who may not write here is parked for
	// the record's owners instead of refused.
	if g.cfg.DOPU != nil && isDropOffTarget(r, rq.rest) && !rq.role.CanWrite() {
		ae.action, ae.interaction = "C", "dropoff"
		return g.dropOff(w, rq, ae)
	}
	if rq.id == nil {
		return fhir.Errorf(http.StatusUnauthorized, fhir.CodeLogin, "a bearer token is required to access this record").
			WithHeader("WWW-Authenticate", auth.WWWAuthenticate(rq.base, nil))
	}
	rq.grants = g.grantsFor(rq.id)
	if handled, err := g.serveBulk(w, rq, query, ae); handled {
		return err
	}
	if rq.in, err = classify(r.Method, rq.rest, query); err != nil {
		return err
	}
	if err := checkFormat(r, rq.in); err != nil {
		return err
	}
	ae.fromInteraction(rq.in)
	if rq.role == "" {
		g.log.Info("access denied: not a member",
			zap.String("record", rq.rec.ID), zap.String("iss", rq.id.Issuer), zap.String("sub", rq.id.Subject))
		return fhir.Errorf(http.StatusForbidden, fhir.CodeForbidden, "you have no access to this Personal FHIR Record")
	}
	if rq.in.kind == auth.InteractionSearch && r.Method == http.MethodPost {
		// POST _search carries its parameters in a form body: the scope
		// check must see them.
		form, err := readSearchForm(w, r)
		if err != nil {
			return err
		}
		for k, vs := range form {
			rq.in.query[k] = append(rq.in.query[k], vs...)
		}
	}
	var bundleDoc map[string]any
	if rq.in.bundle {
		_, bundle, err := g.readBundle(w, r)
		if err != nil {
			return err
		}
		if t, _ := bundle["type"].(string); t != "batch" && t != "transaction" {
			return fhir.Errorf(http.StatusBadRequest, fhir.CodeInvalid,
				"only batch and transaction Bundles can be posted to the base (got type %q)", t)
		}
		if err := g.checkBundleEntries(rq, bundle); err != nil {
			return err
		}
		bundleDoc = bundle
		entries, _ := bundle["entry"].([]any)
		rq.in.bundleType, _ = bundle["type"].(string)
		rq.in.entries = len(entries)
	}
	needsMatch, err := g.authorize(rq, rq.in)
	if err != nil {
		return err
	}
	switch {
	case rq.in.bundle:
		if err := g.patchEntriesToUpdates(rq, bundleDoc); err != nil {
			return err
		}
		if err := g.resolveConditionalReferences(rq, bundleDoc); err != nil {
			return err
		}
		if err := fhir.OwnershipError(rq.owner().CheckBundle(bundleDoc, g.cfg.Ownership)); err != nil {
			return err
		}
		if err := g.iso.prepareBundle(rq, bundleDoc); err != nil {
			return err
		}
		if err := setJSONBody(r, bundleDoc); err != nil {
			return err
		}
	case rq.in.isWrite():
		res, err := g.checkWrite(w, rq)
		if err != nil {
			return err
		}
		if err := g.iso.prepareWrite(rq, res); err != nil {
			return err
		}
	case g.iso.countsItself(rq.in):
		return g.serveCount(w, rq)
	}
	if needsMatch {
		return g.proxyRestrictedRead(w, rq)
	}
	g.proxy(w, rq)
	return nil
}

// recordAndRole returns the active record at slug and the role of the
// caller (none for an anonymous caller or a non-member), read together
// (tenancy.Access: from memory while the state's generation is unchanged,
// on every node); a missing or inactive record is a 404.
func (g *Gateway) recordAndRole(r *http.Request, slug string, id *auth.Identity) (*tenancy.Record, tenancy.Role, error) {
	var iss, sub string
	if id != nil {
		iss, sub = id.Issuer, id.Subject
	}
	rec, role, err := tenancy.Access(r.Context(), g.cfg.Tenancy, slug, iss, sub)
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
	// The path as sent, where it differs from Path's default encoding
	// (net/url keeps it only then): an encoded separator ("%2F", "%2e")
	// always makes it differ. Without it, an escape in the request could
	// only be of a byte escaped by default, a backslash at most, which the
	// check on p below refuses. (EscapedPath would escape Path anew on
	// every request to say the same.)
	if raw := r.URL.RawPath; strings.IndexByte(raw, '%') >= 0 {
		lower := strings.ToLower(raw)
		if strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c") || strings.Contains(lower, "%2e") {
			return "", errSeparators()
		}
	}
	if strings.Contains(p, "\\") || strings.Contains(p, "//") {
		return "", errSeparators()
	}
	// A dot segment follows a slash (p starts with one).
	if strings.Contains(p, "/.") {
		if clean := path.Clean(p); clean != strings.TrimSuffix(p, "/") && clean != p {
			return "", fhir.Errorf(http.StatusBadRequest, fhir.CodeInvalid, "dot segments are not allowed in FHIR paths")
		}
	}
	for _, k := range methodOverrides {
		if v := r.Header[k]; len(v) > 0 && v[0] != "" { // Header.Get, without canonicalizing k anew
			return "", fhir.Errorf(http.StatusBadRequest, fhir.CodeNotSupported, "HTTP method overrides are not supported")
		}
	}
	return strings.TrimSuffix(strings.TrimPrefix(p, g.cfg.FHIRPath), "/"), nil
}

// methodOverrides are the headers that would change a request's method
// for some servers, in the canonical spelling net/http keys them by.
var methodOverrides = []string{
	http.CanonicalHeaderKey("X-HTTP-Method-Override"),
	http.CanonicalHeaderKey("X-HTTP-Method"),
	http.CanonicalHeaderKey("X-Method-Override"),
}

// errSeparators refuses a FHIR path with encoded or doubled separators.
func errSeparators() *fhir.Error {
	return fhir.Errorf(http.StatusBadRequest, fhir.CodeInvalid, "encoded or doubled separators are not allowed in FHIR paths")
}

// outbound clones r for the upstream: the path below the upstream's FHIR
// base, no client credentials, and the record's partition.
//
// The upstream is asked for FHIR JSON, the only format the gateway checks,
// unless raw: the content of a Binary (see format.go).
func (g *Gateway) outbound(rq *request, raw bool) (*http.Request, *backend.Route, error) {
	return g.outboundInto(nil, rq, raw)
}

// outboundInto is outbound building the upstream's request in x when it
// can (see exchange.request); x may be nil.
func (g *Gateway) outboundInto(x *exchange, rq *request, raw bool) (*http.Request, *backend.Route, error) {
	r := rq.r
	out := x.request(r)
	out.URL.Path = g.cfg.UpstreamFHIRPath + rq.rest
	// Keep the client's escaping of the rest (e.g. an encoded space in an
	// id). Without a RawPath the client's escaping is Path's default
	// encoding, which the upstream request gets without one too.
	out.URL.RawPath = ""
	if r.URL.RawPath != "" && !strings.HasSuffix(r.URL.Path, "/") {
		if raw := g.cfg.UpstreamFHIRPath + strings.TrimPrefix(r.URL.EscapedPath(), g.cfg.FHIRPath); raw != out.URL.Path {
			out.URL.RawPath = raw
		}
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
	askJSON(out, raw)
	route, err := g.cfg.Backend.Outbound(out, rq.target())
	if err != nil {
		return nil, nil, fhir.AsError(err)
	}
	if route.Upstream != nil && g.cfg.SetUpstream != nil {
		g.cfg.SetUpstream(out, route.DialAddress())
	}
	return out, route, nil
}

// upstreamCopy is the client's request r made the upstream's: built
// directly (not r.Clone, which copies what a request to the upstream
// does not change: its body, form, TLS state and context are shared, read
// only), with its own URL and header (and trailer, which the backend
// strips), and without the caller's credentials: the upstream trusts the
// gateway, not the client (an upstream that needs its own goes in the
// upstream handler's config, e.g. reverse_proxy header_up).
func upstreamCopy(r *http.Request) *http.Request {
	out, u := new(http.Request), new(url.URL)
	copyForUpstream(out, u, nil, nil, r)
	return out
}

// copyForUpstream makes *out the upstream's copy of r (upstreamCopy) with
// *u as its URL, its header in into (a map to fill, or nil for a new one)
// and the header's values in values when they fit.
func copyForUpstream(out *http.Request, u *url.URL, into http.Header, values []string, r *http.Request) {
	*out = *r
	*u = *r.URL
	out.URL = u
	out.Header = headerWithout(into, values, r.Header, "Authorization", "Cookie")
	if r.Trailer != nil {
		out.Trailer = r.Trailer.Clone()
	}
}

// headerWithout is h.Clone() without the (canonical) names given, in the
// same two allocations, or none: into, when not nil, is the (empty) map
// to fill, and values the memory for the values when they fit in it.
func headerWithout(into http.Header, values []string, h http.Header, names ...string) http.Header {
	skip := func(k string) bool { return slices.Contains(names, k) }
	nv := 0
	for k, vv := range h {
		if !skip(k) {
			nv += len(vv)
		}
	}
	if cap(values) >= nv {
		values = values[:nv]
	} else {
		values = make([]string, nv)
	}
	out := into
	if out == nil {
		out = make(http.Header, len(h))
	}
	for k, vv := range h {
		if skip(k) || vv == nil {
			continue
		}
		n := copy(values, vv)
		out[k] = values[:n:n]
		values = values[n:]
	}
	return out
}

// proxy sends the request to the upstream in the record's partition and
// streams the response back, rewritten to the record's base and filtered.
func (g *Gateway) proxy(w http.ResponseWriter, rq *request) {
	x := newExchange()
	g.proxyWith(w, x, rq)
	x.done() // not after a panic, which passes it by: see exchange.done
}

// proxyWith is proxy with its objects in x.
func (g *Gateway) proxyWith(w http.ResponseWriter, x *exchange, rq *request) {
	r, in, rec := rq.r, rq.in, rq.rec
	out, route, err := g.outboundInto(x, rq, rawBinary(r, in))
	if err != nil {
		fhir.WriteError(w, err)
		return
	}
	x.tw = trackingWriter{ResponseWriter: w}
	tw := &x.tw
	var sink http.ResponseWriter = tw
	var filter *filteringWriter
	ownership := g.iso.filters()
	scopeKeep, scopeFast := scopeKeeper(rq.grants), scopeQuick(rq.grants)
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
			ownKeep = g.keeper(rq)
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
		// What the upstream's answer may tell of others (totals,
		// deletions) is the isolation policy's.
		opts := g.iso.filterOptions(in)
		opts.Quick = g.combinedQuick(rq, ownership, scopeFast)
		// A batch or transaction answer carries search results as nested
		// Bundles: their entries are judged one by one too.
		opts.Nested = true
		opts.Shape, opts.Link = shape, link
		x.filter = filteringWriter{
			w: tw, log: g.log, record: rec.ID, limit: g.cfg.MaxBodyBytes, shape: shape,
			keep: keep, write: write, hide: scopeKeep, raw: rawBinary(r, in),
			single: in.kind == auth.InteractionRead || in.kind == auth.InteractionVRead || write,
			opts:   opts,
		}
		filter = &x.filter
		sink = filter
	}
	rw := &x.rw
	rw.Reset(sink, route.UpstreamBases, rq.base)
	// A Bundle the filter judges is held by the filter (up to its limit)
	// and sent with the length of what it keeps: the rewriter need not
	// hold it too.
	rw.Unbuffered = filter != nil && !filter.single
	if in.verified() {
		// Held whole and checked before anything reaches the client.
		res, err := captureInto(x.answer(), rq.up, out, g.answerLimit(), 0)
		if err != nil {
			g.log.Warn("upstream failed", zap.String("record", rec.ID), zap.Error(err))
			fhir.WriteError(w, writeOutcomeUnknown(in, upstreamError(err)))
			return
		}
		defer res.release() // written on (copied) by the time proxy returns
		if ferr := verifyAnswer(in, r, res); ferr != nil {
			g.log.Warn("upstream answer refused", zap.String("record", rec.ID), zap.String("method", r.Method),
				zap.String("path", out.URL.Path), zap.Int("status", res.status), zap.String("diagnostics", ferr.Error()))
			fhir.WriteError(w, ferr)
			return
		}
		if filter != nil && filter.single && res.judged {
			filter.known, filter.knownBody = &res.facts, res.body.Bytes()
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
		err = rq.up.ServeHTTP(to, out)
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

// target is rec's partition, as the backend maps it upstream.
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
