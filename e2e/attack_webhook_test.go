package e2e

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// TestAttackWebhookSSRF points a record's drop-off webhook at the Caddy
// admin API the test server runs (on this process's admin port), at loopback in every
// spelling, at names resolving to loopback, at private, link-local and
// metadata addresses, and at an allowed receiver that redirects to the
// admin API's /stop. Saving is refused with a 422 that says why; the
// redirect is not followed; the alert ends dead with its reason in the
// owner's inbox; the gateway and its admin API stay up throughout.
func TestAttackWebhookSSRF(t *testing.T) {
	e := startGateway(t, "\t\tdropoff {\n\t\t\talert_attempts 2\n\t\t\tretry_base 1s\n\t\t\tretry_cap 1s\n\t\t\tpoll_interval 200ms\n\t\t}\n"+
		withStore(t.TempDir(), ""))
	owner := e.token("hook-owner")
	e.createRecord(owner, "hooked", "Hook", "Wendy")
	hookURL := apex("/pfr/v1/records/hooked/webhook")
	const secret = "a-long-webhook-secret-0123456789"

	adminUp := func(when string) {
		t.Helper()
		res, err := http.Get(fmt.Sprintf("http://localhost:%d/config/", adminPort))
		if err != nil {
			t.Fatalf("%s: Caddy's admin API is gone: %v", when, err)
		}
		res.Body.Close()
		e.do("GET", apex("/pfr/v1/records/hooked"), owner, nil).Expect(t, http.StatusOK, when+": the gateway answers")
	}

	admin := strconv.Itoa(adminPort)
	for _, c := range []struct{ url, why string }{
		{"http://localhost:" + admin + "/stop", "loopback"},
		{"https://localhost:" + admin + "/stop", "loopback"},
		{"http://127.0.0.1:" + admin + "/load", "loopback"},
		{"http://[::1]:" + admin + "/stop", "loopback"},
		{"http://[::ffff:127.0.0.1]:" + admin + "/stop", "loopback"},
		{"http://[::ffff:7f00:1]:" + admin + "/stop", "loopback"},
		{"http://0.0.0.0:" + admin + "/stop", "unspecified"},
		{"http://[::]:" + admin + "/stop", "unspecified"},
		{"http://169.254.169.254/latest/meta-data/", "link-local"},
		{"http://[fe80::1]/", "link-local"},
		{"http://10.0.0.1/", "private"},
		{"http://192.168.1.1/", "private"},
		{"http://[fd00::1]/", "private"},
		{"http://100.64.0.1/", "CGNAT"},
		{"http://224.0.0.1/", "multicast"},
		{"http://[64:ff9b::7f00:1]/", "NAT64"},
		{"http://pfr.localhost:" + admin + "/stop", ""}, // the gateway's own name: loopback, or does not resolve
		{"http://127.1:" + admin + "/stop", ""},         // a short IPv4 form some resolvers accept
		{"http://2130706433:" + admin + "/stop", ""},    // 127.0.0.1 as one number
		{"http://93.184.215.14/hook", "https is required"},
		{"https://user:pw@93.184.215.14/hook", "user information"},
		{"gopher://127.0.0.1:" + admin + "/", "scheme"},
		{"file:///etc/passwd", "scheme"},
		{"unix:/run/caddy/admin.sock", "scheme"},
	} {
		c.url = strings.Replace(c.url, ":"+admin+"/", fmt.Sprintf(":%d/", adminPort), 1)
		res := e.do("PUT", hookURL, owner, map[string]any{"url": c.url, "secret": secret}).
			ExpectOutcome(t, http.StatusUnprocessableEntity, "webhook "+c.url)
		if !strings.Contains(string(res.Raw), "refused") || (c.why != "" && !strings.Contains(string(res.Raw), c.why)) {
			t.Errorf("webhook %s: the refusal does not say why (%q): %s", c.url, c.why, res.Raw)
		}
	}
	if got := e.do("GET", hookURL, owner, nil).Expect(t, http.StatusOK, "webhook"); got.Body["url"] != "" {
		t.Errorf("a refused webhook was stored: %s", got.Raw)
	}
	adminUp("after the refusals")

	// An allowed receiver (127.0.0.2, webhook_allow) that redirects every
	// alert to the admin API's /stop with a 307 (which keeps the POST).
	var redirected atomic.Int32
	ln, err := net.Listen("tcp", webhookAllowed+":0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		redirected.Add(1)
		http.Redirect(w, r, fmt.Sprintf("http://localhost:%d/stop", adminPort), http.StatusTemporaryRedirect)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	e.do("PUT", hookURL, owner, map[string]any{"url": fmt.Sprintf("http://%s/hook", ln.Addr()), "secret": secret}).
		Expect(t, http.StatusOK, "an allowed receiver")

	receipt := e.dropOff("hooked", []byte(bundle("collection", `{"resource":`+obs(`"subject":{"display":"x"}`)+`}`))).
		Expect(t, http.StatusAccepted, "drop off").Header.Get("X-PFR-Receipt")
	var alert map[string]any
	testkit.WaitFor(t, "the alert to be dead", 200*time.Millisecond, func() error {
		inbox := e.do("GET", apex("/pfr/v1/records/hooked/dropoffs"), owner, nil).Expect(t, http.StatusOK, "inbox")
		items, _ := inbox.Body["dropoffs"].([]any)
		for _, it := range items {
			if m := it.(map[string]any); m["id"] == receipt {
				alert, _ = m["alert"].(map[string]any)
			}
		}
		if alert == nil || alert["state"] != "dead" {
			return fmt.Errorf("it is %v (%s)", alert, inbox.Raw)
		}
		return nil
	})
	if !strings.Contains(fmt.Sprint(alert["lastError"]), "redirects are not followed") || alert["attempts"] != float64(2) {
		t.Errorf("the owner does not see why: %v", alert)
	}
	if redirected.Load() < 1 {
		t.Errorf("the receiver was never called")
	}
	adminUp("after the redirected alert")

	// The owner points the webhook at a working receiver: the dead alert
	// gets a new start and arrives.
	hook := newWebhookReceiver(t, secret)
	e.do("PUT", hookURL, owner, map[string]any{"url": hook.URL, "secret": secret}).Expect(t, http.StatusOK, "a working receiver")
	hook.waitAlert(t, receipt)
}
