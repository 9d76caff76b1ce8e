package crashtest

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// TestFaultUpstreamHungOrDead: with the upstream frozen (SIGSTOP) or dead
// (SIGKILL), everything that needs it answers a 504 (frozen: after the
// response header timeout) or a 502 (dead: at once) OperationOutcome, and
// what the gateway holds itself (records, the inbox, drop-offs, receipts)
// keeps answering. A gateway left on the default timeouts answers a frozen
// upstream's read with a 504 too. After the upstream is back, nothing the
// gateway did not confirm is reported, and a create retried with
// If-None-Exist is stored once.
func TestFaultUpstreamHungOrDead(t *testing.T) {
	store := startStore(t, storeCaddyfile(t))
	g := newGatewayWith(t, gatewayOptions{config: proxiedGateway, args: []any{store.port, shortTimeouts}})
	// A gateway on the default timeouts, in front of its own store (each
	// gateway numbers its partitions from 1).
	storeD := startStore(t, storeCaddyfile(t))
	byDefault := newGatewayWith(t, gatewayOptions{config: proxiedGateway, args: []any{storeD.port, ""}})
	alice := g.token("alice")
	patientID := g.createRecord(alice, "hung", faultPatient())
	aliceD := byDefault.token("alice")
	byDefaultPatient := byDefault.createRecord(aliceD, "hung", faultPatient())
	obsID := idFromLocation(t, g.do("POST", g.recordURL("hung", "/Observation"), alice, faultObservation(patientID, "before")).
		Expect(t, http.StatusCreated, "create before the fault"))
	receipt := g.dropOffReceipt("hung", faultDropOff("hung-dropoff"))

	for _, fault := range []struct {
		name         string
		stop, resume func()
		status       int
		says         string
	}{
		{"SIGSTOP", func() {
			for _, s := range []*storeProcess{store, storeD} {
				if err := s.proc.Signal(syscall.SIGSTOP); err != nil {
					t.Fatal(err)
				}
				waitStopped(t, s.proc.Pid())
			}
		}, func() {
			for _, s := range []*storeProcess{store, storeD} {
				if err := s.proc.Signal(syscall.SIGCONT); err != nil {
					t.Fatal(err)
				}
			}
		}, http.StatusGatewayTimeout, "did not answer"},
		{"SIGKILL", func() {
			if err := store.proc.Kill(); err != nil {
				t.Fatal(err)
			}
		}, store.start, http.StatusBadGateway, "could not be reached"},
	} {
		f := fault.name
		fault.stop()
		var wg sync.WaitGroup
		if f == "SIGSTOP" {
			// The default timeouts, measured beside the short ones.
			wg.Add(1)
			go func() {
				defer wg.Done()
				byDefault.run(t, "default "+f, probe{name: "owner read", method: "GET", token: aliceD,
					url: byDefault.recordURL("hung", "/Patient/"+byDefaultPatient), status: http.StatusGatewayTimeout, says: "did not answer"})
			}()
		}
		update := faultObservation(patientID, "before")
		update["id"] = obsID
		for _, p := range []probe{
			// Conditional from the first attempt: a plain create that timed
			// out may still run upstream beside its retry.
			{name: "owner create", method: "POST", url: g.recordURL("hung", "/Observation"), token: alice, body: faultObservation(patientID, f+"-create"),
				header: http.Header{"If-None-Exist": {"identifier=" + faultSystem + "|" + f + "-create"}}},
			{name: "owner update", method: "PUT", url: g.recordURL("hung", "/Observation/"+obsID), token: alice, body: update},
			{name: "owner transaction", method: "POST", url: g.recordURL("hung", ""), token: alice, body: faultTransaction(patientID, f+"-tx-1", f+"-tx-2")},
			{name: "owner read", method: "GET", url: g.recordURL("hung", "/Observation/"+obsID), token: alice},
			{name: "owner delete", method: "DELETE", url: g.recordURL("hung", "/Observation/"+obsID), token: alice},
			{name: "owner search", method: "GET", url: g.recordURL("hung", "/Observation?code=29463-7"), token: alice},
			{name: "metadata", method: "GET", url: g.recordURL("hung", "/metadata")},
			{name: "pick-up", method: "POST", url: g.apex(pickupPath("hung", receipt)), token: alice, body: map[string]any{}},
			{name: "record creation", method: "POST", url: g.apex("/pfr/v1/records"), token: alice,
				body: map[string]any{"slug": "hung-" + strings.ToLower(f), "relationship": "self", "patient": faultPatient()}},
		} {
			p.status, p.says = fault.status, fault.says
			res, _ := g.run(t, f, p)
			if f == "SIGSTOP" && p.name == "owner transaction" && !strings.Contains(string(res.Raw), "may still carry out this write") {
				t.Errorf("a write that timed out should say it may still happen: %s", res.Raw)
			}
		}
		inbox, took := g.run(t, f, probe{name: "inbox", method: "GET", url: g.apex("/pfr/v1/records/hung/dropoffs"), token: alice, status: http.StatusOK})
		if inbox.Body["matchUnavailable"] == nil || !strings.Contains(string(inbox.Raw), receipt) {
			t.Errorf("%s: the inbox should list the drop-off without match scores: %.400s", f, inbox.Raw)
		}
		t.Logf("%s: the inbox answered in %v (inbox timeout 1s)", f, took.Round(time.Millisecond))
		g.run(t, f, probe{name: "records", method: "GET", url: g.apex("/pfr/v1/records"), token: alice, status: http.StatusOK})
		g.run(t, f, probe{name: "one record", method: "GET", url: g.apex("/pfr/v1/records/hung"), token: alice, status: http.StatusOK})
		g.run(t, f, probe{name: "members", method: "GET", url: g.apex("/pfr/v1/records/hung/members"), token: alice, status: http.StatusOK})
		g.run(t, f, probe{name: "drop-off", method: "POST", url: g.recordURL("hung", ""), body: faultDropOff(f + "-dropoff"), status: http.StatusAccepted})
		g.run(t, f, probe{name: "receipt", method: "GET", url: g.apex("/pfr/v1/receipts/" + receipt), status: http.StatusOK})
		g.run(t, f, probe{name: "one drop-off", method: "GET", url: g.apex("/pfr/v1/records/hung/dropoffs/" + receipt), token: alice, status: http.StatusOK})
		wg.Wait()
		fault.resume()

		// A frozen upstream carries out, once thawed, what it had received:
		// the client was told the outcome is unknown. A dead one never saw
		// the requests.
		if f == "SIGKILL" {
			for _, marker := range []string{f + "-create", f + "-tx-1", f + "-tx-2"} {
				if n := g.stored(alice, "hung", marker); n != 0 {
					t.Errorf("%s: %d Observations %s in the record, want none", f, n, marker)
				}
			}
		}
		retry, err := g.sendWith(t.Context(), "POST", g.recordURL("hung", "/Observation"), alice, faultObservation(patientID, f+"-create"),
			http.Header{"If-None-Exist": {"identifier=" + faultSystem + "|" + f + "-create"}})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: the create retried with If-None-Exist: %d", f, retry.Status)
		if retry.Status != http.StatusCreated && retry.Status != http.StatusOK {
			t.Errorf("%s: the create retried after the fault: %d %s", f, retry.Status, retry.Raw)
		}
		if n := g.stored(alice, "hung", f+"-create"); n != 1 {
			t.Errorf("%s: after the retry, %d copies of the create, want 1", f, n)
		}
		if s := g.receiptStatus(receipt); s != "pending" {
			t.Errorf("%s: the drop-off is %s, want pending", f, s)
		}
		g.do("POST", g.apex("/pfr/v1/records"), alice, map[string]any{"slug": "hung-" + strings.ToLower(f), "relationship": "self", "patient": faultPatient()}).
			Expect(t, http.StatusCreated, f+": the slug is free after the refused creation")
	}
	g.do("POST", g.apex(pickupPath("hung", receipt)), alice, map[string]any{}).Expect(t, http.StatusOK, "pick-up once the upstream is back")
	if n := g.stored(alice, "hung", "hung-dropoff-obs"); n != 1 {
		t.Errorf("the picked-up Observation is there %d times, want once", n)
	}
}

// waitStopped waits until the process is in the stopped state: kill(2)
// returns before a busy process on another core has stopped.
func waitStopped(t *testing.T, pid int) {
	t.Helper()
	testkit.WaitFor(t, fmt.Sprintf("process %d to stop", pid), 5*time.Millisecond, func() error {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			t.Fatal(err)
		}
		// pid (comm) state …: the state follows the last ')'.
		if i := strings.LastIndexByte(string(stat), ')'); i > 0 && i+2 < len(stat) && (stat[i+2] == 'T' || stat[i+2] == 't') {
			return nil
		}
		return fmt.Errorf("its stat is %.100s", stat)
	})
}
