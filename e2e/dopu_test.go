package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/dopu"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// webhookReceiver records the drop-off alerts it gets and checks their
// signature.
type webhookReceiver struct {
	*httptest.Server
	secret string
	mu     sync.Mutex
	alerts []map[string]any
	bodies []string
	bad    int
}

func newWebhookReceiver(t *testing.T, secret string) *webhookReceiver {
	wr := &webhookReceiver{secret: secret}
	wr.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		wr.mu.Lock()
		defer wr.mu.Unlock()
		if err := dopu.VerifySignature(r.Header.Get("X-PFR-Signature"), body, secret, time.Now(), 5*time.Minute); err != nil {
			wr.bad++
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		var alert map[string]any
		_ = json.Unmarshal(body, &alert)
		wr.alerts = append(wr.alerts, alert)
		wr.bodies = append(wr.bodies, string(body))
	}))
	// The receiver listens on the one loopback address the harness's
	// webhook_allow opens: the rest of loopback stays refused.
	l, err := net.Listen("tcp", webhookAllowed+":0")
	if err != nil {
		t.Fatalf("listening on %s: %v", webhookAllowed, err)
	}
	wr.Listener.Close()
	wr.Listener = l
	wr.Start()
	t.Cleanup(wr.Close)
	return wr
}

// webhookAllowed is the address the harness's gateways allow webhooks to
// reach (webhook_allow): an in-house receiver, as an operator would have.
const webhookAllowed = "127.0.0.2"

// waitAlert waits (bounded) for an alert about dropoff.
func (wr *webhookReceiver) waitAlert(t *testing.T, dropoff string) (map[string]any, string) {
	t.Helper()
	var alert map[string]any
	var body string
	testkit.WaitFor(t, "an alert for drop-off "+dropoff, 200*time.Millisecond, func() error {
		wr.mu.Lock()
		defer wr.mu.Unlock()
		for i, a := range wr.alerts {
			if a["dropoff"] == dropoff {
				alert, body = a, wr.bodies[i]
				return nil
			}
		}
		return fmt.Errorf("none yet (bad signatures: %d)", wr.bad)
	})
	return alert, body
}

// bundlePatient returns the Patient of a Bundle, without its id.
func bundlePatient(t *testing.T, raw []byte) map[string]any {
	var b struct {
		Entry []struct {
			Resource map[string]any `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	for _, e := range b.Entry {
		if e.Resource["resourceType"] == "Patient" {
			delete(e.Resource, "id")
			return e.Resource
		}
	}
	t.Fatal("no Patient in the Bundle")
	return nil
}

// dropOff posts raw to a record without a token, as a provider would.
func (e *env) dropOff(slug string, raw []byte, headers ...string) response {
	return e.do("POST", recordURL(slug, ""), "", raw, headers...)
}

// TestDropOffAndPickUp is the DOPU story through real Caddy: a provider
// drops off the IPS document and a Synthea Bundle without any token, the
// owners' webhooks get signed alerts, the owners list, preview and pick up,
// and the records then hold every clinical resource pointing at their own
// Patient; a drop-off for another person is refused at pick-up.
func TestDropOffAndPickUp(t *testing.T) {
	e := startGateway(t, "")
	ips := testkit.ReadFHIR(t, "documents/IPS_IG-bundle-01.json")
	synthea := testkit.ReadFHIR(t, "synthea/Ned_Hintz_e4b9259d-0f54-48d1-a35d-b526729a4dfe.json")

	martha, ned := e.token("martha"), e.token("ned")
	for _, c := range []struct {
		tok, slug string
		raw       []byte
	}{{martha, "martha", ips}, {ned, "ned-hintz", synthea}} {
		e.do("POST", apex("/pfr/v1/records"), c.tok, map[string]any{"slug": c.slug, "patient": bundlePatient(t, c.raw)}).
			Expect(t, http.StatusCreated, "create "+c.slug)
	}
	hook := newWebhookReceiver(t, "a-long-webhook-secret-for-martha")
	e.do("PUT", apex("/pfr/v1/records/martha/webhook"), martha, map[string]any{"url": hook.URL, "secret": hook.secret}).
		Expect(t, http.StatusOK, "set webhook")

	// The provider drops off the IPS document: no token, 202, a receipt.
	res := e.dropOff("martha", ips, "User-Agent", "clinic-emr/1.0").ExpectOutcome(t, http.StatusAccepted, "drop off IPS")
	receipt := res.Header.Get("X-PFR-Receipt")
	statusURL := res.Header.Get("Content-Location")
	if len(receipt) < 20 || statusURL != apex("/pfr/v1/receipts/"+receipt) {
		t.Fatalf("receipt %q status URL %q", receipt, statusURL)
	}
	again := e.dropOff("martha", ips).Expect(t, http.StatusAccepted, "same bytes again")
	if again.Header.Get("X-PFR-Receipt") != receipt {
		t.Errorf("the same Bundle dropped twice got a new receipt")
	}
	status := e.do("GET", statusURL, "", nil).Expect(t, http.StatusOK, "receipt status")
	if !strings.Contains(string(status.Raw), "pending") {
		t.Errorf("status: %s", status.Raw)
	}
	// Nothing is in the record before pick-up.
	e.do("GET", recordURL("martha", "/Observation?_summary=count"), martha, nil).Expect(t, http.StatusOK, "count")

	// The owner's webhook gets a signed alert without clinical content.
	alert, body := hook.waitAlert(t, receipt)
	if strings.Contains(body, "DeLarosa") || strings.Contains(body, "574687583") {
		t.Errorf("the alert carries clinical content: %s", body)
	}
	if alert["record"] == nil || alert["slug"] != "martha" {
		t.Errorf("alert without record or slug: %s", body)
	}

	// The inbox: owners see it with a match score; strangers see nothing.
	inbox := e.do("GET", apex("/pfr/v1/records/martha/dropoffs"), martha, nil).Expect(t, http.StatusOK, "inbox")
	items := inbox.Body["dropoffs"].([]any)
	if len(items) != 1 {
		t.Fatalf("inbox: %s", inbox.Raw)
	}
	item := items[0].(map[string]any)
	if item["id"] != receipt || item["match"].(map[string]any)["accepted"] != true || item["sender"].(map[string]any)["userAgent"] != "clinic-emr/1.0" {
		t.Errorf("inbox item: %s", inbox.Raw)
	}
	e.do("GET", apex("/pfr/v1/records/martha/dropoffs"), ned, nil).ExpectOutcome(t, http.StatusNotFound, "a stranger's inbox")
	preview := e.do("GET", apex("/pfr/v1/records/martha/dropoffs/"+receipt), martha, nil).Expect(t, http.StatusOK, "preview")
	if preview.Body["bundle"].(map[string]any)["type"] != "document" {
		t.Errorf("preview: %.300s", preview.Raw)
	}

	// A Synthea Bundle of another person dropped off for Martha is refused
	// at pick-up with the reasons, and stays pending until rejected.
	wrong := e.dropOff("martha", synthea).Expect(t, http.StatusAccepted, "drop off the wrong person")
	wrongID := wrong.Header.Get("X-PFR-Receipt")
	refused := e.do("POST", apex("/pfr/v1/records/martha/dropoffs/"+wrongID+"/pickup"), martha, nil).
		ExpectOutcome(t, http.StatusUnprocessableEntity, "pick up the wrong person")
	if len(refused.Body["issue"].([]any)) < 2 {
		t.Errorf("the refusal gives no reasons: %s", refused.Raw)
	}
	e.do("POST", apex("/pfr/v1/records/martha/dropoffs/"+wrongID+"/reject"), martha, map[string]any{"reason": "not me"}).
		Expect(t, http.StatusOK, "reject")
	if s := e.do("GET", apex("/pfr/v1/receipts/"+wrongID), "", nil); !strings.Contains(string(s.Raw), "rejected") {
		t.Errorf("status after reject: %s", s.Raw)
	}

	// Pick up the IPS document and Ned's Synthea Bundle.
	for _, c := range []struct {
		tok, slug, receipt string
		raw                []byte
	}{{martha, "martha", receipt, ips}, {ned, "ned-hintz", "", synthea}} {
		if c.receipt == "" {
			c.receipt = e.dropOff(c.slug, c.raw).Expect(t, http.StatusAccepted, "drop off").Header.Get("X-PFR-Receipt")
		}
		p := e.do("POST", apex("/pfr/v1/records/"+c.slug+"/dropoffs/"+c.receipt+"/pickup"), c.tok, nil).Expect(t, http.StatusOK, "pick up "+c.slug)
		e.do("POST", apex("/pfr/v1/records/"+c.slug+"/dropoffs/"+c.receipt+"/pickup"), c.tok, nil).
			ExpectOutcome(t, http.StatusConflict, "pick up twice")
		rec := e.do("GET", apex("/pfr/v1/records/"+c.slug), c.tok, nil).Expect(t, http.StatusOK, "record")
		pid := rec.Body["patientId"].(string)
		counts := map[string]int{}
		var b struct {
			Entry []struct {
				Resource map[string]any `json:"resource"`
			} `json:"entry"`
		}
		_ = json.Unmarshal(c.raw, &b)
		for _, en := range b.Entry {
			counts[en.Resource["resourceType"].(string)]++
		}
		for typ, n := range counts {
			if typ == "Patient" {
				continue
			}
			got := e.do("GET", recordURL(c.slug, "/"+typ+"?_count=1000"), c.tok, nil).Expect(t, http.StatusOK, "search "+typ)
			if got.Body["total"] != float64(n) {
				t.Errorf("%s: %s has %v, the drop-off had %d (picked up: %s)", c.slug, typ, got.Body["total"], n, p.Raw)
			}
			if strings.Contains(string(got.Raw), `"reference":"urn:uuid`) {
				t.Errorf("%s: %s still references urn:uuid placeholders", c.slug, typ)
			}
			for _, en := range got.Body["entry"].([]any) {
				res := en.(map[string]any)["resource"].(map[string]any)
				for _, field := range []string{"subject", "patient"} {
					if ref, ok := res[field].(map[string]any); ok && ref["reference"] != "Patient/"+pid {
						t.Errorf("%s: %s/%v %s = %v, want Patient/%s", c.slug, typ, res["id"], field, ref["reference"], pid)
					}
				}
			}
		}
		if s := e.do("GET", apex("/pfr/v1/receipts/"+c.receipt), "", nil); !strings.Contains(string(s.Raw), "picked-up") {
			t.Errorf("status after pick-up: %s", s.Raw)
		}
	}
	// Martha's Patient keeps the sender's identifier.
	rec := e.do("GET", apex("/pfr/v1/records/martha"), martha, nil).Expect(t, http.StatusOK, "record")
	pat := e.do("GET", recordURL("martha", "/Patient/"+rec.Body["patientId"].(string)), martha, nil).Expect(t, http.StatusOK, "patient")
	if !strings.Contains(string(pat.Raw), "574687583") {
		t.Errorf("the sender's identifier was not kept on the record's Patient: %s", pat.Raw)
	}
}

// TestDropOffRefusals: bad input is refused with a clear OperationOutcome
// and nothing is stored; a flood hits the rate limit and the record stays
// usable.
func TestDropOffRefusals(t *testing.T) {
	e := startGateway(t, "\t\tdropoff {\n\t\t\trecord_rate 60 8\n\t\t\tmax_bytes 200000\n\t\t}\n\t\tupstream pfr_store {\n\t\t\tpath "+t.TempDir()+"/store.db\n\t\t}")
	owner := e.token("owner")
	e.createRecord(owner, "flooded", "Smith", "Ann")
	for name, c := range map[string]struct {
		body   string
		ctype  string
		status int
	}{
		"not JSON":        {"{", "application/fhir+json", http.StatusBadRequest},
		"a Patient":       {`{"resourceType":"Patient"}`, "application/fhir+json", http.StatusUnprocessableEntity},
		"history":         {`{"resourceType":"Bundle","type":"history","entry":[{"resource":{"resourceType":"Patient"}}]}`, "application/fhir+json", http.StatusUnprocessableEntity},
		"only outcomes":   {`{"resourceType":"Bundle","type":"searchset","entry":[{"resource":{"resourceType":"OperationOutcome"},"search":{"mode":"outcome"}}]}`, "application/fhir+json", http.StatusUnprocessableEntity},
		"XML":             {`<Bundle xmlns="http://hl7.org/fhir"/>`, "application/fhir+xml", http.StatusUnsupportedMediaType},
		"too large":       {`{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Basic","text":"` + strings.Repeat("x", 300000) + `"}}]}`, "application/fhir+json", http.StatusRequestEntityTooLarge},
		"nested too deep": {`{"resourceType":"Bundle","type":"collection","x":` + strings.Repeat("[", 500) + strings.Repeat("]", 500) + `}`, "application/fhir+json", http.StatusBadRequest},
	} {
		r := e.do("POST", recordURL("flooded", ""), "", c.body, "Content-Type", c.ctype)
		r.ExpectOutcome(t, c.status, name)
	}
	if n := len(e.do("GET", apex("/pfr/v1/records/flooded/dropoffs"), owner, nil).Body["dropoffs"].([]any)); n != 0 {
		t.Fatalf("refused drop-offs were stored: %d", n)
	}

	// Flood: distinct Bundles until the record's rate limit answers 429.
	limited := false
	for i := 0; i < 10 && !limited; i++ {
		body := fmt.Sprintf(`{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Observation","status":"final","code":{"text":"n%d"}}}]}`, i)
		r := e.do("POST", recordURL("flooded", ""), "", body)
		switch r.Status {
		case http.StatusAccepted:
		case http.StatusTooManyRequests:
			limited = true
			if r.Header.Get("Retry-After") == "" || r.Body["resourceType"] != "OperationOutcome" {
				t.Errorf("429 without Retry-After or OperationOutcome: %v %s", r.Header, r.Raw)
			}
		default:
			t.Fatalf("flood drop-off %d: %d %s", i, r.Status, r.Raw)
		}
	}
	if !limited {
		t.Fatal("the record's drop-off rate limit never answered 429")
	}
	// The record stays usable for its owner.
	e.do("GET", recordURL("flooded", "/Patient"), owner, nil).Expect(t, http.StatusOK, "owner reads during a flood")
	e.do("POST", recordURL("flooded", "/Observation"), owner, observation("Patient/"+e.do("GET", apex("/pfr/v1/records/flooded"), owner, nil).Body["patientId"].(string), "1-1")).
		Expect(t, http.StatusCreated, "owner writes during a flood")
}

// TestDropOffQuota: the per-record quota of pending drop-offs answers 429
// once full, other records keep receiving, and the owner frees it by
// rejecting.
func TestDropOffQuota(t *testing.T) {
	e := startGateway(t, "\t\tdropoff {\n\t\t\tpending_per_record 3\n\t\t\tsource_rate -1\n\t\t\trecord_rate -1\n\t\t}\n\t\tupstream pfr_store {\n\t\t\tpath "+t.TempDir()+"/store.db\n\t\t}")
	owner := e.token("owner")
	e.createRecord(owner, "full", "Smith", "Ann")
	e.createRecord(owner, "other", "Smith", "Ann")
	bundle := func(i int) string {
		return fmt.Sprintf(`{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Observation","status":"final","code":{"text":"q%d"}}}]}`, i)
	}
	var first string
	for i := 0; i < 3; i++ {
		r := e.do("POST", recordURL("full", ""), "", bundle(i)).Expect(t, http.StatusAccepted, "within the quota")
		if i == 0 {
			first = r.Header.Get("X-PFR-Receipt")
		}
	}
	r := e.do("POST", recordURL("full", ""), "", bundle(3)).ExpectOutcome(t, http.StatusTooManyRequests, "over the quota")
	if r.Header.Get("Retry-After") == "" {
		t.Error("quota refusal without Retry-After")
	}
	e.do("POST", recordURL("other", ""), "", bundle(3)).Expect(t, http.StatusAccepted, "another record")
	e.do("POST", apex("/pfr/v1/records/full/dropoffs/"+first+"/reject"), owner, map[string]any{"reason": "spam"}).Expect(t, http.StatusOK, "reject")
	e.do("POST", recordURL("full", ""), "", bundle(4)).Expect(t, http.StatusAccepted, "after the owner freed the quota")
}
