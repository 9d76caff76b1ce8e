package crashtest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/dopu"
	"github.com/pfrgateway/caddy-pfr/internal/hapitest"
	"github.com/pfrgateway/caddy-pfr/internal/pebble"
	"github.com/pfrgateway/caddy-pfr/internal/pfrproc"
	"github.com/pfrgateway/caddy-pfr/internal/pgtest"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// clusterNode is a gateway node on PostgreSQL state in front of a shared
// FHIR upstream, with Caddy's certificates in the same PostgreSQL: plain
// HTTP on %[1]d, and on %[5]d TLS with certificates on demand from an ACME
// server (Pebble: directory %[6]s, its HTTPS root %[7]s) for active
// records only. %[2]s is the work directory, %[3]s the DSN, %[4]d the
// upstream's port. Its built-in authorization server's issuer is the
// cluster's public origin, the balancer's (port %[8]d): every node serves
// it, on the state they share.
const clusterNode = `{
	admin off
	persist_config off
	auto_https disable_redirects
	default_bind 127.0.0.1
	http_port %[1]d
	https_port %[5]d
	skip_install_trust
	storage postgres %[3]s
	on_demand_tls {
		permission pfr {
			base_domain pfr.localhost
			state postgres %[3]s
		}
	}
}

http://pfr.localhost:%[1]d, http://*.pfr.localhost:%[1]d {
	pfr {
		base_domain pfr.localhost
		data_dir %[2]s/data
		dev_issuer
		webhook_allow 127.0.0.1/32
		dropoff {
			source_rate -1
			record_rate -1
			pending_per_record 1000000
			pending_bytes_per_record 100000000000
		}
		state postgres %[3]s
		partition header
		upstream reverse_proxy 127.0.0.1:%[4]d
		export {
			lease 3s
		}
		authorization_server {
			issuer http://pfr.localhost:%[8]d
		}
	}
}

https://:%[5]d {
	tls {
		on_demand
		issuer acme {
			dir %[6]s
			trusted_roots %[7]s
		}
	}
	respond "tls ok"
}
`

// balancer is Caddy's reverse_proxy in front of two nodes, with active
// health checks on /pfr/v1/health. %[1]d its port, %[2]d and %[3]d the
// nodes' ports.
const balancer = `{
	admin off
	persist_config off
	auto_https off
	default_bind 127.0.0.1
}
http://pfr.localhost:%[1]d, http://*.pfr.localhost:%[1]d {
	reverse_proxy 127.0.0.1:%[2]d 127.0.0.1:%[3]d {
		lb_policy round_robin
		lb_retries 2
		health_uri /pfr/v1/health
		health_interval 1s
		health_headers {
			Host pfr.localhost
		}
	}
}
`

// countingReceiver counts the deliveries of each drop-off's alert.
type countingReceiver struct {
	mu     sync.Mutex
	counts map[string]int // Idempotency-Key → deliveries
	bad    []string
}

func (c *countingReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	c.mu.Lock()
	defer c.mu.Unlock()
	var alert dopu.AlertPayload
	if err := json.Unmarshal(body, &alert); err != nil || alert.DropOff != r.Header.Get(dopu.IdempotencyKeyHeader) {
		c.bad = append(c.bad, fmt.Sprintf("key %q for %.200s", r.Header.Get(dopu.IdempotencyKeyHeader), body))
	}
	c.counts[r.Header.Get(dopu.IdempotencyKeyHeader)]++
}

func (c *countingReceiver) snapshot() (map[string]int, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for k, v := range c.counts {
		out[k] = v
	}
	return out, append([]string(nil), c.bad...)
}

// startProc runs the pfr binary with config and waits until url answers.
func startProc(t *testing.T, config, url string) *pfrproc.Process {
	t.Helper()
	p, err := pfrproc.Start(context.Background(), pfrBinary(t), t.TempDir(), config)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Kill() })
	if err := p.WaitReady(context.Background(), url, 0, 60*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, p.LogTail(30))
	}
	return p
}

// cluster is two gateway nodes, their shared upstream and the balancer.
type cluster struct {
	dsn      string
	hapiDSN  string // HAPI's own database
	a, b, lb *gatewayProcess
	pebble   *pebble.Server
}

// newCluster starts a shared FHIR upstream (HAPI on PostgreSQL), two
// gateway nodes on one PostgreSQL database and Caddy's balancer in front
// of them.
func newCluster(t *testing.T) *cluster {
	t.Helper()
	dsn := pgtest.DSN(t)
	// The FHIR data every node shares: HAPI FHIR JPA on its own database in
	// the same PostgreSQL, partitioned by header.
	hapiDSN := pgtest.DSN(t)
	hapi := hapitest.StartT(t, hapitest.Options{Mode: "header", Dir: t.TempDir(), JDBCURL: hapiDSN, Jar: hapitest.JarIn(testkit.Root(t))})
	_, port, _ := net.SplitHostPort(hapi.Addr)
	hapiPort, _ := strconv.Atoi(port)
	// Pebble, validating every challenge (no resolver knows *.pfr.localhost).
	// Its context lives as long as the test: cancelling it stops Pebble.
	pctx, pcancel := context.WithCancel(context.Background())
	t.Cleanup(pcancel)
	pb, err := pebble.Start(pctx, pebble.Options{AlwaysValid: true, Dir: t.TempDir(), HTTPPort: freePort(t), TLSPort: freePort(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pb.Stop)

	lbPort := freePort(t)
	a := newGatewayWith(t, gatewayOptions{config: clusterNode, args: []any{dsn, hapiPort, freePort(t), pb.DirectoryURL, pb.TLSRootFile, lbPort}})
	// Node B trusts the same dev issuer key (a real deployment trusts the
	// same OpenID provider).
	b := newGatewayWith(t, gatewayOptions{config: clusterNode, args: []any{dsn, hapiPort, freePort(t), pb.DirectoryURL, pb.TLSRootFile, lbPort}, prepare: func(dir string) {
		key, err := os.ReadFile(filepath.Join(a.dir, "data", auth.DevIssuerFile))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "data", auth.DevIssuerFile), key, 0o600); err != nil {
			t.Fatal(err)
		}
	}})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("node A:\n%s\nnode B:\n%s", a.logTail(15), b.logTail(15))
		}
	})
	lb := &gatewayProcess{t: t, port: lbPort, client: newClient(), dev: a.dev}
	startProc(t, fmt.Sprintf(balancer, lbPort, a.port, b.port), lb.apex("/pfr/v1/health"))
	return &cluster{dsn: dsn, hapiDSN: hapiDSN, a: a, b: b, lb: lb, pebble: pb}
}

// TestCluster runs two gateway nodes (the real binary) on one PostgreSQL
// with a shared FHIR upstream and Caddy's balancer in front: what one node
// does, the other knows at once.
func TestCluster(t *testing.T) {
	c := newCluster(t)
	a, b, lb := c.a, c.b, c.lb
	alice, bob := a.token("alice"), a.token("bob")
	const slug = "clustered"

	// A record created on A is usable through B at once.
	patientID := a.createRecord(alice, slug, map[string]any{
		"resourceType": "Patient", "name": []any{map[string]any{"family": "Node", "given": []any{"Nora"}}},
		"gender": "female", "birthDate": "1980-02-03",
	})
	b.do("GET", b.recordURL(slug, "/Patient/"+patientID), alice, nil).Expect(t, http.StatusOK, "the Patient through B")
	lb.do("GET", lb.recordURL(slug, "/Patient/"+patientID), alice, nil).Expect(t, http.StatusOK, "the Patient through the balancer")

	// The authorization server across the nodes (cluster_authz_test.go).
	clusterAuthz(t, c, slug, patientID)

	// Bob joins through B with an invitation made on A.
	inv := a.do("POST", a.apex("/pfr/v1/records/"+slug+"/invitations"), alice, map[string]any{"role": "viewer"}).
		Expect(t, http.StatusCreated, "invite on A")
	code, _ := inv.Body["code"].(string)
	b.do("POST", b.apex("/pfr/v1/invitations/"+code+"/accept"), bob, nil).Expect(t, http.StatusOK, "accept on B")
	b.do("GET", b.recordURL(slug, "/Patient/"+patientID), bob, nil).Expect(t, http.StatusOK, "bob reads through B")

	// Removed on A, refused on B at once (no waiting: nothing is cached).
	members := a.do("GET", a.apex("/pfr/v1/records/"+slug+"/members"), alice, nil).Expect(t, http.StatusOK, "members on A")
	var bobAccount string
	list, _ := members.Body["members"].([]any)
	for _, m := range list {
		mm, _ := m.(map[string]any)
		if mm["subject"] == "bob" {
			bobAccount, _ = mm["accountId"].(string)
		}
	}
	if bobAccount == "" {
		t.Fatalf("bob's membership not listed: %s", members.Raw)
	}
	a.do("DELETE", a.apex("/pfr/v1/records/"+slug+"/members/"+bobAccount), alice, nil).Expect(t, http.StatusNoContent, "remove bob on A")
	if res := b.do("GET", b.recordURL(slug, "/Patient/"+patientID), bob, nil); res.Status != http.StatusForbidden && res.Status != http.StatusNotFound {
		t.Fatalf("bob after removal, through B: %d %s", res.Status, res.Raw)
	}

	// The webhook set on A; a drop-off on A is in B's inbox, its alert
	// delivered once though both nodes run the outbox; picked up on B.
	rc := &countingReceiver{counts: map[string]int{}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: rc, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	a.do("PUT", a.apex("/pfr/v1/records/"+slug+"/webhook"), alice, map[string]any{"url": "http://" + l.Addr().String() + "/hook", "secret": "cluster-webhook-secret-0123456789"}).
		Expect(t, http.StatusOK, "webhook on A")
	raw, _ := json.Marshal(map[string]any{"resourceType": "Bundle", "type": "collection", "entry": []any{
		map[string]any{"fullUrl": "urn:uuid:5f7c1d1e-1111-4a4a-9c9c-000000000001", "resource": map[string]any{
			"resourceType": "Patient", "name": []any{map[string]any{"family": "Node", "given": []any{"Nora"}}},
			"gender": "female", "birthDate": "1980-02-03"}},
		map[string]any{"resource": map[string]any{"resourceType": "Observation", "status": "final",
			"code": map[string]any{"text": "cluster"}, "subject": map[string]any{"reference": "urn:uuid:5f7c1d1e-1111-4a4a-9c9c-000000000001"}}},
	}})
	receipt := a.dropOffReceipt(slug, raw)
	if _, ok := b.inbox(alice, slug)[receipt]; !ok {
		t.Fatalf("drop-off %s made on A is not in B's inbox", receipt)
	}
	// Both nodes poll every 5 s (the default): wait for the alert, then for
	// two more polls of each, and count.
	testkit.WaitFor(t, "the alert of "+receipt, 200*time.Millisecond, func() error {
		if counts, _ := rc.snapshot(); counts[receipt] == 0 {
			return errors.New("not delivered yet")
		}
		return nil
	})
	// Not a wait for something to happen: two more polls of each node
	// (the product's 5 s interval) must not deliver it again.
	time.Sleep(11 * time.Second)
	counts, bad := rc.snapshot()
	if counts[receipt] != 1 || len(bad) > 0 {
		t.Fatalf("alert of %s delivered %d times (bad: %v), want once", receipt, counts[receipt], bad)
	}
	b.do("POST", b.apex("/pfr/v1/records/"+slug+"/dropoffs/"+receipt+"/pickup"), alice, map[string]any{}).
		Expect(t, http.StatusOK, "pick-up on B")
	if s := a.receiptStatus(receipt); s != "picked-up" {
		t.Fatalf("receipt status on A after the pick-up on B: %q", s)
	}

	// The FHIR data is in PostgreSQL (HAPI's tables), not in a node.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.hapiDSN)
	if err != nil {
		t.Fatal(err)
	}
	var stored int
	err = conn.QueryRow(ctx, `SELECT count(*) FROM hfj_resource WHERE res_type = 'Observation'`).Scan(&stored)
	_ = conn.Close(ctx)
	if err != nil || stored == 0 {
		t.Fatalf("HAPI's PostgreSQL database holds %d Observations (%v), want the one picked up", stored, err)
	}

	// The record's certificate: ordered from Pebble once, by A, stored in
	// PostgreSQL, served by B as the very same certificate.
	name := slug + ".pfr.localhost"
	certA := serverCert(t, a.opts.args[2].(int), name)
	certB := serverCert(t, b.opts.args[2].(int), name)
	if certA.SerialNumber.Cmp(certB.SerialNumber) != 0 {
		t.Fatalf("B serves another certificate (serial %s) than A (%s): obtained twice", certB.SerialNumber, certA.SerialNumber)
	}
	if err := certA.CheckSignatureFrom(c.pebble.Intermediate); err != nil {
		t.Fatalf("the certificate is not Pebble's: %v", err)
	}
	if n := c.pebble.Orders(); n != 1 {
		t.Fatalf("Pebble saw %d orders, want 1", n)
	}
	if _, err := tlsDial(a.opts.args[2].(int), "not-a-record.pfr.localhost"); err == nil {
		t.Fatal("a certificate for a name that is no record")
	}
}

// serverCert is the certificate a node's TLS port presents for name.
func serverCert(t *testing.T, port int, name string) *x509.Certificate {
	t.Helper()
	state, err := tlsDial(port, name)
	if err != nil {
		t.Fatalf("TLS to %s on %d: %v", name, port, err)
	}
	return state.PeerCertificates[0]
}

func tlsDial(port int, name string) (tls.ConnectionState, error) {
	d := &net.Dialer{Timeout: 30 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", fmt.Sprintf("127.0.0.1:%d", port), &tls.Config{
		ServerName: name, InsecureSkipVerify: true, // the internal CA is not trusted here; the serial is compared
	})
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer conn.Close()
	return conn.ConnectionState(), nil
}

// TestClusterNodeKilled: under a steady load of owner writes and drop-offs
// through the balancer, node A is SIGKILLed. Every write that got a 201
// and every drop-off that got a 202 is there afterwards, none twice, and
// the clients saw only successes or failures (a 502 or 503 of the
// balancer, a cut connection), never a wrong answer.
func TestClusterNodeKilled(t *testing.T) {
	c := newCluster(t)
	owner := c.a.token("load-owner")
	const slug = "loaded"
	patientID := c.a.createRecord(owner, slug, map[string]any{
		"resourceType": "Patient", "name": []any{map[string]any{"family": "Load", "given": []any{"Lee"}}},
		"gender": "male", "birthDate": "1970-07-07",
	})
	const system = "urn:pfr:cluster-kill"
	type outcome struct {
		kind, key, id string // kind "write" (key: identifier value, id) or "dropoff" (id: receipt)
		status        int
		err           error
	}
	var (
		mu       sync.Mutex
		outcomes []outcome
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("w%d-%d", w, i)
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				var o outcome
				if i%2 == 0 {
					res, err := c.lb.send(ctx, "POST", c.lb.recordURL(slug, "/Observation"), owner, map[string]any{
						"resourceType": "Observation", "status": "final", "code": map[string]any{"text": key},
						"identifier": []any{map[string]any{"system": system, "value": key}},
						"subject":    map[string]any{"reference": "Patient/" + patientID},
					})
					o = outcome{kind: "write", key: key, status: res.Status, err: err}
					if err == nil && res.Status == http.StatusCreated {
						o.id, _ = res.Body["id"].(string)
					}
				} else {
					raw, _ := json.Marshal(map[string]any{"resourceType": "Bundle", "type": "collection", "entry": []any{
						map[string]any{"resource": map[string]any{"resourceType": "Observation", "status": "final", "code": map[string]any{"text": key}}},
					}})
					res, err := c.lb.send(ctx, "POST", c.lb.recordURL(slug, ""), "", raw)
					o = outcome{kind: "dropoff", key: key, status: res.Status, err: err}
					if err == nil && res.Status == http.StatusAccepted {
						o.id = res.Header.Get("X-Pfr-Receipt")
					}
				}
				cancel()
				mu.Lock()
				outcomes = append(outcomes, o)
				mu.Unlock()
			}
		}()
	}
	// Load for a while, kill A in the middle of it, load on B alone.
	waitFor := func(n int) {
		testkit.WaitFor(t, fmt.Sprintf("%d requests of the load", n), 0, func() error {
			mu.Lock()
			got := len(outcomes)
			mu.Unlock()
			if got < n {
				return fmt.Errorf("%d answered", got)
			}
			return nil
		})
	}
	waitFor(60)
	// An export kicked off on A and running there when A dies.
	exportStatus := startExport(t, c.a, owner, slug)
	c.a.kill()
	mu.Lock()
	atKill := len(outcomes)
	mu.Unlock()
	waitFor(atKill + 60)
	close(stop)
	wg.Wait()
	// B answers its status URL, finishes it once A's claim expired
	// (export { lease 3s }) and serves its files from PostgreSQL.
	checkExportOn(t, c.b, owner, slug, exportStatus)
	if !c.b.logHasLine("resuming a bulk job whose node stopped") {
		t.Errorf("node B did not say it took the export over:\n%s", c.b.logTail(20))
	}

	// Judge every answer, then check the state through B.
	var writes, dropoffs, failed int
	for _, o := range outcomes {
		switch {
		case o.err != nil:
			failed++
		case o.kind == "write" && o.status == http.StatusCreated && o.id != "":
			writes++
		case o.kind == "dropoff" && o.status == http.StatusAccepted && o.id != "":
			dropoffs++
		case o.status == http.StatusBadGateway || o.status == http.StatusServiceUnavailable:
			failed++
		default:
			t.Errorf("%s %s: a wrong answer %d", o.kind, o.key, o.status)
		}
	}
	inbox := c.b.inbox(owner, slug)
	sentDropOffs := 0
	for _, o := range outcomes {
		if o.kind == "dropoff" {
			sentDropOffs++
			if o.err == nil && o.id != "" {
				if _, ok := inbox[o.id]; !ok {
					t.Errorf("acknowledged drop-off %s (%s) missing", o.id, o.key)
				}
			}
			continue
		}
		// Every write, acknowledged or not, is there at most once; an
		// acknowledged one exactly once.
		res := c.b.do("GET", c.b.recordURL(slug, "/Observation?identifier="+system+"|"+o.key), owner, nil).
			Expect(t, http.StatusOK, "search "+o.key)
		entries, _ := res.Body["entry"].([]any)
		acked := o.err == nil && o.id != ""
		if len(entries) > 1 || (acked && len(entries) != 1) {
			t.Errorf("write %s (acknowledged: %v) found %d times", o.key, acked, len(entries))
		}
	}
	// Each drop-off body is distinct: the inbox holds at most one per
	// request sent, at least every acknowledged one.
	if len(inbox) > sentDropOffs || len(inbox) < dropoffs {
		t.Errorf("inbox holds %d drop-offs for %d sent, %d acknowledged", len(inbox), sentDropOffs, dropoffs)
	}
	t.Logf("%d requests: %d writes and %d drop-offs acknowledged, %d failed (A killed after %d)", len(outcomes), writes, dropoffs, failed, atKill)
	if writes == 0 || dropoffs == 0 {
		t.Fatal("the load acknowledged nothing of one kind: the test proves nothing")
	}
}

// startExport kicks off an export of slug on node g and waits until the
// node is reading it (X-Progress names a type); it returns the status
// URL's path below the record's FHIR base.
func startExport(t *testing.T, g *gatewayProcess, token, slug string) string {
	t.Helper()
	res, err := g.sendWith(context.Background(), "GET", g.recordURL(slug, "/$export"), token, nil, http.Header{"Prefer": {"respond-async"}})
	if err != nil || res.Status != http.StatusAccepted {
		t.Fatalf("kick-off: %v %d %.300s", err, res.Status, res.Raw)
	}
	loc := res.Header.Get("Content-Location")
	i := strings.Index(loc, "/$export-status/")
	if i < 0 {
		t.Fatalf("Content-Location %q", loc)
	}
	path := loc[i:]
	testkit.WaitFor(t, "the export to start reading", 50*time.Millisecond, func() error {
		res := g.do("GET", g.recordURL(slug, path), token, nil)
		if res.Status != http.StatusAccepted {
			t.Fatalf("the export ended before the node could be killed: %d %.300s", res.Status, res.Raw)
		}
		if p := res.Header.Get("X-Progress"); !strings.Contains(p, "reading") {
			return fmt.Errorf("it says %q", p)
		}
		return nil
	})
	return path
}

// checkExportOn polls an export's status on node g until it is complete
// and reads its files there: every resource once, the record's Patient
// and Observations among them. It returns the count of each type.
func checkExportOn(t *testing.T, g *gatewayProcess, token, slug, path string) map[string]int {
	t.Helper()
	var m struct {
		Output []struct {
			Type string `json:"type"`
			URL  string `json:"url"`
		} `json:"output"`
	}
	started := time.Now()
	testkit.Wait(t, "the export to complete on the surviving node", func() bool {
		res := g.do("GET", g.recordURL(slug, path), token, nil)
		if res.Status == http.StatusOK {
			if err := json.Unmarshal(res.Raw, &m); err != nil {
				t.Fatal(err)
			}
			return true
		}
		if res.Status != http.StatusAccepted {
			t.Fatalf("the export's status on the surviving node: %d %.300s", res.Status, res.Raw)
		}
		return false
	})
	seen := map[string]bool{}
	types := map[string]int{}
	for _, o := range m.Output {
		// The manifest names the node the job was started on; the
		// surviving node serves the same path.
		i := strings.Index(o.URL, "/$export-file/")
		res := g.do("GET", g.recordURL(slug, o.URL[i:]), token, nil).Expect(t, http.StatusOK, "download "+o.Type)
		for _, line := range bytes.Split(bytes.TrimSpace(res.Raw), []byte("\n")) {
			var r struct{ ResourceType, ID string }
			if err := json.Unmarshal(line, &r); err != nil || r.ResourceType != o.Type {
				t.Fatalf("%s: a line that is not a %s: %.200s", o.Type, o.Type, line)
			}
			if seen[r.ResourceType+"/"+r.ID] {
				t.Errorf("%s/%s exported twice", r.ResourceType, r.ID)
			}
			seen[r.ResourceType+"/"+r.ID] = true
			types[r.ResourceType]++
		}
	}
	if types["Patient"] != 1 || types["Observation"] == 0 {
		t.Errorf("the export holds %v", types)
	}
	t.Logf("the export, its node killed, finished %.1fs later: %v", time.Since(started).Seconds(), types)
	return types
}
