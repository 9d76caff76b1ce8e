package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/tenancy"
)

// staleProvisioning is how long a record may stay in the provisioning state
// before a new request for its slug may take it over (a crash mid-provisioning
// must not lock a slug forever).
const staleProvisioning = 10 * time.Minute

// Provision creates a record: it reserves the slug and a partition, creates
// the partition and the Patient upstream, then activates the record with the
// caller as owner. Any failure undoes what was done, so no half-made record
// remains.
func (g *Gateway) Provision(r *http.Request, up Upstream, id *auth.Identity, slug, relationship string, patient map[string]any) (*tenancy.Record, tenancy.Role, error) {
	ctx := r.Context()
	rec := &tenancy.Record{Slug: slug, Relationship: tenancy.Relationship(relationship), Status: tenancy.StatusProvisioning}
	err := g.cfg.Tenancy.Update(ctx, func(tx tenancy.Tx) error {
		if _, err := tx.EnsureAccount(id.Issuer, id.Subject); err != nil {
			return err
		}
		err := tx.CreateRecord(rec)
		if !errors.Is(err, tenancy.ErrSlugTaken) {
			return err
		}
		old, lerr := tx.RecordBySlug(slug)
		if lerr != nil || old.Status != tenancy.StatusProvisioning || time.Since(old.Updated) < staleProvisioning {
			return err
		}
		// A provisioning attempt that died long ago: its partition, if any,
		// stays orphaned upstream under its own id; the slug is free again.
		g.log.Warn("taking over a stale provisioning record", zap.String("slug", slug), zap.String("record", old.ID))
		if err := tx.DeleteRecord(old.ID); err != nil {
			return err
		}
		return tx.CreateRecord(rec)
	})
	if errors.Is(err, tenancy.ErrSlugTaken) {
		return nil, "", fhir.Errorf(http.StatusConflict, fhir.CodeDuplicate, "the slug %q is taken", slug).WithExpression("slug")
	}
	if err != nil {
		return nil, "", fhir.Errorf(http.StatusServiceUnavailable, fhir.CodeTransient, "reserving the record failed").WithCause(err)
	}

	bounded, cancel := g.ownCallsDeadline(r)
	patientID, perr := g.provisionUpstream(bounded, up, rec, patient)
	cancel()
	if perr != nil {
		g.undoProvisioning(r, up, rec)
		return nil, "", perr
	}

	err = g.cfg.Tenancy.Update(ctx, func(tx tenancy.Tx) error {
		acct, err := tx.EnsureAccount(id.Issuer, id.Subject)
		if err != nil {
			return err
		}
		cur, err := tx.Record(rec.ID)
		if err != nil {
			return err
		}
		cur.PatientID = patientID
		cur.Status = tenancy.StatusActive
		if err := tx.PutRecord(cur); err != nil {
			return err
		}
		*rec = *cur
		return tx.SetMembership(tenancy.Membership{RecordID: rec.ID, AccountID: acct.ID, Role: tenancy.RoleOwner, Created: time.Now()})
	})
	if err != nil {
		g.undoProvisioning(r, up, rec)
		return nil, "", fhir.Errorf(http.StatusServiceUnavailable, fhir.CodeTransient, "activating the record failed").WithCause(err)
	}
	g.log.Info("record created", zap.String("slug", rec.Slug), zap.String("record", rec.ID),
		zap.Int64("partition", rec.PartitionID), zap.String("iss", id.Issuer), zap.String("sub", id.Subject))
	return rec, tenancy.RoleOwner, nil
}

// provisionUpstream creates rec's partition and Patient upstream and returns
// the Patient's id.
func (g *Gateway) provisionUpstream(r *http.Request, up Upstream, rec *tenancy.Record, patient map[string]any) (string, *fhir.Error) {
	g.iso.stamp(patient, rec.ID)
	body, err := json.Marshal(patient)
	if err != nil {
		return "", fhir.Errorf(http.StatusInternalServerError, fhir.CodeException, "encoding the Patient").WithCause(err)
	}
	if err := g.cfg.Backend.Provision(r.Context(), adopting(r, up), target(rec)); err != nil {
		return "", upstreamStepError("creating the partition upstream failed", err)
	}

	req := newInternalRequest(r, http.MethodPost, g.cfg.UpstreamFHIRPath+"/Patient", body)
	req.Header.Set("Prefer", "return=minimal")
	route, err := g.cfg.Backend.Outbound(req, target(rec))
	if err != nil {
		return "", fhir.Errorf(http.StatusInternalServerError, fhir.CodeException, "routing the Patient upstream failed").WithCause(err)
	}
	if route.Upstream != nil && g.cfg.SetUpstream != nil {
		g.cfg.SetUpstream(req, route.DialAddress())
	}
	res, err := call(up, req)
	if err != nil {
		return "", upstreamStepError("creating the Patient upstream failed", err)
	}
	if res.status == http.StatusBadRequest || res.status == http.StatusUnprocessableEntity {
		// The upstream judged the Patient itself: pass its verdict on.
		return "", &fhir.Error{Status: http.StatusUnprocessableEntity, Issues: outcomeIssues(res.body.Bytes(),
			"the upstream refused the Patient resource")}
	}
	if res.status/100 != 2 {
		return "", fhir.Errorf(http.StatusBadGateway, fhir.CodeTransient, "the upstream refused to create the Patient (HTTP %d)", res.status)
	}
	patientID, ok := locationID(res.header, "Patient")
	if !ok {
		return "", fhir.Errorf(http.StatusBadGateway, fhir.CodeException, "the upstream did not say where it created the Patient").
			WithCause(fmt.Errorf("upstream answered HTTP %d, Location %q", res.status, res.header.Get("Location")))
	}
	return patientID, nil
}

// undoProvisioning removes a record whose provisioning failed, and its
// partition upstream (best effort: a leftover empty partition holds no data
// and its id is never reused).
func (g *Gateway) undoProvisioning(r *http.Request, up Upstream, rec *tenancy.Record) {
	// The client may have gone away, and the provisioning's deadline may
	// have passed: the clean-up must still happen, within its own deadline.
	ctx := context.WithoutCancel(r.Context())
	bounded, cancel := g.ownCallsDeadline(r.WithContext(ctx))
	defer cancel()
	if err := g.cfg.Backend.Deprovision(bounded.Context(), adopting(bounded, up), target(rec)); err != nil {
		g.log.Warn("deleting partition after failed provisioning", zap.String("record", rec.ID), zap.Error(err))
	}
	if err := g.cfg.Tenancy.Update(ctx, func(tx tenancy.Tx) error { return tx.DeleteRecord(rec.ID) }); err != nil {
		g.log.Error("removing a record after failed provisioning", zap.String("record", rec.ID), zap.Error(err))
	}
}

// adopting returns up with every request adopted to parent.
func adopting(parent *http.Request, up Upstream) Upstream {
	return UpstreamFunc(func(w http.ResponseWriter, req *http.Request) error {
		return up.ServeHTTP(w, adopt(parent, req))
	})
}

// adopt gives a request built by the backend the context, host and remote
// address of the client request, so the upstream handler runs as if serving it.
func adopt(parent, req *http.Request) *http.Request {
	out := req.WithContext(parent.Context())
	out.Host = parent.Host
	out.RemoteAddr = parent.RemoteAddr
	if out.Proto == "" {
		out.Proto, out.ProtoMajor, out.ProtoMinor = "HTTP/1.1", 1, 1
	}
	return out
}
