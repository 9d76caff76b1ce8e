package api

import (
	"context"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/tenancy"
)

// healthTimeout bounds the health check's read of the state.
const healthTimeout = 2 * time.Second

// health answers /pfr/v1/health for load balancers: public, 200 while this
// node can read its state (the bbolt file or PostgreSQL), 503 otherwise. It
// says nothing else.
func (a *API) health(w http.ResponseWriter, r *http.Request, _ *Call) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return errMethodNotAllowed("GET, HEAD")
	}
	ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
	defer cancel()
	if err := a.cfg.Tenancy.View(ctx, func(tenancy.Tx) error { return nil }); err != nil {
		a.log.Warn("health check: state unavailable", zap.Error(err))
		return fhir.Errorf(http.StatusServiceUnavailable, fhir.CodeTransient, "this node cannot reach its state")
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	return nil
}
