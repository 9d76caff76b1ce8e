package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/pfrgateway/caddy-pfr/fhir"
)

// guardedUpstream is the upstream as the gateway uses it on one request:
// an answer the upstream handler aborts (reverse_proxy panics with
// http.ErrAbortHandler when the upstream's body is cut short) becomes an
// error the gateway can answer with an OperationOutcome instead of a
// dropped connection, and the gateway's own calls (see call) get a
// deadline.
type guardedUpstream struct {
	up Upstream
	// callTimeout bounds each of the gateway's own calls. 0: none.
	callTimeout time.Duration
}

// errAnswerCut is the cause when the upstream's answer ended early.
var errAnswerCut = errors.New("the upstream's answer was cut short")

// ServeHTTP passes r on, turning an aborted answer into errAnswerCut.
func (g guardedUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) (err error) {
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				panic(v)
			}
			err = errAnswerCut
		}
	}()
	return g.up.ServeHTTP(w, r)
}

// guard wraps up for one request (once: wrapping twice changes nothing).
func (g *Gateway) guard(up Upstream) Upstream {
	if _, ok := up.(guardedUpstream); ok || up == nil {
		return up
	}
	return guardedUpstream{up: up, callTimeout: g.cfg.CallTimeout}
}

// upstreamTimeout is the cause when one of the gateway's own calls passed
// its deadline.
type upstreamTimeout struct{ after time.Duration }

func (e upstreamTimeout) Error() string {
	return fmt.Sprintf("the upstream did not answer within %s", e.after)
}

// Timeout marks it as a timeout, like net.Error.
func (e upstreamTimeout) Timeout() bool { return true }

// withCallDeadline returns req with the deadline of the gateway's own
// calls when up carries one, the deadline's length, and the cancel to call
// when the call is over.
func withCallDeadline(up Upstream, req *http.Request) (*http.Request, time.Duration, context.CancelFunc) {
	g, ok := up.(guardedUpstream)
	if !ok || g.callTimeout <= 0 {
		return req, 0, func() {}
	}
	ctx, cancel := context.WithTimeout(req.Context(), g.callTimeout)
	return req.WithContext(ctx), g.callTimeout, cancel
}

// ownCallsDeadline bounds a sequence of the gateway's own calls that do not
// go through call (provisioning through the backend): the returned request
// carries the deadline.
func (g *Gateway) ownCallsDeadline(r *http.Request) (*http.Request, context.CancelFunc) {
	if g.cfg.CallTimeout <= 0 {
		return r, func() {}
	}
	ctx, cancel := context.WithTimeout(r.Context(), g.cfg.CallTimeout)
	return r.WithContext(ctx), cancel
}

// upstreamStepError is the answer when a step of the gateway's own work
// upstream failed (creating or deleting a partition): what failed and, when
// the upstream could not be reached or did not answer completely, why, with
// the status upstreamError gives that (504 for a timeout); 502 otherwise.
func upstreamStepError(step string, err error) *fhir.Error {
	var se StatusError
	var te interface{ Timeout() bool }
	if errors.As(err, &se) || errors.As(err, &te) || errors.Is(err, errAnswerCut) {
		e := upstreamError(err)
		return fhir.Errorf(e.Status, fhir.CodeTransient, "%s: %s", step, e.Issues[0].Diagnostics).WithCause(err)
	}
	return fhir.Errorf(http.StatusBadGateway, fhir.CodeTransient, "%s", step).WithCause(err)
}
