package crashtest

import (
	"net/http"
	"syscall"
	"testing"
)

// breakerGateway is the gateway with Caddy's passive health checks on its
// upstream (%[3]d): one failure marks the upstream down for 30s.
var breakerGateway = withUpstream(shortTimeouts + `
		upstream reverse_proxy 127.0.0.1:%[3]d {
			fail_duration 30s
			max_fails 1
		}`)

// TestFaultCircuitBreaker: with Caddy's passive health checks on the
// upstream (README: When the upstream fails), a frozen upstream costs one
// request its timeout; the next ones get a 503 OperationOutcome at once,
// while the gateway's own state keeps answering.
func TestFaultCircuitBreaker(t *testing.T) {
	store := startStore(t, storeCaddyfile(t))
	g := newGatewayWith(t, gatewayOptions{config: breakerGateway, args: []any{store.port}})
	alice := g.token("alice")
	patientID := g.createRecord(alice, "breaker", faultPatient())
	obsID := idFromLocation(t, g.do("POST", g.recordURL("breaker", "/Observation"), alice, faultObservation(patientID, "before")).
		Expect(t, http.StatusCreated, "create before the fault"))
	if err := store.proc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitStopped(t, store.proc.Pid())
	defer func() { _ = store.proc.Signal(syscall.SIGCONT) }()

	g.run(t, "breaker", probe{name: "first read (times out)", method: "GET", url: g.recordURL("breaker", "/Observation/"+obsID),
		token: alice, status: http.StatusGatewayTimeout, says: "did not answer"})
	for _, p := range []probe{
		{name: "owner read", method: "GET", url: g.recordURL("breaker", "/Observation/"+obsID), token: alice},
		{name: "owner create", method: "POST", url: g.recordURL("breaker", "/Observation"), token: alice, body: faultObservation(patientID, "breaker-create")},
		{name: "metadata", method: "GET", url: g.recordURL("breaker", "/metadata")},
	} {
		p.status, p.says = http.StatusServiceUnavailable, "unavailable"
		g.run(t, "breaker", p)
	}
	g.run(t, "breaker", probe{name: "records", method: "GET", url: g.apex("/pfr/v1/records"), token: alice, status: http.StatusOK})
	g.run(t, "breaker", probe{name: "drop-off", method: "POST", url: g.recordURL("breaker", ""), body: faultDropOff("breaker-dropoff"), status: http.StatusAccepted})
}
