// Package api is the management API of caddy-pfr, served on the apex host
// under /pfr/v1/: records, members and invitations, the drop-off inbox and
// pick-up, imports, the alert webhook, the access log, the connected apps, the drop-off receipts and the
// health check. It is routed by an http.ServeMux with method-and-path
// patterns; every handler returns its error to one error writer, which
// answers with an OperationOutcome (the model is Caddy's admin API, whose
// handlers return an APIError). What a record needs from the upstream
// (provisioning, deletion, pick-up) is done by the FHIR pipeline, package
// gateway, whose Gateway this API is mounted on.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"path"
	"slices"
	"strings"

	"go.uber.org/zap"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/gateway"
)

// Prefix is where the management API lives on the apex host.
const Prefix = gateway.APIPrefix

// API serves the management API of one gateway.
type API struct {
	gw  *gateway.Gateway
	cfg gateway.Config
	log *zap.Logger
	mux *http.ServeMux
}

// HandlerFunc is a management API handler: it writes its answer, or returns
// the error that the API's one error writer answers with (an
// OperationOutcome with the error's status, see fhir.AsError).
type HandlerFunc func(w http.ResponseWriter, r *http.Request, c *Call) error

// Call is what a handler knows of its request besides the *http.Request:
// the upstream the gateway's own FHIR calls go through, and the caller
// (nil on public routes).
type Call struct {
	Up gateway.Upstream
	ID *auth.Identity
}

// New returns the management API of gw and mounts it on gw's apex host.
func New(gw *gateway.Gateway) *API {
	a := &API{gw: gw, cfg: gw.Config(), log: gw.Logger(), mux: http.NewServeMux()}
	routes := []struct {
		path    string
		public  bool
		methods map[string]HandlerFunc
	}{
		// Public: load balancers ask for health, senders for their
		// receipt's status (the receipt id is the secret). Both answer
		// every method themselves.
		{"health", true, map[string]HandlerFunc{"": a.health}},
		{"receipts/{receipt}", true, map[string]HandlerFunc{"": a.receipt}},

		{"records", false, map[string]HandlerFunc{http.MethodGet: a.listRecords, http.MethodPost: a.createRecord}},
		{"records/{slug}", false, map[string]HandlerFunc{http.MethodGet: a.getRecord, http.MethodDelete: a.deleteRecord}},
		{"records/{slug}/members", false, map[string]HandlerFunc{http.MethodGet: a.listMembers}},
		{"records/{slug}/members/{account}", false, map[string]HandlerFunc{http.MethodPut: a.putMember, http.MethodDelete: a.deleteMember}},
		{"records/{slug}/invitations", false, map[string]HandlerFunc{http.MethodPost: a.createInvitation}},
		{"invitations/{code}/accept", false, map[string]HandlerFunc{http.MethodPost: a.acceptInvitation}},
		{"records/{slug}/dropoffs", false, map[string]HandlerFunc{http.MethodGet: a.listDropOffs}},
		{"records/{slug}/dropoffs/{dropoff}", false, map[string]HandlerFunc{http.MethodGet: a.getDropOff}},
		{"records/{slug}/dropoffs/{dropoff}/pickup", false, map[string]HandlerFunc{http.MethodPost: a.pickUp}},
		{"records/{slug}/dropoffs/{dropoff}/reject", false, map[string]HandlerFunc{http.MethodPost: a.rejectDropOff}},
		{"records/{slug}/webhook", false, map[string]HandlerFunc{http.MethodGet: a.getWebhook, http.MethodPut: a.putWebhook}},
		{"records/{slug}/import", false, map[string]HandlerFunc{http.MethodPost: a.startImport}},
		{"records/{slug}/import/{job}", false, map[string]HandlerFunc{http.MethodGet: a.importStatus}},
		{"records/{slug}/audit", false, map[string]HandlerFunc{http.MethodGet: a.serveAudit}},
		{"records/{slug}/apps", false, map[string]HandlerFunc{http.MethodGet: a.listApps}},
		{"records/{slug}/apps/{client}", false, map[string]HandlerFunc{http.MethodPut: a.grantBackend, http.MethodDelete: a.revokeApp}},
	}
	for _, rt := range routes {
		p := Prefix + rt.path
		var allow []string
		for m, h := range rt.methods {
			if m == "" {
				a.mux.Handle(p, a.handler(h, rt.public))
				continue
			}
			a.mux.Handle(m+" "+p, a.handler(h, rt.public))
			allow = append(allow, m)
		}
		if len(allow) > 0 {
			// The same path without a method: the other methods get a
			// 405 naming the allowed ones (ServeMux's own 405 is not an
			// OperationOutcome).
			slices.Sort(allow)
			a.mux.Handle(p, a.handler(methodNotAllowed(strings.Join(allow, ", ")), rt.public))
		}
	}
	a.mux.Handle("/", a.handler(func(_ http.ResponseWriter, r *http.Request, _ *Call) error {
		return fhir.Errorf(http.StatusNotFound, fhir.CodeNotFound, "no such management resource: %s", r.URL.Path)
	}, false))
	gw.Mount(a)
	return a
}

// upstreamKey carries the request's upstream from ServeApex to the handlers.
type upstreamKey struct{}

// ServeApex serves a request to the apex host (gateway.Apex).
func (a *API) ServeApex(w http.ResponseWriter, r *http.Request, up gateway.Upstream) {
	if !strings.HasPrefix(r.URL.Path, Prefix) {
		a.writeError(w, r, fhir.Errorf(http.StatusNotFound, fhir.CodeNotFound,
			"not found; the management API is under %s", Prefix))
		return
	}
	// One trailing slash is the same resource; a path that is not clean
	// (//, dot segments) names none, instead of ServeMux's redirect.
	p := r.URL.Path
	if trimmed := strings.TrimSuffix(p, "/"); trimmed+"/" == Prefix || path.Clean(trimmed) != trimmed {
		a.handler(func(_ http.ResponseWriter, r *http.Request, _ *Call) error {
			return fhir.Errorf(http.StatusNotFound, fhir.CodeNotFound, "no such management resource: %s", r.URL.Path)
		}, false).ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), upstreamKey{}, up)))
		return
	} else if trimmed != p {
		r = r.Clone(r.Context())
		r.URL.Path, r.URL.RawPath = trimmed, ""
	}
	a.mux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), upstreamKey{}, up)))
}

// handler adapts h: it authenticates the caller (a bearer token for the
// apex, unless public) and hands any error to the error writer.
func (a *API) handler(h HandlerFunc, public bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up, _ := r.Context().Value(upstreamKey{}).(gateway.Upstream)
		c := &Call{Up: up}
		if !public {
			id, err := a.gw.Authenticate(r, []string{origin(r)})
			if err == nil && id == nil {
				err = fhir.Errorf(http.StatusUnauthorized, fhir.CodeLogin, "a bearer token is required").
					WithHeader("WWW-Authenticate", auth.WWWAuthenticate(origin(r), nil))
			}
			if err != nil {
				a.writeError(w, r, err)
				return
			}
			c.ID = id
		}
		if err := h(w, r, c); err != nil {
			a.writeError(w, r, err)
		}
	})
}

// writeError is the one error writer of the API: err as an
// OperationOutcome with its status and headers; an internal error (500) is
// logged with its cause, which the client does not see.
func (a *API) writeError(w http.ResponseWriter, r *http.Request, err error) {
	fe := fhir.AsError(err)
	if fe.Status == http.StatusInternalServerError {
		a.log.Error("management request failed", zap.Int("status", fe.Status), zap.String("method", r.Method),
			zap.String("uri", r.RequestURI), zap.Error(err))
	}
	fhir.WriteError(w, fe)
}

// methodNotAllowed answers the methods a path does not serve.
func methodNotAllowed(allow string) HandlerFunc {
	return func(http.ResponseWriter, *http.Request, *Call) error {
		return errMethodNotAllowed(allow)
	}
}

func errMethodNotAllowed(allow string) error {
	return fhir.Errorf(http.StatusMethodNotAllowed, fhir.CodeNotSupported, "method not allowed; use %s", allow).
		WithHeader("Allow", allow)
}

// origin is scheme://host[:port] as the client addressed the gateway.
func origin(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + strings.ToLower(r.Host)
}

// writeJSON writes a management API body.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	gateway.WriteJSON(w, status, v)
	return nil
}

// decodeSmallJSON decodes a small management request body into v.
func decodeSmallJSON(w http.ResponseWriter, r *http.Request, v any) error {
	return decodeJSONBody(w, r, 64<<10, v)
}

// decodeJSONBody decodes a management request body of at most limit bytes
// into v, refusing unknown fields.
func decodeJSONBody(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		return fhir.Errorf(http.StatusRequestEntityTooLarge, fhir.CodeTooCostly, "request body too large (max %d bytes)", limit)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fhir.Errorf(http.StatusBadRequest, fhir.CodeStructure, "invalid JSON body: %v", err)
	}
	return nil
}

// decodeOptionalJSON decodes a small body into v; an empty body leaves v as it is.
func decodeOptionalJSON(w http.ResponseWriter, r *http.Request, v any) error {
	if r.ContentLength == 0 && r.Header.Get("Content-Type") == "" {
		return nil
	}
	err := decodeSmallJSON(w, r, v)
	var fe *fhir.Error
	if errors.As(err, &fe) && strings.Contains(fe.Error(), "EOF") {
		return nil
	}
	return err
}
