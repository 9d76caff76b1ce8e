// Command provision measures creating records and what registered records
// and clients cost in memory:
//
//   - provisioning: POST /pfr/v1/records, one at a time, p50 and p99, on
//     the embedded store and on the HAPI test server (partition header);
//   - memory: pfr's resident set (VmRSS) with 1, 1 000 and 100 000
//     registered records, after start and after reads, and the read
//     latency (so a lookup that grew with the number of records would
//     show); then with 1 000 concurrent keep-alive clients.
//
// Records beyond the first are registered in the gateway's state before
// pfr starts (package tenancy, as the management API would commit them,
// without their upstream partitions): what is measured is the gateway's
// own cost per registered record, and that nothing loads them all.
//
//	go run ./bench/provision [-n 200] [-nhapi 50] [-records 1,1000,100000] [-clients 1000]
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/bbolt"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/internal/hapitest"
	"github.com/pfrgateway/caddy-pfr/internal/pfrproc"
	"github.com/pfrgateway/caddy-pfr/tenancy"
)

// baseDomain is the gateway's base domain: under .localhost, as the dev
// issuer requires.
const baseDomain = "pfr.localhost"

// options are the command's flags.
type options struct {
	n, nHAPI  int   // records provisioned (timed) on the store and on HAPI
	records   []int // registered records of each memory row
	clients   int   // concurrent keep-alive clients of the last memory row
	reads     int   // reads per memory row
	pfrBinary string
	hapiJar   string // "" finds test/hapi's jar; "-" leaves HAPI out
}

func main() {
	var o options
	var records string
	flag.IntVar(&o.n, "n", 200, "records provisioned (timed) on the embedded store")
	flag.IntVar(&o.nHAPI, "nhapi", 50, "records provisioned (timed) on HAPI")
	flag.StringVar(&records, "records", "1,1000,100000", "registered records of each memory row")
	flag.IntVar(&o.clients, "clients", 1000, "concurrent keep-alive clients (measured with the first memory row's state)")
	flag.IntVar(&o.reads, "reads", 500, "reads of the record's Patient per memory row")
	flag.StringVar(&o.pfrBinary, "pfr", "", "a built pfr binary (default: go build ./cmd/pfr)")
	flag.StringVar(&o.hapiJar, "hapi-jar", "", `the HAPI test server's jar (default: test/hapi's; "-": no HAPI)`)
	flag.Parse()
	for _, f := range strings.Split(records, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "provision: -records: %q is not a positive count\n", f)
			os.Exit(2)
		}
		o.records = append(o.records, n)
	}
	pfrproc.Main("bench/provision", func(ctx context.Context) error { return run(ctx, o, os.Stdout, os.Stderr) })
}

// run does the whole bench and prints its tables to out.
func run(ctx context.Context, o options, out, logw io.Writer) error {
	if o.n < 1 || len(o.records) == 0 || o.reads < 1 || o.clients < 0 {
		return errors.New("-n, -records and -reads must be positive, -clients not negative")
	}
	built := o.pfrBinary == ""
	if built {
		dir, err := os.MkdirTemp("", "pfr-bench-provision-build-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		fmt.Fprintln(logw, "building cmd/pfr …")
		if o.pfrBinary, err = pfrproc.Build(ctx, dir); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "bench/provision: %d CPUs, %s %s/%s; pfr %s; -n %d -nhapi %d -records %v -clients %d -reads %d\n\n",
		runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH, pfrproc.Revision(ctx, o.pfrBinary, built),
		o.n, o.nHAPI, o.records, o.clients, o.reads)

	var prov []provRow
	var mem []memRow
	for i, count := range o.records {
		clients := 0
		if i == 0 {
			clients = o.clients
		}
		row, times, err := storeRun(ctx, o, count, clients, i == 0, logw)
		if err != nil {
			return err
		}
		mem = append(mem, row...)
		if times != nil {
			prov = append(prov, provRow{upstream: "pfr_store (embedded)", times: times})
		}
	}
	if o.hapiJar != "-" && o.nHAPI > 0 {
		times, err := hapiRun(ctx, o, logw)
		if err != nil {
			return err
		}
		prov = append(prov, provRow{upstream: "HAPI FHIR (partition header)", times: times})
	}

	fmt.Fprintf(out, "provisioning: POST /pfr/v1/records, one at a time (account, record, partition, Patient, owner)\n")
	fmt.Fprintf(out, "%30s  %7s  %9s  %9s  %9s\n", "upstream", "records", "p50", "p99", "max")
	for _, r := range prov {
		fmt.Fprintf(out, "%30s  %7d  %9s  %9s  %9s\n", r.upstream, len(r.times), ms(pct(r.times, 50)), ms(pct(r.times, 99)), ms(slices.Max(r.times)))
	}
	fmt.Fprintf(out, "\nmemory: pfr's VmRSS (embedded store in the same process)\n")
	fmt.Fprintf(out, "%9s  %8s  %9s  %12s  %12s  %10s  %10s\n", "records", "clients", "start", "RSS idle", "RSS after", "read p50", "read p99")
	for _, r := range mem {
		fmt.Fprintf(out, "%9d  %8d  %9s  %9.1f MiB  %9.1f MiB  %10s  %10s\n", r.records, r.clients, r.start.Round(time.Millisecond),
			mib(r.idle), mib(r.after), ms(pct(r.reads, 50)), ms(pct(r.reads, 99)))
	}
	return nil
}

type provRow struct {
	upstream string
	times    []time.Duration
}

// memRow is one row of the memory table.
type memRow struct {
	records, clients int
	start            time.Duration // pfr run to ready
	idle, after      int64         // VmRSS after start, after the reads (or with the clients connected)
	reads            []time.Duration
}

// storeRun starts pfr on the embedded store with count registered
// records (count-1 registered before start, then "bench" through the API)
// and measures memory and reads; with provision, also times o.n record
// creations; with clients > 0, adds a row with that many keep-alive
// clients connected.
func storeRun(ctx context.Context, o options, count, clients int, provision bool, logw io.Writer) ([]memRow, []time.Duration, error) {
	b, err := pfrproc.NewBench(ctx, "provision", o.pfrBinary, 2, logw)
	if err != nil {
		return nil, nil, err
	}
	defer b.Close()
	gwPort, admin := b.Ports[0], b.Ports[1]
	dev, err := auth.LoadOrCreateDevIssuer(filepath.Join(b.WorkDir, "gateway"))
	if err != nil {
		return nil, nil, err
	}
	if count > 1 {
		fmt.Fprintf(logw, "registering %d records …\n", count-1)
		if err := register(filepath.Join(b.WorkDir, "gateway", "pfr.db"), dev.Issuer(), count-1); err != nil {
			return nil, nil, err
		}
	}
	site := pfrproc.StoreUpstream(b.WorkDir)
	started := time.Now()
	if err := b.Start(ctx, caddyfile(admin, gwPort, b.WorkDir, site), fmt.Sprintf("http://%s:%d/pfr/v1/health", baseDomain, gwPort), 0); err != nil {
		return nil, nil, err
	}
	row := memRow{records: count, start: time.Since(started)}
	g := &gateway{client: newClient(4), port: gwPort, dev: dev}
	time.Sleep(time.Second) // let start-up work settle
	row.idle = pfrproc.VmRSS(b.Pid())
	patientID, token, err := g.create(ctx, "bench", "owner")
	if err != nil {
		return nil, nil, fmt.Errorf("%w\n%s", err, b.LogTail())
	}
	read := fmt.Sprintf("http://bench.%s:%d/fhir/Patient/%s", baseDomain, gwPort, patientID)
	for range o.reads {
		t0 := time.Now()
		if err := g.get(ctx, g.client, read, token); err != nil {
			return nil, nil, err
		}
		row.reads = append(row.reads, time.Since(t0))
	}
	row.after = pfrproc.VmRSS(b.Pid())
	rows := []memRow{row}
	if clients > 0 {
		r, err := g.connected(ctx, b.Pid(), read, token, clients)
		if err != nil {
			return nil, nil, err
		}
		r.records, r.start, r.idle = count, row.start, row.after
		rows = append(rows, r)
	}
	var times []time.Duration
	if provision {
		fmt.Fprintf(logw, "provisioning %d records on the embedded store …\n", o.n)
		if times, err = g.provisionMany(ctx, "s", o.n); err != nil {
			return nil, nil, fmt.Errorf("%w\n%s", err, b.LogTail())
		}
	}
	return rows, times, nil
}

// hapiRun starts the HAPI test server and pfr in front of it, and times
// o.nHAPI record creations.
func hapiRun(ctx context.Context, o options, logw io.Writer) ([]time.Duration, error) {
	jar := o.hapiJar
	if jar == "" {
		var err error
		if jar, err = hapitest.ModuleJar(ctx); err != nil {
			return nil, fmt.Errorf("%w (or pass -hapi-jar, or -hapi-jar - to leave HAPI out)", err)
		}
	}
	b, err := pfrproc.NewBench(ctx, "provision-hapi", o.pfrBinary, 2, logw)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	fmt.Fprintln(logw, "starting the HAPI test server …")
	hapi, err := hapitest.Start(ctx, hapitest.Options{Mode: "header", Jar: jar, Dir: b.WorkDir})
	if err != nil {
		return nil, fmt.Errorf("starting HAPI (%s; or -hapi-jar -): %w", hapitest.Build, err)
	}
	defer hapi.Stop()
	gwPort, admin := b.Ports[0], b.Ports[1]
	site := "partition header\nupstream reverse_proxy " + hapi.Addr
	if err := b.Start(ctx, caddyfile(admin, gwPort, b.WorkDir, site), fmt.Sprintf("http://%s:%d/pfr/v1/health", baseDomain, gwPort), 0); err != nil {
		return nil, err
	}
	dev, err := auth.LoadOrCreateDevIssuer(filepath.Join(b.WorkDir, "gateway"))
	if err != nil {
		return nil, err
	}
	g := &gateway{client: newClient(4), port: gwPort, dev: dev}
	// The first creation warms HAPI's partition and Patient paths (JIT,
	// caches); it is not counted.
	if _, _, err := g.create(ctx, "warm", "owner"); err != nil {
		return nil, fmt.Errorf("%w\n%s", err, b.LogTail())
	}
	fmt.Fprintf(logw, "provisioning %d records on HAPI …\n", o.nHAPI)
	times, err := g.provisionMany(ctx, "h", o.nHAPI)
	if err != nil {
		return nil, fmt.Errorf("%w\n%s", err, b.LogTail())
	}
	return times, nil
}

// caddyfile is one gateway on plain HTTP with upstream lines.
func caddyfile(admin, port int, workDir, upstream string) string {
	return pfrproc.PlainGateway(admin, port, workDir, baseDomain, upstream)
}

// register commits n active records, each owned by its own account of
// issuer, to the gateway's state file before pfr starts (10 000 to a
// transaction).
func register(path, issuer string, n int) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: 5 * time.Second, NoSync: true})
	if err != nil {
		return err
	}
	defer db.Close()
	store, err := tenancy.NewBoltStore(db)
	if err != nil {
		return err
	}
	for done := 0; done < n; {
		batch := min(10000, n-done)
		err := store.Update(context.Background(), func(tx tenancy.Tx) error {
			for i := done; i < done+batch; i++ {
				acct, err := tx.EnsureAccount(issuer, fmt.Sprintf("person-%d", i))
				if err != nil {
					return err
				}
				rec := &tenancy.Record{Slug: fmt.Sprintf("r%07d", i), Relationship: tenancy.RelationshipSelf,
					Status: tenancy.StatusActive, PatientID: fmt.Sprintf("p%d", i)}
				if err := tx.CreateRecord(rec); err != nil {
					return err
				}
				if err := tx.SetMembership(tenancy.Membership{RecordID: rec.ID, AccountID: acct.ID, Role: tenancy.RoleOwner}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("registering records: %w", err)
		}
		done += batch
	}
	return db.Sync()
}

// gateway is the bench's client of one pfr.
type gateway struct {
	client *http.Client
	port   int
	dev    *auth.DevIssuer
}

// create makes the record slug through the management API as the dev
// issuer's subject sub and returns its Patient id and sub's token.
func (g *gateway) create(ctx context.Context, slug, sub string) (patientID, token string, err error) {
	if token, err = g.dev.Mint(sub, "openid patient/*.cruds", nil, 6*time.Hour); err != nil {
		return "", "", err
	}
	body := `{"slug":"` + slug + `","relationship":"self","patient":{"resourceType":"Patient",` +
		`"name":[{"family":"Bench","given":["Mark"]}],"gender":"female","birthDate":"1980-04-02"}}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, fmt.Sprintf("http://%s:%d/pfr/v1/records", baseDomain, g.port), strings.NewReader(body))
	if err != nil {
		return "", "", err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	res, err := g.client.Do(req)
	if err != nil {
		return "", "", fmt.Errorf("creating %s: %w", slug, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var rec struct {
		Slug      string `json:"slug"`
		PatientID string `json:"patientId"`
	}
	if res.StatusCode != http.StatusCreated || json.Unmarshal(raw, &rec) != nil || rec.PatientID == "" || rec.Slug != slug {
		return "", "", fmt.Errorf("creating %s: HTTP %d %.300s", slug, res.StatusCode, raw)
	}
	return rec.PatientID, token, nil
}

// provisionMany creates n records one after the other and returns each
// creation's time (request sent to answer read, every answer checked).
func (g *gateway) provisionMany(ctx context.Context, prefix string, n int) ([]time.Duration, error) {
	times := make([]time.Duration, 0, n)
	for i := range n {
		t0 := time.Now()
		if _, _, err := g.create(ctx, fmt.Sprintf("%s%05d", prefix, i), fmt.Sprintf("%s-owner-%d", prefix, i)); err != nil {
			return nil, err
		}
		times = append(times, time.Since(t0))
	}
	return times, nil
}

// get reads url with token and checks for a 200 Patient.
func (g *gateway) get(ctx context.Context, client *http.Client, url, token string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK || !bytes.Contains(raw, []byte(`"resourceType":"Patient"`)) {
		return fmt.Errorf("GET %s: HTTP %d %.300s", url, res.StatusCode, raw)
	}
	return nil
}

// connected opens clients keep-alive connections, each reading the
// Patient once and staying open, and returns pfr's VmRSS (the most seen
// while all are open) and each client's read time.
func (g *gateway) connected(ctx context.Context, pid int, url, token string, clients int) (memRow, error) {
	row := memRow{clients: clients}
	transport := pfrproc.LocalTransport()
	transport.MaxIdleConns, transport.MaxIdleConnsPerHost, transport.MaxConnsPerHost = clients, clients, clients
	transport.IdleConnTimeout = time.Minute
	client := pfrproc.LocalClient(time.Minute, transport)
	defer transport.CloseIdleConnections()
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	ready := make(chan struct{})
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-ready
			t0 := time.Now()
			if err := g.get(ctx, client, url, token); err != nil {
				errs <- err
				return
			}
			mu.Lock()
			row.reads = append(row.reads, time.Since(t0))
			mu.Unlock()
		}()
	}
	close(ready)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return row, fmt.Errorf("%d keep-alive clients: %w", clients, err)
	}
	open, err := establishedTo(pid)
	if err != nil {
		return row, err
	}
	if open < clients/2 {
		return row, fmt.Errorf("%d keep-alive clients: only %d connections open at pfr", clients, open)
	}
	time.Sleep(time.Second)
	row.after = pfrproc.VmRSS(pid)
	return row, nil
}

// establishedTo counts the process's open TCP sockets (its fds that are
// sockets), to show the clients stayed connected.
func establishedTo(pid int) (int, error) {
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		if target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); err == nil && strings.HasPrefix(target, "socket:") {
			n++
		}
	}
	return n, nil
}

// newClient is a keep-alive client that dials every host at 127.0.0.1.
func newClient(conns int) *http.Client {
	transport := pfrproc.LocalTransport()
	transport.MaxIdleConnsPerHost = conns
	return pfrproc.LocalClient(2*time.Minute, transport)
}

// pct is the p-th percentile (nearest rank) of ds.
func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	k := (p*len(s) + 99) / 100
	return s[max(k-1, 0)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }

func mib(b int64) float64 { return float64(b) / (1 << 20) }
