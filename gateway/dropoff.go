package gateway

import (
	"net"
	"net/http"

	"go.uber.org/zap"

	"github.com/pfrgateway/caddy-pfr/dopu"
	"github.com/pfrgateway/caddy-pfr/fhir"
)

// ReceiptHeader carries a drop-off's receipt id on the 202 answer.
const ReceiptHeader = "X-PFR-Receipt"

// isDropOffTarget reports whether a POST goes where a Bundle may be
// dropped off: the FHIR base, or {fhir_path}/Bundle (also the lower-case
// /bundle of the original design).
func isDropOffTarget(r *http.Request, rest string) bool {
	return r.Method == http.MethodPost && (rest == "" || rest == "/Bundle" || rest == "/bundle")
}

// dropOff parks a Bundle posted by someone who may not write to the
// record (DESIGN.md step 4) and answers 202 with a receipt. The Bundle is
// stored durably before the answer.
func (g *Gateway) dropOff(w http.ResponseWriter, rq *request, ae *auditEntry) error {
	r, rec, id := rq.r, rq.rec, rq.id
	sender := dopu.Sender{IP: g.clientIP(r), UserAgent: r.UserAgent()}
	if id != nil {
		sender.Issuer, sender.Subject, sender.ClientID = id.Issuer, id.Subject, id.ClientID
	}
	receipt, err := g.cfg.DOPU.Intake(r.Context(), rec.ID, r.Header.Get("Content-Type"), r.Header.Get("Content-Encoding"), r.Body, sender)
	if err != nil {
		return dopu.HTTPError(err)
	}
	ae.detail = "dropoff " + receipt.ID
	g.log.Info("drop-off received", zap.String("record", rec.ID), zap.String("dropoff", receipt.ID),
		zap.String("ip", sender.IP), zap.Bool("duplicate", receipt.Duplicate))
	// The receipt's status lives on the apex, beside the management API.
	statusURL := g.apexOrigin(r) + APIPrefix + "receipts/" + receipt.ID
	w.Header().Set(ReceiptHeader, receipt.ID)
	w.Header().Set("Content-Location", statusURL)
	fhir.WriteJSON(w, http.StatusAccepted, dopu.ReceiptOutcome(receipt, statusURL))
	return nil
}

// clientIP is the sender's address: the configured function's answer (in
// Caddy, the client IP after trusted proxies), or the connection's peer.
func (g *Gateway) clientIP(r *http.Request) string {
	if g.cfg.ClientIP != nil {
		if ip := g.cfg.ClientIP(r); ip != "" {
			return ip
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
