package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"

	"go.uber.org/zap"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/backend"
	"github.com/pfrgateway/caddy-pfr/fhir"
)

// SMARTConfig says what a record's /.well-known/smart-configuration shows.
type SMARTConfig struct {
	// Issuer is the trusted issuer whose OIDC discovery document the
	// configuration is built from. Default: the first trusted issuer that
	// has one.
	Issuer string
	// Overrides replace or add top-level members of the document.
	Overrides map[string]any
	// PatientContext says the external provider puts the record's Patient
	// in token responses, so the configuration may claim
	// context-standalone-patient.
	PatientContext bool
}

const smartConfigPath = "/.well-known/smart-configuration"

// defaultCapabilities are the SMART capabilities an external provider's
// configuration claims: the gateway enforces v1 and v2 scopes for patient,
// user and system contexts, and works with any client type the provider
// supports. context-standalone-patient is added only when the provider
// supplies the patient (SMARTConfig.PatientContext).
var defaultCapabilities = []string{
	"launch-standalone", "client-public", "client-confidential-symmetric", "client-confidential-asymmetric",
	"sso-openid-connect", "permission-patient", "permission-user",
	"permission-v1", "permission-v2", "permission-offline",
}

// usableGrants are the grant types a SMART app can use with the gateway:
// a provider's others (implicit, password, device code, …) are not
// copied into the configuration.
var usableGrants = []string{"authorization_code", "refresh_token", "client_credentials"}

// smartConfiguration builds the SMART configuration document of the
// record at slug from the authorization server's discovery document.
func (g *Gateway) smartConfiguration(ctx context.Context, slug string) (map[string]any, error) {
	if g.cfg.Authz != nil && g.cfg.SMART.Issuer == "" {
		// The built-in server: every member true to what it does.
		out := g.cfg.Authz.SMARTConfiguration(slug)
		for k, v := range g.cfg.SMART.Overrides {
			out[k] = v
		}
		return out, nil
	}
	issuers := g.cfg.Verifier.Issuers()
	if g.cfg.SMART.Issuer != "" {
		issuers = []string{g.cfg.SMART.Issuer}
	}
	var disc map[string]any
	var lastErr error
	for _, iss := range issuers {
		d, err := g.cfg.Verifier.Discovery(ctx, iss)
		if err == nil {
			disc = d
			break
		}
		lastErr = err
	}
	if disc == nil && len(g.cfg.SMART.Overrides) == 0 {
		return nil, fhir.Errorf(http.StatusNotFound, fhir.CodeNotFound,
			"no SMART authorization server is configured for this gateway").WithCause(lastErr)
	}
	caps := slices.Clone(defaultCapabilities)
	if g.cfg.SMART.PatientContext {
		caps = append(caps, "context-standalone-patient")
	}
	out := map[string]any{
		"response_types_supported":         []string{"code"},
		"code_challenge_methods_supported": []string{"S256"},
		"grant_types_supported":            []string{"authorization_code", "client_credentials"},
		"capabilities":                     caps,
	}
	for _, k := range []string{
		"issuer", "jwks_uri", "authorization_endpoint", "token_endpoint", "token_endpoint_auth_methods_supported",
		"token_endpoint_auth_signing_alg_values_supported", "registration_endpoint", "introspection_endpoint",
		"revocation_endpoint", "userinfo_endpoint", "scopes_supported", "end_session_endpoint",
	} {
		if v, ok := disc[k]; ok {
			out[k] = v
		}
	}
	// Only what is true here: the provider's grant types the gateway's
	// apps can use (no implicit or password), and the code flow.
	if provided, ok := disc["grant_types_supported"].([]any); ok {
		var grants []string
		for _, gt := range provided {
			if s, ok := gt.(string); ok && slices.Contains(usableGrants, s) {
				grants = append(grants, s)
			}
		}
		out["grant_types_supported"] = grants
	}
	for k, v := range g.cfg.SMART.Overrides {
		out[k] = v
	}
	return out, nil
}

// serveSMARTConfig answers GET /.well-known/smart-configuration, public.
func (g *Gateway) serveSMARTConfig(w http.ResponseWriter, r *http.Request, slug string) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		fhir.WriteError(w, fhir.Errorf(http.StatusMethodNotAllowed, fhir.CodeNotSupported, "method not allowed; use GET").
			WithHeader("Allow", "GET"))
		return
	}
	doc, err := g.smartConfiguration(r.Context(), slug)
	if err != nil {
		fhir.WriteError(w, err)
		return
	}
	if g.bulk != nil {
		advertiseExportScopes(doc)
	}
	w.Header().Set("Cache-Control", "public, max-age=300")
	WriteJSON(w, http.StatusOK, doc)
}

// serveMetadata serves the upstream's CapabilityStatement, public, with the
// SMART security section added to every server rest entry.
func (g *Gateway) serveMetadata(w http.ResponseWriter, rq *request) {
	r, rec := rq.r, rq.rec
	if err := checkFormat(r, interaction{kind: auth.InteractionRead, typ: "CapabilityStatement", query: r.URL.Query()}); err != nil {
		fhir.WriteError(w, err)
		return
	}
	out, route, err := g.outbound(rq, false)
	if err != nil {
		fhir.WriteError(w, err)
		return
	}
	res, err := call(rq.up, out)
	if err != nil {
		g.log.Warn("upstream metadata failed", zap.String("record", rec.ID), zap.Error(err))
		fhir.WriteError(w, upstreamError(err))
		return
	}
	if ferr := verifyAnswer(interaction{kind: auth.InteractionRead, typ: "CapabilityStatement"}, r, res); ferr != nil {
		g.log.Warn("upstream metadata refused", zap.String("record", rec.ID), zap.String("diagnostics", ferr.Error()))
		fhir.WriteError(w, ferr)
		return
	}
	body := res.body.Bytes()
	if res.status == http.StatusOK {
		smart, _ := g.smartConfiguration(r.Context(), rec.Slug) // nil: no authorization server to announce
		body = adaptCapabilities(body, smart, rq.base)
		if g.bulk != nil {
			body = advertiseExport(body)
		}
	}
	for k, vs := range res.header {
		w.Header()[k] = vs
	}
	w.Header().Del("Content-Length")
	rw := backend.NewResponseRewriter(w, route.UpstreamBases, rq.base)
	rw.WriteHeader(res.status)
	_, _ = rw.Write(body)
	if err := rw.Close(); err != nil {
		g.log.Warn("finishing metadata response", zap.Error(err))
	}
}

// adaptCapabilities makes the upstream's CapabilityStatement the record's:
// its own base where the statement names the server's (see
// pinCapabilityBase) and, when smart is not nil, rest.security saying
// "SMART-on-FHIR" with the oauth-uris extension. A body that is not a
// CapabilityStatement is returned unchanged.
func adaptCapabilities(body []byte, smart map[string]any, publicBase string) []byte {
	var cs map[string]any
	if json.Unmarshal(body, &cs) != nil || cs["resourceType"] != "CapabilityStatement" {
		return body
	}
	pinCapabilityBase(cs, publicBase)
	// The gateway speaks FHIR JSON only (format.go), whatever the
	// upstream offers.
	cs["format"] = []any{"application/fhir+json", "json"}
	if smart != nil {
		addSMARTSecurity(cs, smart)
	}
	out, err := json.Marshal(cs)
	if err != nil {
		return body
	}
	return out
}

// pinCapabilityBase puts publicBase where a CapabilityStatement names the
// server's own base: implementation.url and every operation definition on
// it. HAPI FHIR builds one CapabilityStatement for all callers from the
// first request's address (another record's host and partition) and caches
// it, so rewriting the upstream bases of this request is not enough.
func pinCapabilityBase(cs map[string]any, publicBase string) {
	if impl, ok := cs["implementation"].(map[string]any); ok {
		impl["url"] = publicBase
	}
	pinOps := func(ops any) {
		list, _ := ops.([]any)
		for _, o := range list {
			op, _ := o.(map[string]any)
			def, _ := op["definition"].(string)
			if i := strings.Index(def, "/OperationDefinition/"); i >= 0 && (strings.HasPrefix(def, "http://") || strings.HasPrefix(def, "https://")) {
				op["definition"] = publicBase + def[i:]
			}
		}
	}
	rests, _ := cs["rest"].([]any)
	for _, r := range rests {
		rest, _ := r.(map[string]any)
		pinOps(rest["operation"])
		resources, _ := rest["resource"].([]any)
		for _, res := range resources {
			m, _ := res.(map[string]any)
			pinOps(m["operation"])
		}
	}
}

// addSMARTSecurity sets rest.security of every server rest entry: the
// "SMART-on-FHIR" service and the oauth-uris extension.
func addSMARTSecurity(cs map[string]any, smart map[string]any) {
	uris := []any{}
	for _, p := range [][2]string{{"authorize", "authorization_endpoint"}, {"token", "token_endpoint"},
		{"register", "registration_endpoint"}, {"revoke", "revocation_endpoint"}, {"introspect", "introspection_endpoint"}} {
		if v, ok := smart[p[1]].(string); ok && v != "" {
			uris = append(uris, map[string]any{"url": p[0], "valueUri": v})
		}
	}
	security := map[string]any{
		"cors": true,
		"service": []any{map[string]any{
			"coding": []any{map[string]any{
				"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
				"code":   "SMART-on-FHIR", "display": "SMART-on-FHIR",
			}},
			"text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)",
		}},
		"extension": []any{map[string]any{
			"url":       "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
			"extension": uris,
		}},
	}
	rests, _ := cs["rest"].([]any)
	for _, r := range rests {
		if m, ok := r.(map[string]any); ok && (m["mode"] == "server" || m["mode"] == nil) {
			m["security"] = security
		}
	}
}
