// Command bulk measures Bulk Data export and import through the real
// gateway against reading the same record page by page: one Caddy process
// (cmd/pfr) serves a plain-HTTP gateway in front of the embedded store;
// a record holds -n Observations (and its Patient). Each round reads the
// record page by page (_count=250, following next links), exports it with
// $export (kick-off to the last file downloaded, pfr export's client), and
// imports the export into a fresh record of the same person (pfr
// import's client). Throughput is resources per second; peak memory is
// the gateway process's resident set (VmRSS, sampled every 10 ms) during
// each phase, and its RssAnon (its own memory, without the database
// file's mapped pages). Ratios are taken within the run.
//
//	go run ./bench/bulk [-n 10000] [-rounds 3]
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

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/bulkclient"
	"github.com/pfrgateway/caddy-pfr/internal/pfrproc"
)

const baseDomain = "pfr.localhost"

type options struct {
	n, rounds int
	pfrBinary string
}

func main() {
	var o options
	flag.IntVar(&o.n, "n", 10000, "Observations in the record")
	flag.IntVar(&o.rounds, "rounds", 3, "rounds of (pages, export, import)")
	flag.StringVar(&o.pfrBinary, "pfr", "", "a built pfr binary (default: go build github.com/pfrgateway/caddy-pfr/cmd/pfr)")
	flag.Parse()
	pfrproc.Main("bench/bulk", func(ctx context.Context) error { return run(ctx, o, os.Stdout, os.Stderr) })
}

func caddyfile(port, admin int, workDir string) string {
	return pfrproc.PlainGateway(admin, port, workDir, baseDomain, pfrproc.StoreUpstream(workDir))
}

// phase is one measured phase of a round.
type phase struct {
	name      string
	resources int
	elapsed   time.Duration
	peakRSS   int64 // bytes
	peakAnon  int64 // bytes of RssAnon: the process's own memory, not the database file's pages
}

func run(ctx context.Context, o options, out, logw io.Writer) error {
	if o.n < 1 || o.rounds < 1 {
		return errors.New("-n and -rounds must be at least 1")
	}
	caddy, err := pfrproc.NewBench(ctx, "bulk", o.pfrBinary, 2, logw)
	if err != nil {
		return err
	}
	defer caddy.Close()
	port, admin := caddy.Ports[0], caddy.Ports[1]
	apex := fmt.Sprintf("http://%s:%d", baseDomain, port)
	if err := caddy.Start(ctx, caddyfile(port, admin, caddy.WorkDir), apex+"/pfr/v1/records", http.StatusUnauthorized); err != nil {
		return err
	}
	dev, err := auth.LoadOrCreateDevIssuer(filepath.Join(caddy.WorkDir, "gateway"))
	if err != nil {
		return err
	}
	token, err := dev.Mint("bench", "openid patient/*.cruds", nil, 6*time.Hour)
	if err != nil {
		return err
	}
	hc := pfrproc.LocalClient(10*time.Minute, pfrproc.LocalTransport())
	b := &bench{hc: hc, apex: apex, port: port, token: token}
	fmt.Fprintf(logw, "loading %d Observations …\n", o.n)
	pid, err := b.createRecord(ctx, "source")
	if err != nil {
		return err
	}
	if err := b.load(ctx, "source", pid, o.n); err != nil {
		return err
	}
	fmt.Fprintf(out, "bench/bulk: %d CPUs, %s %s/%s; pfr at %s; a record of %d resources; -rounds %d\n\n",
		runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH, caddy.Revision(ctx), o.n+1, o.rounds)
	var all [][3]phase
	for round := range o.rounds {
		var r [3]phase
		steps := []struct {
			name string
			fn   func() (int, error)
		}{
			{"pages", func() (int, error) { return b.readPages(ctx, "source") }},
			{"export", func() (int, error) {
				res, err := b.client().Export(ctx, b.recordBase("source"), bulkclient.ExportOptions{OutDir: filepath.Join(caddy.WorkDir, "export-"+strconv.Itoa(round))})
				if err != nil {
					return 0, err
				}
				return res.Resources, nil
			}},
			{"import", func() (int, error) {
				slug := "copy-" + strconv.Itoa(round)
				if _, err := b.createRecord(ctx, slug); err != nil {
					return 0, err
				}
				res, err := b.client().Import(ctx, b.recordBase(slug), filepath.Join(caddy.WorkDir, "export-"+strconv.Itoa(round)), false)
				if err != nil {
					return 0, err
				}
				var result struct {
					Imported int `json:"imported"`
				}
				_ = json.Unmarshal(res.Result, &result)
				if result.Imported != o.n {
					return 0, fmt.Errorf("imported %d of %d Observations", result.Imported, o.n)
				}
				return res.Resources, nil
			}},
		}
		for i, s := range steps {
			fmt.Fprintf(logw, "round %d/%d: %s …\n", round+1, o.rounds, s.name)
			runtime.GC()
			stop := sampleRSS(caddy.Pid())
			start := time.Now()
			n, err := s.fn()
			elapsed := time.Since(start)
			peak, anon := stop()
			if err != nil {
				return fmt.Errorf("round %d, %s: %w\ncaddy log:\n%s", round+1, s.name, err, caddy.LogTail())
			}
			if n != o.n+1 {
				return fmt.Errorf("round %d, %s: %d resources, want %d", round+1, s.name, n, o.n+1)
			}
			r[i] = phase{name: s.name, resources: n, elapsed: elapsed, peakRSS: peak, peakAnon: anon}
		}
		all = append(all, r)
	}
	report(out, all)
	return nil
}

func report(out io.Writer, rounds [][3]phase) {
	med := func(i int, f func(phase) float64) float64 {
		var v []float64
		for _, r := range rounds {
			v = append(v, f(r[i]))
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	rate := func(p phase) float64 { return float64(p.resources) / p.elapsed.Seconds() }
	rss := func(p phase) float64 { return float64(p.peakRSS) / (1 << 20) }
	anon := func(p phase) float64 { return float64(p.peakAnon) / (1 << 20) }
	fmt.Fprintf(out, "| phase | resources/s (median) | peak RSS MiB (median) | peak RssAnon MiB (median) | throughput vs pages | peak RSS vs pages | peak RssAnon vs pages |\n|---|---|---|---|---|---|---|\n")
	for i, name := range []string{"pages", "export", "import"} {
		fmt.Fprintf(out, "| %s | %.0f | %.1f | %.1f | %.2f× | %.2f× | %.2f× |\n", name, med(i, rate), med(i, rss), med(i, anon),
			med(i, rate)/med(0, rate), med(i, rss)/med(0, rss), med(i, anon)/med(0, anon))
	}
	fmt.Fprintln(out, "\nper round (seconds: pages / export / import):")
	for k, r := range rounds {
		fmt.Fprintf(out, "  %d: %.2f / %.2f / %.2f\n", k+1, r[0].elapsed.Seconds(), r[1].elapsed.Seconds(), r[2].elapsed.Seconds())
	}
}

// sampleRSS samples the process's VmRSS and RssAnon every 10 ms until the
// returned function is called, which returns the largest samples.
func sampleRSS(pid int) func() (int64, int64) {
	var mu sync.Mutex
	var peak, peakAnon int64
	done := make(chan struct{})
	finished := make(chan struct{})
	read := func() {
		v, a := pfrproc.VmRSS(pid), pfrproc.ProcStatus(pid, "RssAnon")
		mu.Lock()
		peak, peakAnon = max(peak, v), max(peakAnon, a)
		mu.Unlock()
	}
	go func() {
		defer close(finished)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			read()
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() (int64, int64) {
		close(done)
		<-finished
		read()
		mu.Lock()
		defer mu.Unlock()
		return peak, peakAnon
	}
}

type bench struct {
	hc    *http.Client
	apex  string
	port  int
	token string
}

func (b *bench) client() *bulkclient.Client {
	return &bulkclient.Client{HTTP: b.hc, Token: b.token, PollMin: 50 * time.Millisecond, PollMax: 200 * time.Millisecond}
}

func (b *bench) recordBase(slug string) string {
	return fmt.Sprintf("http://%s.%s:%d/fhir", slug, baseDomain, b.port)
}

func (b *bench) do(ctx context.Context, method, url string, body []byte) ([]byte, int, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+b.token)
	req.Header.Set("Content-Type", "application/fhir+json")
	res, err := b.hc.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	return raw, res.StatusCode, err
}

const patient = `{"resourceType":"Patient","name":[{"family":"Bench","given":["Bea"]}],"birthDate":"1960-02-03","gender":"female"}`

func (b *bench) createRecord(ctx context.Context, slug string) (string, error) {
	raw, status, err := b.do(ctx, "POST", b.apex+"/pfr/v1/records", []byte(`{"slug":"`+slug+`","patient":`+patient+`}`))
	if err != nil || status != http.StatusCreated {
		return "", fmt.Errorf("creating %s: %d %s %v", slug, status, raw, err)
	}
	var v struct {
		PatientID string `json:"patientId"`
	}
	return v.PatientID, json.Unmarshal(raw, &v)
}

// load writes n Observations (glucose readings, as a sensor does) in
// transactions of 500.
func (b *bench) load(ctx context.Context, slug, pid string, n int) error {
	for done := 0; done < n; {
		var entries []string
		for i := 0; i < 500 && done < n; i++ {
			done++
			entries = append(entries, fmt.Sprintf(`{"resource":{"resourceType":"Observation","status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"2339-0","display":"Glucose"}]},"subject":{"reference":"Patient/%s"},"effectiveDateTime":"2026-01-01T00:00:00Z","valueQuantity":{"value":%d.%d0,"unit":"mg/dL","system":"http://unitsofmeasure.org","code":"mg/dL"}},"request":{"method":"POST","url":"Observation"}}`, pid, 70+done%60, done%10))
		}
		body := `{"resourceType":"Bundle","type":"transaction","entry":[` + strings.Join(entries, ",") + `]}`
		raw, status, err := b.do(ctx, "POST", b.recordBase(slug), []byte(body))
		if err != nil || status != http.StatusOK {
			return fmt.Errorf("loading: %d %.300s %v", status, raw, err)
		}
	}
	return nil
}

// readPages reads the record's Patient and Observations page by page, as
// an app that pages through a search does; it returns the resources read.
func (b *bench) readPages(ctx context.Context, slug string) (int, error) {
	n := 0
	for _, typ := range []string{"Patient", "Observation"} {
		next := b.recordBase(slug) + "/" + typ + "?_count=250"
		for next != "" {
			raw, status, err := b.do(ctx, "GET", next, nil)
			if err != nil || status != http.StatusOK {
				return 0, fmt.Errorf("page %s: %d %v", next, status, err)
			}
			var page struct {
				Link []struct {
					Relation, URL string
				} `json:"link"`
				Entry []json.RawMessage `json:"entry"`
			}
			if err := json.Unmarshal(raw, &page); err != nil {
				return 0, err
			}
			n += len(page.Entry)
			next = ""
			for _, l := range page.Link {
				if l.Relation == "next" {
					next = l.URL
				}
			}
		}
	}
	return n, nil
}
