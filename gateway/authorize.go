package gateway

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/tenancy"
)

// allowedOperations are the FHIR operations a record's callers may invoke;
// everything else (notably partition management and $expunge) is refused.
//
// Each is allowed only at the levels where it cannot reach across
// partitions: nothing at system level ([base]/$op answers for the whole
// server on some upstreams, e.g. HAPI's $meta lists every partition's tags),
// and operations on one Patient only on the record's own.
var allowedOperations = map[string]opLevels{
	"$everything": {instance: true, ownPatientOnly: true},
	"$summary":    {instance: true, ownPatientOnly: true},
	"$meta":       {instance: true},
	"$validate":   {typ: true, instance: true},
	"$lastn":      {typ: true},
	"$docref":     {typ: true},
}

// opLevels says where an operation may be invoked.
type opLevels struct {
	typ, instance  bool
	ownPatientOnly bool // only as Patient/{the record's Patient}/$op
}

// grantsFor returns the SMART grants of a caller: the token's scopes, or the
// configured default when the token carries no resource scopes.
func (g *Gateway) grantsFor(id *auth.Identity) auth.Grants {
	grants := id.Grants()
	if !grants.HasResourceScopes() {
		return auth.ParseScopes(g.cfg.ScopesWhenAbsent)
	}
	return grants
}

// authorize decides whether the caller's role and grants allow in (the
// request's interaction, or a Bundle entry's) on the record. A read of one
// resource under a query-restricted scope may be allowed only once the
// resource is seen: then it returns needsMatch.
func (g *Gateway) authorize(rq *request, in interaction) (needsMatch bool, err error) {
	if in.isWrite() && !rq.role.CanWrite() {
		return false, fhir.Errorf(http.StatusForbidden, fhir.CodeForbidden,
			"role %q may read this record but not write to it", rq.role)
	}
	if in.bundle {
		return false, nil // its entries are authorized one by one (checkBundleEntries)
	}
	if in.kind == auth.InteractionOperation {
		if err := checkOperation(rq.rec, in); err != nil {
			return false, err
		}
	}
	for _, req := range in.scopeRequests() {
		ok, missing := rq.grants.Allows(req)
		if ok {
			continue
		}
		if (req.Interaction == auth.InteractionRead || req.Interaction == auth.InteractionVRead) && restrictedOnly(rq.grants, req) {
			needsMatch = true
			continue
		}
		return false, insufficientScope(rq.base, missing)
	}
	return needsMatch, nil
}

// restrictedOnly reports whether a query-restricted scope could allow req
// once the resource is known.
func restrictedOnly(grants auth.Grants, req auth.Request) bool {
	ok, _ := grants.AllowsWith(req, func(url.Values) bool { return true })
	return ok
}

// checkOperation refuses operations outside the allow-list, and
// $everything on any Patient but the record's own.
func checkOperation(rec *tenancy.Record, in interaction) error {
	op := in.opName
	levels, ok := allowedOperations[op]
	if !ok {
		return fhir.Errorf(http.StatusForbidden, fhir.CodeForbidden, "the operation %s is not available on a Personal FHIR Record", op)
	}
	switch {
	case levels.ownPatientOnly && (in.typ != "Patient" || in.id != rec.PatientID):
		return fhir.Errorf(http.StatusForbidden, fhir.CodeForbidden,
			"%s is available as Patient/%s/%s, on this record's own Patient", op, rec.PatientID, op)
	case in.typ == "":
		return fhir.Errorf(http.StatusForbidden, fhir.CodeForbidden, "%s is not available at the server level of a Personal FHIR Record", op)
	case in.id == "" && !levels.typ:
		return fhir.Errorf(http.StatusForbidden, fhir.CodeForbidden, "%s is available on one resource, as %s/{id}/%s", op, in.typ, op)
	case in.id != "" && !levels.instance:
		return fhir.Errorf(http.StatusForbidden, fhir.CodeForbidden, "%s is available on the type, as %s/%s", op, in.typ, op)
	}
	return nil
}

func insufficientScope(realm, missing string) *fhir.Error {
	return fhir.Errorf(http.StatusForbidden, fhir.CodeForbidden,
		"the token's scopes do not allow this; it needs %s", missing).
		WithHeader("WWW-Authenticate", auth.WWWAuthenticateInsufficientScope(realm, missing))
}

// checkBundleEntries authorizes every entry of a batch or transaction
// Bundle, so a Bundle cannot do what its entries could not do alone.
func (g *Gateway) checkBundleEntries(rq *request, bundle map[string]any) error {
	return forEachEntry(bundle, func(i int, in interaction) error {
		needsMatch, err := g.authorize(rq, in)
		if err != nil {
			return err
		}
		if needsMatch {
			return insufficientScope(rq.base, fmt.Sprintf("an unrestricted read scope for %s (Bundle.entry[%d])", in.typ, i))
		}
		return nil
	})
}

// forEachEntry classifies the request of every entry of a batch or
// transaction Bundle and calls fn with it; an error names the entry.
func forEachEntry(bundle map[string]any, fn func(i int, in interaction) error) error {
	entries, _ := bundle["entry"].([]any)
	for i, e := range entries {
		entry, _ := e.(map[string]any)
		req, _ := entry["request"].(map[string]any)
		method, _ := req["method"].(string)
		rawURL, _ := req["url"].(string)
		in, err := classifyEntry(method, rawURL)
		if err == nil {
			err = fn(i, in)
		}
		if err != nil {
			return fhir.AsError(err).WithExpression(fmt.Sprintf("Bundle.entry[%d].request", i))
		}
	}
	return nil
}

// classifyEntry classifies a Bundle entry's request: a relative URL only,
// no host, no dot segments, no nested Bundles.
func classifyEntry(method, rawURL string) (interaction, error) {
	if method == "" || rawURL == "" {
		return interaction{}, fhir.Errorf(http.StatusBadRequest, fhir.CodeRequired, "every entry needs request.method and request.url")
	}
	path, rawQuery, _ := strings.Cut(rawURL, "?")
	if !strings.HasPrefix(path, "//") {
		path = strings.TrimPrefix(path, "/") // as the official batch example writes them
	}
	if strings.Contains(path, "://") || strings.HasPrefix(path, "/") || strings.HasPrefix(path, "\\") || strings.Contains(path, ":") {
		return interaction{}, fhir.Errorf(http.StatusBadRequest, fhir.CodeInvalid, "entry URLs must be relative to this record's base: %q", rawURL)
	}
	lower := strings.ToLower(path)
	if strings.Contains(lower, "%2f") || strings.Contains(lower, "%2e") || strings.Contains(lower, "%5c") ||
		strings.Contains(path, "..") || strings.Contains(path, "//") || strings.Contains(path, "\\") {
		return interaction{}, fhir.Errorf(http.StatusBadRequest, fhir.CodeInvalid, "entry URL %q has encoded or dot segments", rawURL)
	}
	q, err := parseQuery(rawQuery)
	if err != nil {
		return interaction{}, err
	}
	in, err := classify(strings.ToUpper(method), "/"+path, q)
	if err != nil {
		return interaction{}, err
	}
	if in.bundle {
		return interaction{}, fhir.Errorf(http.StatusBadRequest, fhir.CodeNotSupported, "a Bundle entry cannot post another Bundle to the base")
	}
	return in, nil
}
