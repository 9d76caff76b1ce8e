package gateway

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/pfrgateway/caddy-pfr/dopu"
	"github.com/pfrgateway/caddy-pfr/tenancy"
)

// serveAuthz hands the built-in authorization server its requests on the
// apex, with what its consent page needs to name the person: the
// request's upstream, through the context.
func (g *Gateway) serveAuthz(w http.ResponseWriter, r *http.Request, up Upstream) {
	ctx := context.WithValue(r.Context(), authzRequestKey{}, authzRequest{r: r, up: up})
	g.cfg.Authz.ServeHTTP(w, r.WithContext(ctx))
}

type authzRequestKey struct{}

type authzRequest struct {
	r  *http.Request
	up Upstream
}

// patientName reads the record's Patient for the consent page and returns
// its name ("" when it cannot be read in a second: the page names the
// record's address anyway).
func (g *Gateway) patientName(ctx context.Context, rec *tenancy.Record) string {
	ar, ok := ctx.Value(authzRequestKey{}).(authzRequest)
	if !ok || rec.PatientID == "" {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	patient, _, err := g.RecordPatient(ar.r.WithContext(ctx), ar.up, rec)
	if err != nil {
		return ""
	}
	sum := dopu.SummarizePatient(patient)
	if sum == nil || len(sum.Names) == 0 {
		return ""
	}
	n := sum.Names[0]
	if n.Text != "" {
		return n.Text
	}
	return strings.TrimSpace(strings.Join(n.Given, " ") + " " + n.Family)
}
