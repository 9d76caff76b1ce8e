package crashtest

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/internal/pfrproc"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// reloadCaddyfile is the gateway of the reload test: HTTPS from Caddy's
// internal CA (HTTP/2 is offered over TLS), the admin endpoint on for
// reloads, and a grace period for what is in flight when a reload stops
// the old server. Arguments: %[1]d the HTTPS port, %[2]s the work
// directory, %[3]d the admin port, %[4]s a JWKS cache TTL (changed on every
// reload, so each is a real one), %[5]d the HTTP port.
const reloadCaddyfile = `{
	admin 127.0.0.1:%[3]d
	persist_config off
	auto_https disable_redirects
	local_certs
	skip_install_trust
	http_port %[5]d
	https_port %[1]d
	default_bind 127.0.0.1
	grace_period 10s
	storage file_system {
		root %[2]s/caddy
	}
}

https://pfr.localhost:%[1]d, https://*.pfr.localhost:%[1]d {
	tls internal
	pfr {
		base_domain pfr.localhost
		data_dir %[2]s/data
		dev_issuer
		jwks_cache_ttl %[4]s
		dropoff {
			source_rate -1
			record_rate -1
			pending_per_record 1000000
			pending_bytes_per_record 100000000000
		}
		upstream pfr_store {
			path %[2]s/data/store.db
		}
	}
}
`

// reloadOutcome counts one protocol's requests during reloads.
type reloadOutcome struct {
	proto                  string
	sent, answered, failed int
	dropOffs               int // of sent
	failedStored           int // requests without an answer that were stored anyway
	retried                int // failed requests sent again, idempotently, and answered
	reloads                int
}

// TestReloadUnderLoad measures what config reloads do to clients writing
// over HTTP/1.1 keep-alive connections and over HTTP/2: owners create
// Observations and senders drop off Bundles without pause while the config
// is reloaded again and again. Every answered write is stored; a write
// without an answer (HTTP/1.1: the old server closes a keep-alive
// connection the client had just sent on) is not stored, and sent again
// idempotently (a create with If-None-Exist on its identifier, a drop-off
// with the same bytes) it is stored exactly once. With an Idempotency-Key
// header Go's client sends such a request again by itself; HTTP/2 loses
// nothing (the server's GOAWAY tells the client what to send again).
func TestReloadUnderLoad(t *testing.T) {
	dir := t.TempDir()
	port, admin, httpPort := freePort(t), freePort(t), freePort(t)
	config := func(ttl string) string { return fmt.Sprintf(reloadCaddyfile, port, dir, admin, ttl, httpPort) }
	dev, err := auth.LoadOrCreateDevIssuer(filepath.Join(dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	proc, err := pfrproc.Start(context.Background(), pfrBinary(t), dir, config("10m"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proc.Kill() })
	adminURL := fmt.Sprintf("http://127.0.0.1:%d", admin)
	if err := proc.WaitReady(context.Background(), adminURL+"/config/", http.StatusOK, 30*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, proc.LogTail(20))
	}
	token, err := dev.Mint("reloader", "openid patient/*.cruds", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	g := &gatewayProcess{t: t, dir: dir, port: port, dev: dev, proc: proc, client: reloadClient(false)}
	base := fmt.Sprintf("https://%s:%d", baseDomain, port)
	apexURL := func(p string) string { return base + p }
	recordURL := func(p string) string { return fmt.Sprintf("https://reload.%s:%d/fhir%s", baseDomain, port, p) }
	// The certificates come on the first handshakes.
	var created response
	testkit.WaitFor(t, "the first request over TLS", 200*time.Millisecond, func() error {
		created, err = g.send(context.Background(), "POST", apexURL("/pfr/v1/records"), token,
			map[string]any{"slug": "reload", "relationship": "self", "patient": faultPatient()})
		if err != nil {
			return fmt.Errorf("%w\n%s", err, proc.LogTail(20))
		}
		return nil
	})
	if created.Status != http.StatusCreated {
		t.Fatalf("creating the record: %v %d %s\n%s", err, created.Status, created.Raw, proc.LogTail(20))
	}
	patientID, _ := created.Body["patientId"].(string)

	ttl := 0
	reload := func() {
		ttl++
		req, _ := http.NewRequest("POST", adminURL+"/load", strings.NewReader(config(fmt.Sprintf("%dm", 10+ttl%2))))
		req.Header.Set("Content-Type", "text/caddyfile")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("reload: %v", err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("reload: %d %s", res.StatusCode, body)
		}
	}

	var outcomes []reloadOutcome
	for _, phase := range []struct {
		h2, idempotencyKey bool
	}{{false, false}, {false, true}, {true, false}} {
		h2 := phase.h2
		g.client = reloadClient(h2)
		out := reloadOutcome{proto: map[bool]string{false: "HTTP/1.1", true: "HTTP/2"}[h2]}
		// Go's client sends a request again by itself when the server
		// closed the connection it went out on before answering, if the
		// request says it may be repeated (an Idempotency-Key header).
		if phase.idempotencyKey {
			out.proto += " + Idempotency-Key"
		}
		type request struct {
			create bool
			marker string
			body   []byte
		}
		var mu sync.Mutex
		var failed []request
		var answered []request
		stop := make(chan struct{})
		var wg sync.WaitGroup
		const workers = 8
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					rq := request{create: i%2 == 0, marker: fmt.Sprintf("%s-w%d-%d", strings.NewReplacer("/", "", " ", "", "+", "").Replace(out.proto), w, i)}
					var header http.Header
					if phase.idempotencyKey {
						header = http.Header{"Idempotency-Key": {rq.marker}}
					}
					var res response
					var err error
					if rq.create {
						rq.body = writeObservation(patientID, "", rq.marker)
						res, err = g.sendWith(context.Background(), "POST", recordURL("/Observation"), token, rq.body, header)
					} else {
						rq.body = faultDropOff(rq.marker)
						res, err = g.sendWith(context.Background(), "POST", recordURL(""), "", rq.body, header)
					}
					mu.Lock()
					out.sent++
					if !rq.create {
						out.dropOffs++
					}
					switch {
					case err != nil:
						out.failed++
						failed = append(failed, rq)
					case (rq.create && res.Status == http.StatusCreated) || (!rq.create && res.Status == http.StatusAccepted):
						out.answered++
						answered = append(answered, rq)
					default:
						t.Errorf("%s %s: %d %.300s", out.proto, rq.marker, res.Status, res.Raw)
					}
					mu.Unlock()
				}
			}()
		}
		for range 10 {
			time.Sleep(300 * time.Millisecond)
			reload()
			out.reloads++
		}
		time.Sleep(300 * time.Millisecond)
		close(stop)
		wg.Wait()

		// The answered writes are there; the unanswered ones are not.
		stored := g.storedMarkersAt(token, recordURL(""))
		for _, rq := range answered {
			if rq.create && stored[rq.marker] != 1 {
				t.Errorf("%s: create %s answered 201 but stored %d times", out.proto, rq.marker, stored[rq.marker])
			}
		}
		for _, rq := range failed {
			if rq.create && stored[rq.marker] != 0 {
				out.failedStored++
			}
		}
		// Sent again, idempotently: each is stored once.
		for _, rq := range failed {
			var res response
			var err error
			if rq.create {
				res, err = g.sendWith(context.Background(), "POST", recordURL("/Observation"), token, rq.body,
					http.Header{"If-None-Exist": {"identifier=" + writesSystem + "|" + rq.marker}})
			} else {
				res, err = g.send(context.Background(), "POST", recordURL(""), "", rq.body)
			}
			if err != nil || (res.Status != http.StatusCreated && res.Status != http.StatusOK && res.Status != http.StatusAccepted) {
				t.Errorf("%s: %s sent again: %v %d %.200s", out.proto, rq.marker, err, res.Status, res.Raw)
				continue
			}
			out.retried++
		}
		stored = g.storedMarkersAt(token, recordURL(""))
		for _, rq := range failed {
			if rq.create && stored[rq.marker] != 1 {
				t.Errorf("%s: create %s stored %d times after it was sent again", out.proto, rq.marker, stored[rq.marker])
			}
		}
		t.Logf("%s: %d reloads, %d writes sent, %d answered, %d without an answer (%d of them stored anyway), %d sent again and answered",
			out.proto, out.reloads, out.sent, out.answered, out.failed, out.failedStored, out.retried)
		if out.failedStored != 0 {
			t.Errorf("%s: %d writes without an answer were stored", out.proto, out.failedStored)
		}
		if h2 && out.failed != 0 {
			t.Errorf("HTTP/2: %d writes without an answer, want none", out.failed)
		}
		outcomes = append(outcomes, out)
	}
	// A request in flight when the reload comes (its body still arriving)
	// is answered by the old server, which the reload waits for.
	for _, h2 := range []bool{false, true} {
		client := reloadClient(h2)
		marker := map[bool]string{false: "inflight-h1", true: "inflight-h2"}[h2]
		body := faultDropOff(marker)
		pr, pw := io.Pipe()
		go func() {
			for i := 0; i < len(body); i += len(body)/10 + 1 {
				time.Sleep(100 * time.Millisecond)
				_, _ = pw.Write(body[i:min(i+len(body)/10+1, len(body))])
			}
			_ = pw.Close()
		}()
		req, _ := http.NewRequest("POST", recordURL(""), pr)
		req.Header.Set("Content-Type", "application/fhir+json")
		done := make(chan error, 1)
		var res *http.Response
		start := time.Now()
		go func() {
			var err error
			res, err = client.Do(req)
			done <- err
		}()
		time.Sleep(350 * time.Millisecond)
		reload()
		if err := <-done; err != nil {
			t.Errorf("%s: a drop-off in flight during a reload got no answer: %v", marker, err)
			continue
		}
		_ = res.Body.Close()
		t.Logf("%s: a drop-off whose body took 1 s, a reload after 350 ms: %d (%s) after %v",
			marker, res.StatusCode, res.Proto, time.Since(start).Round(time.Millisecond))
		if res.StatusCode != http.StatusAccepted {
			t.Errorf("%s: %d, want 202", marker, res.StatusCode)
		}
		outcomes = append(outcomes, reloadOutcome{dropOffs: 1})
	}

	// Drop-offs: every distinct Bundle once in the inbox.
	inbox := g.do("GET", apexURL("/pfr/v1/records/reload/dropoffs"), token, nil).Expect(t, http.StatusOK, "inbox")
	items, _ := inbox.Body["dropoffs"].([]any)
	dropOffs := 0
	for _, o := range outcomes {
		dropOffs += o.dropOffs
	}
	if len(items) != dropOffs {
		t.Errorf("the inbox holds %d drop-offs, %d distinct ones were sent", len(items), dropOffs)
	}
}

// reloadClient is a client of the reload test: HTTPS from Caddy's internal
// CA without verification, HTTP/1.1 keep-alive only or HTTP/2.
func reloadClient(h2 bool) *http.Client {
	tr := pfrproc.LocalTransport()
	tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // the test's own CA
	tr.MaxIdleConnsPerHost = 16
	tr.ForceAttemptHTTP2 = h2
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{} // no HTTP/2
	}
	return pfrproc.LocalClient(60*time.Second, tr)
}
