// Command cluster measures what several gateway nodes on PostgreSQL cost
// and give, as ratios taken in one run so that the machine's noise hits
// both sides alike:
//
//   - throughput of FHIR reads through one node vs through Caddy's balancer
//     over two nodes (both on one PostgreSQL, one shared upstream);
//   - the time to provision a record (POST /pfr/v1/records) on a node with
//     PostgreSQL state vs a node with bbolt state, same upstream.
//
// Rounds alternate between the two sides of each ratio. It starts its own
// throwaway PostgreSQL (internal/pgtest) unless PFR_TEST_POSTGRES_DSN names
// one.
//
//	go run ./bench/cluster [-n reads] [-c clients] [-records n]
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/internal/pfrproc"
	"github.com/pfrgateway/caddy-pfr/internal/pgtest"
)

type options struct {
	reads, clients, records, round int
	pfrBinary                      string
}

func main() {
	var o options
	flag.IntVar(&o.reads, "n", 3000, "measured reads per side")
	flag.IntVar(&o.clients, "c", 8, "concurrent keep-alive clients")
	flag.IntVar(&o.records, "records", 40, "records provisioned per side")
	flag.IntVar(&o.round, "round", 250, "reads per side in one round")
	flag.StringVar(&o.pfrBinary, "pfr", "", "a built pfr binary (default: go build ./cmd/pfr)")
	flag.Parse()
	pfrproc.Main("cluster", func(ctx context.Context) error { return run(ctx, o, os.Stdout) })
}

const global = `{
	admin off
	persist_config off
	auto_https off
	default_bind 127.0.0.1
}
`

// node is a gateway: %[1]d port, %[2]s data dir, %[3]s state line, %[4]d upstream port.
const node = global + `
http://pfr.localhost:%[1]d, http://*.pfr.localhost:%[1]d {
	pfr {
		base_domain pfr.localhost
		data_dir %[2]s
		dev_issuer
		%[3]s
		upstream reverse_proxy 127.0.0.1:%[4]d
	}
}
`

// store serves two embedded stores: one shared by the PostgreSQL nodes,
// one for the bbolt node (whose partition ids start at 1 again).
const store = global + `
http://:%[1]d {
	pfr_store {
		path %[2]s/store.db
	}
}
http://:%[3]d {
	pfr_store {
		path %[2]s/store-bolt.db
	}
}
`

const balancer = global + `
http://pfr.localhost:%[1]d, http://*.pfr.localhost:%[1]d {
	reverse_proxy 127.0.0.1:%[2]d 127.0.0.1:%[3]d {
		lb_policy round_robin
	}
}
`

func run(ctx context.Context, o options, out io.Writer) error {
	defer pgtest.Stop()
	dsn, drop, err := pgtest.Database(ctx)
	if err != nil {
		return fmt.Errorf("PostgreSQL: %w", err)
	}
	defer drop()
	// Five processes: the shared store, nodes A and B on PostgreSQL, node C
	// on bbolt, the balancer.
	procs := make([]*pfrproc.Bench, 5)
	for i := range procs {
		bin := o.pfrBinary
		if i > 0 {
			bin = procs[0].Binary
		}
		b, err := pfrproc.NewBench(ctx, fmt.Sprintf("cluster%d", i), bin, 2, out)
		if err != nil {
			return err
		}
		defer b.Close()
		procs[i] = b
	}
	st, a, b, c, lb := procs[0], procs[1], procs[2], procs[3], procs[4]
	dev, err := auth.LoadOrCreateDevIssuer(filepath.Join(a.WorkDir, "data"))
	if err != nil {
		return err
	}
	for _, n := range []*pfrproc.Bench{b, c} {
		key, err := os.ReadFile(filepath.Join(a.WorkDir, "data", auth.DevIssuerFile))
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(n.WorkDir, "data"), 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(n.WorkDir, "data", auth.DevIssuerFile), key, 0o600); err != nil {
			return err
		}
	}
	if err := st.Start(ctx, fmt.Sprintf(store, st.Ports[0], st.WorkDir, st.Ports[1]), fmt.Sprintf("http://127.0.0.1:%d/fhir/metadata", st.Ports[0]), 200); err != nil {
		return err
	}
	pg := "state postgres " + dsn
	for _, n := range []struct {
		b        *pfrproc.Bench
		state    string
		upstream int
	}{{a, pg, st.Ports[0]}, {b, pg, st.Ports[0]}, {c, "state bolt", st.Ports[1]}} {
		cfg := fmt.Sprintf(node, n.b.Ports[0], filepath.Join(n.b.WorkDir, "data"), n.state, n.upstream)
		if err := n.b.Start(ctx, cfg, fmt.Sprintf("http://pfr.localhost:%d/pfr/v1/health", n.b.Ports[0]), 200); err != nil {
			return err
		}
	}
	if err := lb.Start(ctx, fmt.Sprintf(balancer, lb.Ports[0], a.Ports[0], b.Ports[0]), fmt.Sprintf("http://pfr.localhost:%d/pfr/v1/health", lb.Ports[0]), 200); err != nil {
		return err
	}
	client := pfrproc.LocalClient(30*time.Second, pfrproc.LocalTransport())
	token, err := dev.Mint("bench", "openid patient/*.cruds", nil, time.Hour)
	if err != nil {
		return err
	}

	// Provisioning: records on PostgreSQL (A) and on bbolt (C), alternating.
	var pgTimes, boltTimes []time.Duration
	var patient string
	for i := range o.records {
		for _, side := range []struct {
			port  int
			times *[]time.Duration
			slug  string
		}{{a.Ports[0], &pgTimes, fmt.Sprintf("pg%d", i)}, {c.Ports[0], &boltTimes, fmt.Sprintf("bolt%d", i)}} {
			start := time.Now()
			id, err := createRecord(ctx, client, side.port, token, side.slug)
			if err != nil {
				return err
			}
			*side.times = append(*side.times, time.Since(start))
			if side.slug == "pg0" {
				patient = id
			}
		}
	}

	// Reads of the record's Patient: node A alone vs the balancer over A and B.
	var oneTime, twoTime time.Duration
	var oneN, twoN int
	for done := 0; done < o.reads; done += o.round {
		for _, side := range []struct {
			port int
			d    *time.Duration
			n    *int
		}{{a.Ports[0], &oneTime, &oneN}, {lb.Ports[0], &twoTime, &twoN}} {
			url := fmt.Sprintf("http://pg0.pfr.localhost:%d/fhir/Patient/%s", side.port, patient)
			d, err := readRound(ctx, client, url, token, o.round, o.clients)
			if err != nil {
				return err
			}
			*side.d += d
			*side.n += o.round
		}
	}
	one := float64(oneN) / oneTime.Seconds()
	two := float64(twoN) / twoTime.Seconds()
	pgMed, boltMed := median(pgTimes), median(boltTimes)
	fmt.Fprintf(out, "reads through one node:        %8.0f/s (%d)\n", one, oneN)
	fmt.Fprintf(out, "reads through two nodes (lb):  %8.0f/s (%d)\n", two, twoN)
	fmt.Fprintf(out, "ratio two/one:                 %8.2f\n", two/one)
	fmt.Fprintf(out, "provisioning, PostgreSQL:      %8.1f ms median (%d)\n", ms(pgMed), len(pgTimes))
	fmt.Fprintf(out, "provisioning, bbolt:           %8.1f ms median (%d)\n", ms(boltMed), len(boltTimes))
	fmt.Fprintf(out, "ratio PostgreSQL/bbolt:        %8.2f\n", float64(pgMed)/float64(boltMed))
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func createRecord(ctx context.Context, client *http.Client, port int, token, slug string) (string, error) {
	body, _ := json.Marshal(map[string]any{"slug": slug, "relationship": "self", "patient": map[string]any{
		"resourceType": "Patient", "name": []any{map[string]any{"family": "Bench", "given": []any{slug}}}, "birthDate": "1990-01-01"}})
	req, err := http.NewRequestWithContext(ctx, "POST", fmt.Sprintf("http://pfr.localhost:%d/pfr/v1/records", port), bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	res, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var out struct {
		PatientID string `json:"patientId"`
	}
	if res.StatusCode != http.StatusCreated || json.Unmarshal(raw, &out) != nil || out.PatientID == "" {
		return "", fmt.Errorf("creating %s: %d %.300s", slug, res.StatusCode, raw)
	}
	return out.PatientID, nil
}

// readRound sends n GETs of url with c clients and returns how long they
// took; every answer must be a 200.
func readRound(ctx context.Context, client *http.Client, url, token string, n, c int) (time.Duration, error) {
	jobs := make(chan struct{}, n)
	for range n {
		jobs <- struct{}{}
	}
	close(jobs)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	start := time.Now()
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
				if err == nil {
					req.Header.Set("Authorization", "Bearer "+token)
					var res *http.Response
					if res, err = client.Do(req); err == nil {
						_, _ = io.Copy(io.Discard, res.Body)
						res.Body.Close()
						if res.StatusCode != http.StatusOK {
							err = fmt.Errorf("GET %s: %s", url, res.Status)
						}
					}
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(start), firstErr
}
