// Command gateway measures the gateway's cost as ratios taken in one run:
// the same FHIR read and search, against the same data, sent (a) straight
// to the embedded store pfr_store, (b) through a bare Caddy reverse_proxy
// in front of it, (c) through the gateway with bearer-token auth over plain
// HTTP, (d) through the gateway over HTTPS, and (e) through the gateway
// over plain HTTP with trust_upstream_isolation (no response filtering).
// One Caddy process serves them all, so the machine's noise hits each alike.
//
//	go run ./bench/gateway [-n requests] [-c concurrency] [-duration d]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/pfrproc"
)

// options are the command's flags.
type options struct {
	requests    int           // measured requests per target and kind
	concurrency int           // concurrent workers
	duration    time.Duration // bound on the measured phase
	warmup      int           // unmeasured, fully verified requests per target and kind
	roundSize   int           // requests per target and kind in one round
	pfrBinary   string        // a built pfr; empty: build cmd/pfr
	https       bool          // also measure (d)
	trusted     bool          // also measure (e)
	direct      bool          // the gateways use a reverse_proxy upstream's transport directly
	embedded    bool          // also measure (f)
	cpuProfile  string        // write a CPU profile of the gateway path here
	memProfile  string        // write an allocation profile of the gateway path here
	profileTime time.Duration // how long to profile
	profileKind string        // read, search or both
	profileOf   string        // the target profiled: "b" or "c"
	hapi        bool          // (a) is the HAPI test server instead of pfr_store
	hapiJar     string        // its jar; "": test/hapi's
	callgrind   string        // count instructions under callgrind, dumps in this directory
	callgrindN  int           // requests per counted window
	callFill    int           // uncounted reads before the windows
}

func main() {
	var o options
	flag.IntVar(&o.requests, "n", 4000, "measured requests per target and request kind")
	flag.IntVar(&o.concurrency, "c", 4, "concurrent keep-alive clients")
	flag.DurationVar(&o.duration, "duration", 75*time.Second, "no new round starts once the measured phase has run this long")
	flag.IntVar(&o.warmup, "warmup", 200, "unmeasured warm-up requests per target and request kind (every answer fully decoded and checked)")
	flag.IntVar(&o.roundSize, "round", 100, "requests per target and request kind in one round; targets take turns round by round")
	flag.StringVar(&o.pfrBinary, "pfr", "", "a built pfr binary (default: go build github.com/pfrgateway/caddy-pfr/cmd/pfr)")
	flag.BoolVar(&o.https, "https", true, "also measure (d), the gateway over HTTPS")
	flag.BoolVar(&o.direct, "direct", true, "the gateways send upstream requests through the reverse_proxy upstream's transport directly (false: direct_upstream off, through the handler)")
	flag.BoolVar(&o.trusted, "trusted", true, "also measure (e), the gateway with trust_upstream_isolation (no response filtering)")
	flag.BoolVar(&o.embedded, "embedded", true, "also measure (f), the gateway with the store in its own process (upstream pfr_store, as Caddyfile.example runs it; not with -hapi)")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "after measuring, load only the gateway and write Caddy's CPU profile to this file")
	flag.StringVar(&o.memProfile, "memprofile", "", "after measuring, load only the gateway and write what Caddy allocated meanwhile (a delta of /debug/pprof/allocs) to this file")
	flag.DurationVar(&o.profileTime, "profiletime", 10*time.Second, "how long -cpuprofile profiles")
	flag.StringVar(&o.profileKind, "profilekind", "both", "the requests sent while profiling: read, search or both")
	flag.StringVar(&o.profileOf, "profiletarget", "c", "the target loaded while profiling: c (the gateway) or b (the bare reverse_proxy, to compare with)")
	flag.BoolVar(&o.hapi, "hapi", false, "measure in front of the HAPI test server (test/hapi, partition header) instead of pfr_store")
	flag.StringVar(&o.hapiJar, "hapi-jar", "", "the HAPI test server's jar (default: test/hapi's)")
	flag.StringVar(&o.callgrind, "callgrind", "", "instead of timing, run Caddy under valgrind's callgrind and count the instructions it executes per request in windows of -callgrind-n requests on (b) and (c); the dumps go to this directory")
	flag.IntVar(&o.callgrindN, "callgrind-n", 800, "requests per window counted with -callgrind")
	flag.IntVar(&o.callFill, "callgrind-fill", defaultLogFill, "uncounted reads sent before the -callgrind windows, so that the record's access log is at its limit as after some use")
	flag.Parse()

	pfrproc.Main("bench/gateway", func(ctx context.Context) error { return run(ctx, o, os.Stdout, os.Stderr) })
}

// validate refuses options that cannot give a measurement.
func (o options) validate() error {
	switch {
	case o.requests < 1:
		return errors.New("-n must be at least 1")
	case o.concurrency < 1:
		return errors.New("-c must be at least 1")
	case o.warmup < 1:
		return errors.New("-warmup must be at least 1: it is where every answer is decoded and checked")
	case o.roundSize < 1:
		return errors.New("-round must be at least 1")
	case o.duration <= 0:
		return errors.New("-duration must be positive")
	case o.callgrind != "" && o.callgrindN < 1:
		return errors.New("-callgrind-n must be at least 1")
	}
	if _, err := parseKinds(o.profileKind); (o.cpuProfile != "" || o.memProfile != "") && err != nil {
		return err
	}
	if (o.cpuProfile != "" || o.memProfile != "") && o.profileOf != "b" && o.profileOf != "c" {
		return errors.New("-profiletarget must be b or c")
	}
	return nil
}

// run does one whole bench: Caddy up, data in, warm-up, measurement,
// report, Caddy down. Progress goes to logw, the results to out.
func run(ctx context.Context, o options, out, logw io.Writer) error {
	if err := o.validate(); err != nil {
		return err
	}
	caddy, err := pfrproc.NewBench(ctx, "gateway", o.pfrBinary, 7, logw)
	if err != nil {
		return err
	}
	defer caddy.Close()
	if o.callgrind != "" {
		if o.callgrind, err = filepath.Abs(o.callgrind); err == nil {
			err = os.MkdirAll(o.callgrind, 0o755)
		}
		if err != nil {
			return fmt.Errorf("-callgrind: %w", err)
		}
		if caddy.Binary, err = callgrindWrapper(o.callgrind, caddy.Binary); err != nil {
			return err
		}
	}
	list, workDir := caddy.Ports, caddy.WorkDir
	p := ports{store: list[0], proxy: list[1], gateway: list[2], gatewayTLS: list[3], trusted: list[4], admin: list[5], embedded: list[6]}
	if o.hapi {
		hapi, err := startHAPI(ctx, o.hapiJar, workDir, logw)
		if err != nil {
			return err
		}
		defer hapi.Stop()
		if p.store, err = portOf(hapi.Addr); err != nil {
			return err
		}
	}
	ready := fmt.Sprintf("http://127.0.0.1:%d/fhir/metadata", p.proxy)
	if err := caddy.Start(ctx, caddyfile(p, workDir, sites{tls: o.https, trusted: o.trusted, embedded: o.embedded, external: o.hapi, handler: !o.direct}), ready, http.StatusOK); err != nil {
		return err
	}

	fmt.Fprintln(logw, "creating the record and its data through the gateway …")
	fx, err := prepare(ctx, newClient(1), p, workDir)
	if err != nil {
		return fmt.Errorf("%w\ncaddy log:\n%s", err, caddy.LogTail())
	}
	targets := benchTargets(p, fx, o)
	if o.hapi {
		targets[0].label = "(a) HAPI"
	}

	fmt.Fprintf(out, "bench/gateway: %d CPUs, %s %s/%s; pfr at %s; upstream %s; partition %s, %d Observations; -n %d -c %d -round %d -warmup %d\n",
		runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH, caddy.Revision(ctx), targets[0].label[4:], fx.partition, len(fx.obsIDs),
		o.requests, o.concurrency, o.roundSize, o.warmup)

	fmt.Fprintln(logw, "warming up (every answer decoded and checked) …")
	warm := plan{requests: o.warmup, roundSize: max(o.warmup/2, 1), concurrency: o.concurrency, check: (*target).checkFull}
	if _, err := rounds(ctx, targets, fx, warm); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}

	if o.callgrind != "" {
		return countInstructions(ctx, caddy.Pid(), p.admin, o.callgrind, targets, fx, o.callgrindN, o.callFill, out, logw)
	}

	start := time.Now()
	measure := plan{
		requests: o.requests, roundSize: o.roundSize, concurrency: o.concurrency,
		deadline: start.Add(o.duration), check: (*target).checkFast,
		progress: func(done, total int) { fmt.Fprintf(logw, "\rmeasuring: %d/%d per target and kind", done, total) },
		cpu:      func() time.Duration { return pfrproc.CPUTime(caddy.Pid()) },
	}
	results, err := rounds(ctx, targets, fx, measure)
	fmt.Fprintln(logw)
	if err != nil {
		return fmt.Errorf("measuring: %w", err)
	}
	fmt.Fprintf(out, "measured in %s\n\n", time.Since(start).Round(100*time.Millisecond))
	report(out, targets, results, comparisons(targets))

	var want []profileRequest
	if o.cpuProfile != "" {
		want = append(want, profileRequest{"profile", o.cpuProfile})
	}
	if o.memProfile != "" {
		want = append(want, profileRequest{"allocs", o.memProfile})
	}
	if len(want) > 0 {
		profiledTarget := targets[2]
		if o.profileOf == "b" {
			profiledTarget = targets[1]
		}
		fmt.Fprintf(logw, "profiling %s for %s …\n", profiledTarget.label, o.profileTime)
		profiled, _ := parseKinds(o.profileKind) // validated above
		sent, err := profileGateway(ctx, p.admin, profiledTarget, fx, profiled, o.concurrency, o.profileTime, want)
		if err != nil {
			return err
		}
		for _, w := range want {
			what := "CPU"
			if w.kind == "allocs" {
				what = "allocation"
			}
			fmt.Fprintf(out, "\n%s profile of Caddy under %s-only load (%s, about %d requests): %s (go tool pprof -top %s)\n",
				what, profiledTarget.label, o.profileKind, sent, w.path, w.path)
		}
	}
	return nil
}

// benchTargets returns (a), (b), (c) and, as asked for, (d) and (e), in
// that order.
func benchTargets(p ports, fx *fixture, o options) []*target {
	// Every target gets the same request: an app's bearer token (which the
	// store and the bare proxy's upstream ignore; the bare proxy removes it
	// as the gateway does) and the partition header (which the gateway
	// replaces by the record's). Only the work each does with it differs,
	// not the bytes it has to read.
	header := map[string][]string{"Authorization": {"Bearer " + fx.token}, "X-Request-Partition-Ids": {fx.partition}}
	record := func(scheme string, port int) string {
		return fmt.Sprintf("%s://%s.%s:%d/fhir", scheme, slug, baseDomain, port)
	}
	targets := []*target{
		{label: "(a) pfr_store", base: fmt.Sprintf("http://127.0.0.1:%d/fhir", p.store), header: header},
		{label: "(b) reverse_proxy", base: fmt.Sprintf("http://127.0.0.1:%d/fhir", p.proxy), header: header},
		{label: "(c) gateway", base: record("http", p.gateway), header: header},
	}
	if o.https {
		targets = append(targets, &target{label: "(d) gateway https", base: record("https", p.gatewayTLS), header: header})
	}
	if o.trusted {
		targets = append(targets, &target{label: "(e) gateway trusting", base: record("http", p.trusted), header: header})
	}
	if o.embedded && !o.hapi {
		targets = append(targets, &target{label: "(f) gateway embedded", base: record("http", p.embedded), header: header})
	}
	for _, t := range targets {
		t.client = newClient(o.concurrency) // one pool per target: no target reuses another's connections
	}
	return targets
}

// comparisons are the ratio rows for the targets present: the gateway
// against the bare proxy (the target), the proxy against the store,
// the gateway over HTTPS against the bare proxy and against itself over
// plain HTTP, the gateway without response filtering against the bare
// proxy, and the gateway with the store in its process against the bare
// proxy and against the store alone (what the embedded default adds).
func comparisons(targets []*target) []comparison {
	index := map[byte]int{}
	for i, t := range targets {
		index[t.label[1]] = i // the letter in "(a) …"
	}
	var cs []comparison
	for _, pair := range []string{"cb", "ba", "ca", "db", "dc", "eb", "ce", "fb", "fa"} {
		x, okX := index[pair[0]]
		y, okY := index[pair[1]]
		if okX && okY {
			cs = append(cs, comparison{fmt.Sprintf("(%c)/(%c)", pair[0], pair[1]), x, y})
		}
	}
	return cs
}
