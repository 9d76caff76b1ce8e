package gateway

import (
	"encoding/json"
	"net"
	"net/http"
	"strings"

	"go.uber.org/zap"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/tenancy"
)

// What the management API (package api) asks of the pipeline: the
// gateway's configuration, the caller's identity, a record's address, and
// the record operations that go through the upstream in the record's
// partition under the pipeline's rules (provisioning, deletion, pick-up,
// see inbox.go).

// APIPrefix is where the management API lives on the apex host.
const APIPrefix = "/pfr/v1/"

// Apex serves the apex host (the management API, mounted with Mount).
type Apex interface {
	ServeApex(w http.ResponseWriter, r *http.Request, up Upstream)
}

// Mount makes a serve the apex host. Call it once, before serving.
func (g *Gateway) Mount(a Apex) { g.apex = a }

// Config returns the gateway's configuration, defaults applied.
func (g *Gateway) Config() Config { return g.cfg }

// Logger returns the gateway's logger.
func (g *Gateway) Logger() *zap.Logger { return g.log }

// Authenticate verifies r's bearer token, if any, for one of audiences:
// nil without a token, an error (401) for a bad one.
func (g *Gateway) Authenticate(r *http.Request, audiences []string) (*auth.Identity, error) {
	return g.authenticate(r, audiences)
}

// RecordBase is the FHIR base URL of the record at slug, on the scheme and
// port the client used to reach the gateway.
func (g *Gateway) RecordBase(r *http.Request, slug string) string {
	return scheme(r) + "://" + slug + "." + g.cfg.BaseDomain + portOf(r.Host) + g.cfg.FHIRPath
}

// apexOrigin is the apex's origin, on the scheme and port the client used.
func (g *Gateway) apexOrigin(r *http.Request) string {
	return scheme(r) + "://" + g.cfg.BaseDomain + portOf(r.Host)
}

// portOf returns ":port" of a Host header, or "".
func portOf(hostport string) string {
	if _, port, err := net.SplitHostPort(hostport); err == nil && port != "" {
		return ":" + port
	}
	return ""
}

// AuditAction records a management action on rec, done by id.
func (g *Gateway) AuditAction(r *http.Request, rec *tenancy.Record, id *auth.Identity, status int, action, interaction, target, detail string) {
	g.audit(r, status, &auditEntry{rec: rec, id: id, action: action, interaction: interaction, target: target, detail: detail})
}

// Deprovision removes rec's partition and data upstream, within the
// deadline of the gateway's own calls; the caller has taken the record
// offline first.
func (g *Gateway) Deprovision(r *http.Request, up Upstream, rec *tenancy.Record) error {
	bounded, cancel := g.ownCallsDeadline(r)
	err := g.cfg.Backend.Deprovision(bounded.Context(), adopting(bounded, up), target(rec))
	cancel()
	if err != nil {
		g.log.Error("deleting a record's partition upstream", zap.String("record", rec.ID), zap.Error(err))
		return upstreamStepError("the upstream could not delete the record's data; the record is offline, try again", err)
	}
	return nil
}

// NewPatient checks the Patient a record is created for and strips what
// the server assigns (id, meta). It is decoded at the same door as every
// write (fhir.DecodeResource) and judged by the same ownership rules
// (fhir.Owner.CheckNewPatient): no link to another Patient, no contained
// Patient, no reference into a record that holds nothing yet. On an
// upstream that is not trusted to isolate partitions it carries the
// record's stamp like every write (the record id is not known yet: the
// caller stamps it).
func (g *Gateway) NewPatient(r *http.Request, slug string, raw json.RawMessage) (map[string]any, *fhir.Error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeRequired, "a Patient resource is required").WithExpression("patient")
	}
	p, err := fhir.DecodeResource(raw)
	if err != nil {
		fe := fhir.AsError(err)
		for i := range fe.Issues {
			for j, e := range fe.Issues[i].Expression {
				fe.Issues[i].Expression[j] = "patient." + strings.TrimPrefix(strings.TrimPrefix(e, "Patient"), ".")
			}
		}
		return nil, fe
	}
	if p["resourceType"] != "Patient" {
		return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeInvalid, "patient.resourceType must be \"Patient\"").WithExpression("patient.resourceType")
	}
	delete(p, "id")
	delete(p, "meta")
	o := fhir.Owner{Bases: []string{g.RecordBase(r, slug)}}
	if err := fhir.OwnershipError(o.CheckNewPatient(p, "patient", g.cfg.Ownership)); err != nil {
		return nil, fhir.AsError(err)
	}
	return p, nil
}
