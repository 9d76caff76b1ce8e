package api

import (
	"context"
	"errors"
	"net/http"

	"go.uber.org/zap"

	"github.com/pfrgateway/caddy-pfr/dopu"
	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/tenancy"
)

// webhookView is a record's alert webhook as the management API shows it;
// the secret is write-only.
type webhookView struct {
	URL       string `json:"url"`
	HasSecret bool   `json:"hasSecret"`
}

// getWebhook answers GET /pfr/v1/records/{slug}/webhook (owners and managers).
func (a *API) getWebhook(w http.ResponseWriter, r *http.Request, c *Call) error {
	var out webhookView
	err := a.withMembership(r, c, false, func(_ tenancy.Tx, rec *tenancy.Record, _ *tenancy.Account, m *tenancy.Membership) error {
		if !m.Role.CanWrite() {
			return fhir.Errorf(http.StatusForbidden, fhir.CodeForbidden, "only owners and managers see the webhook")
		}
		out = webhookView{URL: rec.WebhookURL, HasSecret: rec.WebhookSecret != ""}
		return nil
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, out)
}

// putWebhook answers PUT /pfr/v1/records/{slug}/webhook: where drop-off
// alerts go and the HMAC secret that signs them (owners and managers).
func (a *API) putWebhook(w http.ResponseWriter, r *http.Request, c *Call) error {
	var body struct {
		URL    string `json:"url"`
		Secret string `json:"secret"`
	}
	if err := decodeSmallJSON(w, r, &body); err != nil {
		return err
	}
	if body.URL != "" {
		// The destination policy (egress): refused destinations are a 422
		// with the reason; delivery checks again on every address dialled.
		if err := a.cfg.Webhooks.Check(r.Context(), body.URL); err != nil {
			return fhir.Errorf(http.StatusUnprocessableEntity, fhir.CodeBusinessRule,
				"webhook url refused: %v", err).WithExpression("url")
		}
		if len(body.Secret) < 16 {
			return fhir.Errorf(http.StatusBadRequest, fhir.CodeValue, "secret must have at least 16 characters").WithExpression("secret")
		}
	}
	var recID string
	err := a.withMembership(r, c, true, func(tx tenancy.Tx, rec *tenancy.Record, _ *tenancy.Account, m *tenancy.Membership) error {
		if !m.Role.CanWrite() {
			return fhir.Errorf(http.StatusForbidden, fhir.CodeForbidden, "only owners and managers set the webhook")
		}
		rec.WebhookURL, rec.WebhookSecret = body.URL, body.Secret
		recID = rec.ID
		return tx.PutRecord(rec)
	})
	if err != nil {
		return err
	}
	if a.cfg.DOPU != nil && body.URL != "" {
		// A new destination gives the alerts that died a new chance.
		if n, err := a.cfg.DOPU.ReviveAlerts(r.Context(), recID); err != nil {
			a.log.Error("reviving dead drop-off alerts", zap.String("record", recID), zap.Error(err))
		} else if n > 0 {
			a.log.Info("dead drop-off alerts revived", zap.String("record", recID), zap.Int("count", n))
		}
	}
	return writeJSON(w, http.StatusOK, webhookView{URL: body.URL, HasSecret: body.Secret != ""})
}

// WebhookFor returns the alert webhook of a record, for dopu.Options.Webhook.
func WebhookFor(store tenancy.Store) func(ctx context.Context, recordID string) (dopu.WebhookTarget, error) {
	return func(ctx context.Context, recordID string) (dopu.WebhookTarget, error) {
		var hook dopu.WebhookTarget
		err := store.View(ctx, func(tx tenancy.Tx) error {
			rec, err := tx.Record(recordID)
			if err != nil {
				return err
			}
			hook = dopu.WebhookTarget{URL: rec.WebhookURL, Secret: rec.WebhookSecret, Slug: rec.Slug}
			return nil
		})
		if errors.Is(err, tenancy.ErrNotFound) {
			return dopu.WebhookTarget{}, nil
		}
		return hook, err
	}
}
