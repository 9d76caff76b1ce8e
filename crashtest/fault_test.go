package crashtest

import (
	"net/http"
	"strings"
	"testing"
)

// TestFaultUpstreamAnswers: an upstream that answers, but not what the
// gateway asked (the host-bound store configuration's empty 200, a 302 to a
// login page, a 503 page, an answer cut in the middle of its body), never
// makes the gateway report a write, a read, a transaction, a pick-up or a
// record as done: the client gets a 502 (503 for the 503) OperationOutcome
// saying what the upstream answered, and afterwards nothing the gateway
// refused is in the record. The management API and the inbox keep
// answering from the gateway's own state.
//
// It runs twice: with the upstream untrusted (the default for
// reverse_proxy: the gateway reads what an update or delete targets first,
// and filters answers) and trusted with the response filter off (every
// write goes straight to the upstream and only the answer check stands
// between it and the client).
func TestFaultUpstreamAnswers(t *testing.T) {
	for _, trusted := range []bool{false, true} {
		t.Run(map[bool]string{false: "untrusted", true: "trusted"}[trusted], func(t *testing.T) {
			options := shortTimeouts
			if trusted {
				options += "\n\t\ttrust_upstream_isolation true\n\t\tresponse_filter off"
			}
			faultUpstreamAnswers(t, options)
		})
	}
}

func faultUpstreamAnswers(t *testing.T, options string) {
	store := startStore(t, storeCaddyfile(t))
	misrouted := startStore(t, hostBoundStoreCaddyfile)
	proxy := newTamperProxy(t, store.addr(), misrouted.addr())
	g := newGatewayWith(t, gatewayOptions{config: proxiedGateway, args: []any{proxy.port(), options}})
	alice := g.token("alice")
	patientID := g.createRecord(alice, "faulty", faultPatient())

	// Through the README's store configuration, everything works.
	created := g.do("POST", g.recordURL("faulty", "/Observation"), alice, faultObservation(patientID, "baseline")).
		Expect(t, http.StatusCreated, "create through the README's store configuration")
	obsID := idFromLocation(t, created)
	g.do("GET", g.recordURL("faulty", "/Observation/"+obsID), alice, nil).Expect(t, http.StatusOK, "read it back")
	tx := g.do("POST", g.recordURL("faulty", ""), alice, faultTransaction(patientID, "baseline-tx-1", "baseline-tx-2")).
		Expect(t, http.StatusOK, "transaction")
	if tx.Body["type"] != "transaction-response" {
		t.Fatalf("transaction answered %.300s", tx.Raw)
	}
	receipt := g.dropOffReceipt("faulty", faultDropOff("fault-dropoff"))
	original := g.do("GET", g.recordURL("faulty", "/Observation/"+obsID), alice, nil).Raw

	for _, fault := range []struct {
		mode   string
		status int
		says   string
		// what record creation answers: its first step differs by fault
		createStatus int
		createSays   string
	}{
		{modeMisrouted, http.StatusBadGateway, "HTTP 200 with an empty body", http.StatusBadGateway, "creating the partition upstream failed"},
		{modeLogin, http.StatusBadGateway, "HTTP 302", http.StatusBadGateway, "creating the partition upstream failed"},
		{modeUnavailable, http.StatusServiceUnavailable, "HTTP 503", http.StatusBadGateway, "creating the partition upstream failed"},
		{modeTruncated, http.StatusBadGateway, "cut short", http.StatusBadGateway, "creating the partition upstream failed"},
	} {
		m := fault.mode
		proxy.set(m)
		update := faultObservation(patientID, "baseline")
		update["id"], update["note"] = obsID, []any{map[string]any{"text": "updated during " + m}}
		for _, p := range []probe{
			{name: "owner create", method: "POST", url: g.recordURL("faulty", "/Observation"), token: alice, body: faultObservation(patientID, m+"-create")},
			{name: "owner update", method: "PUT", url: g.recordURL("faulty", "/Observation/"+obsID), token: alice, body: update},
			{name: "owner transaction", method: "POST", url: g.recordURL("faulty", ""), token: alice, body: faultTransaction(patientID, m+"-tx-1", m+"-tx-2")},
			{name: "owner read", method: "GET", url: g.recordURL("faulty", "/Observation/"+obsID), token: alice},
			{name: "owner delete", method: "DELETE", url: g.recordURL("faulty", "/Observation/"+obsID), token: alice},
			{name: "metadata", method: "GET", url: g.recordURL("faulty", "/metadata")},
			{name: "pick-up", method: "POST", url: g.apex(pickupPath("faulty", receipt)), token: alice, body: map[string]any{}},
		} {
			p.status, p.says = fault.status, fault.says
			g.run(t, m, p)
		}
		if m == modeTruncated {
			g.run(t, m, probe{name: "owner search (streamed)", method: "GET", token: alice, aborted: true,
				url: g.recordURL("faulty", "/Observation?code=29463-7")})
		} else {
			g.run(t, m, probe{name: "owner search", method: "GET", token: alice, url: g.recordURL("faulty", "/Observation?code=29463-7"),
				status: fault.status, says: fault.says})
		}
		g.run(t, m, probe{name: "record creation", method: "POST", url: g.apex("/pfr/v1/records"), token: alice,
			body:   map[string]any{"slug": "faulty-" + m, "relationship": "self", "patient": faultPatient()},
			status: fault.createStatus, says: fault.createSays})
		// What the gateway holds itself answers.
		inbox, _ := g.run(t, m, probe{name: "inbox", method: "GET", url: g.apex("/pfr/v1/records/faulty/dropoffs"), token: alice, status: http.StatusOK})
		if inbox.Body["matchUnavailable"] == nil || !strings.Contains(string(inbox.Raw), receipt) {
			t.Errorf("%s: the inbox should list the drop-off and say the match is unavailable: %.400s", m, inbox.Raw)
		}
		g.run(t, m, probe{name: "records", method: "GET", url: g.apex("/pfr/v1/records"), token: alice, status: http.StatusOK})
		g.run(t, m, probe{name: "drop-off", method: "POST", url: g.recordURL("faulty", ""), body: faultDropOff(m + "-dropoff"), status: http.StatusAccepted})
		proxy.set(modePass)

		// Nothing the gateway refused is in the record, except what the
		// store did before its answer was cut: that one the client was
		// told is not confirmed, and a create retried with If-None-Exist
		// on its identifier finds it instead of writing it twice.
		want := 0
		if m == modeTruncated {
			want = 1
		}
		for _, marker := range []string{m + "-create", m + "-tx-1", m + "-tx-2"} {
			if n := g.stored(alice, "faulty", marker); n != want {
				t.Errorf("%s: %d Observations %s in the record, want %d", m, n, marker, want)
			}
		}
		if m == modeTruncated {
			g.run(t, m, probe{name: "create retried (If-None-Exist)", method: "POST", token: alice,
				url: g.recordURL("faulty", "/Observation"), body: faultObservation(patientID, m+"-create"),
				header: http.Header{"If-None-Exist": {"identifier=" + faultSystem + "|" + m + "-create"}}, status: http.StatusOK})
			if n := g.stored(alice, "faulty", m+"-create"); n != 1 {
				t.Errorf("%s: the retried create left %d copies", m, n)
			}
		} else if now := g.do("GET", g.recordURL("faulty", "/Observation/"+obsID), alice, nil).Raw; string(now) != string(original) {
			t.Errorf("%s: the refused update changed the Observation:\n%s\nwas\n%s", m, now, original)
		}
		if s := g.receiptStatus(receipt); s != "pending" {
			t.Errorf("%s: the drop-off is %s after a refused pick-up, want pending", m, s)
		}
		// The slug of the refused record creation is free again.
		g.do("POST", g.apex("/pfr/v1/records"), alice, map[string]any{"slug": "faulty-" + m, "relationship": "self", "patient": faultPatient()}).
			Expect(t, http.StatusCreated, m+": the slug is free after the refused creation")
		original = g.do("GET", g.recordURL("faulty", "/Observation/"+obsID), alice, nil).Raw
	}

	// The pick-up goes through at last, once (the truncated attempt's
	// import is found by its tag and not written again).
	res := g.do("POST", g.apex(pickupPath("faulty", receipt)), alice, map[string]any{}).Expect(t, http.StatusOK, "pick-up through the store")
	if n := g.stored(alice, "faulty", "fault-dropoff-obs"); n != 1 {
		t.Errorf("the picked-up Observation is there %d times, want once (%s)", n, res.Raw)
	}
}
