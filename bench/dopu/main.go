// Command dopu measures DOPU through the real gateway: the intake of
// Bundles dropped off without a token (throughput and latency for ~50 KB
// and ~2 MB Bundles from concurrent senders), and the pick-up of the
// largest Synthea Bundle into a fresh record. One Caddy process (cmd/pfr)
// serves a plain-HTTP gateway in front of the embedded store, with the
// drop-off rate limits off so the work is measured, not the limiter.
//
//	go run ./bench/dopu [-c senders] [-n50k n] [-n2m n] [-rounds n]
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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
	"time"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/internal/pfrproc"
)

// Sizes of the intake Bundles.
const (
	smallBundle = 50 << 10
	largeBundle = 2 << 20
)

// options are the command's flags.
type options struct {
	concurrency []int         // concurrent senders, one intake phase each
	small       int           // measured ~50 KB drop-offs
	large       int           // measured ~2 MB drop-offs
	warmup      int           // unmeasured, checked drop-offs per size
	duration    time.Duration // bound on each intake phase
	rounds      int           // pick-up rounds
	pfrBinary   string        // a built pfr; empty: build cmd/pfr
	synthea     string        // the Synthea Bundles' directory
	pickupDir   string        // the real documents' directory; the largest is picked up
	cpuProfile  string        // write a CPU profile of Caddy here
	profileLoad string        // what runs while profiling: pickup or intake
	profileTime time.Duration // how long to profile
}

func main() {
	var o options
	concurrency := flag.String("c", "1,4,16", "concurrent senders of drop-offs: a comma-separated list, one intake phase per size and value")
	flag.IntVar(&o.small, "n50k", 1000, "measured drop-offs of the ~50 KB Bundle per phase")
	flag.IntVar(&o.large, "n2m", 100, "measured drop-offs of the ~2 MB Bundle per phase")
	flag.IntVar(&o.warmup, "warmup", 8, "unmeasured (but checked) drop-offs per size before measuring")
	flag.DurationVar(&o.duration, "duration", 15*time.Second, "no new drop-off starts once an intake phase has run this long")
	flag.IntVar(&o.rounds, "rounds", 10, "pick-up rounds of the largest Synthea Bundle, one fresh record each")
	flag.StringVar(&o.pfrBinary, "pfr", "", "a built pfr binary (default: go build github.com/pfrgateway/caddy-pfr/cmd/pfr)")
	flag.StringVar(&o.synthea, "synthea", "", "directory of the Synthea Bundles (default: testdata/fhir/synthea of the module)")
	flag.StringVar(&o.pickupDir, "documents", "", "directory of real documents; the largest is the one picked up (default: testdata/fhir/realworld/ips of the module)")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "after measuring, write a CPU profile of Caddy under -profileload to this file")
	flag.StringVar(&o.profileLoad, "profileload", "pickup", "the load while profiling: pickup (more rounds, fresh records) or intake (2 MB drop-offs from the most senders of -c)")
	flag.DurationVar(&o.profileTime, "profiletime", 10*time.Second, "how long -cpuprofile records (whole seconds)")
	flag.Parse()
	var err error
	if o.concurrency, err = parseConcurrency(*concurrency); err != nil {
		fmt.Fprintln(os.Stderr, "bench/dopu:", err)
		os.Exit(2)
	}

	pfrproc.Main("bench/dopu", func(ctx context.Context) error { return run(ctx, o, os.Stdout, os.Stderr) })
}

// validate refuses options that cannot give a measurement.
func (o options) validate() error {
	switch {
	case len(o.concurrency) == 0 || slices.Min(o.concurrency) < 1:
		return errors.New("-c must list senders counts of at least 1")
	case o.small < 1 || o.large < 1:
		return errors.New("-n50k and -n2m must be at least 1")
	case o.warmup < 0:
		return errors.New("-warmup must not be negative")
	case o.rounds < 1:
		return errors.New("-rounds must be at least 1")
	case o.duration <= 0:
		return errors.New("-duration must be positive")
	case o.cpuProfile != "" && o.profileLoad != "pickup" && o.profileLoad != "intake":
		return fmt.Errorf("-profileload %q: want pickup or intake", o.profileLoad)
	}
	return nil
}

// run does one whole bench: Caddy up, records created, intake measured,
// pick-up measured, report, Caddy down. Progress goes to logw, results to
// out. Any drop-off or pick-up that was not answered as it must be makes
// the run fail after the table is printed.
func run(ctx context.Context, o options, out, logw io.Writer) error {
	if err := o.validate(); err != nil {
		return err
	}
	src, err := loadSynthea(o.synthea)
	if err != nil {
		return err
	}
	doc, err := loadLargest(o.pickupDir, "testdata", "fhir", "realworld", "ips")
	if err != nil {
		return err
	}
	caddy, err := pfrproc.NewBench(ctx, "dopu", o.pfrBinary, 2, logw)
	if err != nil {
		return err
	}
	defer caddy.Close()
	p := ports{gateway: caddy.Ports[0], admin: caddy.Ports[1]}
	// Any management API answer, even a 401, means the pfr handler serves.
	records := fmt.Sprintf("http://%s:%d/pfr/v1/records", baseDomain, p.gateway)
	if err := caddy.Start(ctx, caddyfile(p, caddy.WorkDir), records, http.StatusUnauthorized); err != nil {
		return err
	}
	g, err := newGateway(caddy.WorkDir, p, slices.Max(o.concurrency))
	if err != nil {
		return err
	}
	g.cpu = func() time.Duration { return pfrproc.CPUTime(caddy.Pid()) }
	fmt.Fprintf(out, "bench/dopu: %d CPUs, %s %s/%s; pfr at %s; -c %s -n50k %d -n2m %d -warmup %d -rounds %d\n\n",
		runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH, caddy.Revision(ctx),
		joinInts(o.concurrency), o.small, o.large, o.warmup, o.rounds)

	results, err := intakePhases(ctx, g, src, o, logw)
	if err != nil {
		return fmt.Errorf("%w\ncaddy log:\n%s", err, caddy.LogTail())
	}
	reportIntake(out, results)
	fmt.Fprintln(out)

	var rounds []*pickupRound
	for i := range o.rounds {
		fmt.Fprintf(logw, "pick-up round %d/%d …\n", i+1, o.rounds)
		r, err := pickupOnce(ctx, g, doc, fmt.Sprintf("pickup-%d", i+1))
		if err != nil {
			return fmt.Errorf("pick-up round %d: %w\ncaddy log:\n%s", i+1, err, caddy.LogTail())
		}
		rounds = append(rounds, r)
	}
	reportPickup(out, doc, rounds)

	if o.cpuProfile != "" {
		if err := profileCaddy(ctx, g, p.admin, src, doc, o, logw); err != nil {
			return err
		}
		fmt.Fprintf(out, "\nCPU profile of Caddy under %s load: %s (go tool pprof -top %s)\n", o.profileLoad, o.cpuProfile, o.cpuProfile)
	}
	for _, r := range results {
		if r.failed > 0 {
			return fmt.Errorf("%d drop-offs of the %s Bundle were not answered with a new receipt; the first: %w", r.failed, r.label, r.firstFail)
		}
	}
	return nil
}

// newGateway returns the bench's client of the gateway, with a token of
// the records' owner from the gateway's development issuer.
func newGateway(workDir string, p ports, concurrency int) (*gateway, error) {
	dev, err := auth.LoadOrCreateDevIssuer(filepath.Join(workDir, "gateway"))
	if err != nil {
		return nil, fmt.Errorf("loading the gateway's dev issuer: %w", err)
	}
	token, err := dev.Mint("bench-owner", "openid patient/*.cruds", nil, 6*time.Hour)
	if err != nil {
		return nil, fmt.Errorf("minting a token: %w", err)
	}
	return &gateway{client: newClient(concurrency), port: p.gateway, token: token}, nil
}

// intakePhases creates the intake record and measures, for the ~50 KB
// and then the ~2 MB Bundle, one phase per sender count (after a warm-up
// per size); the inbox must then list every receipt.
func intakePhases(ctx context.Context, g *gateway, src *syntheaBundle, o options, logw io.Writer) ([]*intakeResult, error) {
	const slug = "intake"
	if _, err := g.createRecord(ctx, slug, src.patient); err != nil {
		return nil, err
	}
	nonce := make([]byte, 8)
	_, _ = rand.Read(nonce) // never fails (crypto/rand)
	seen := &receipts{}
	var results []*intakeResult
	sent := 0
	for _, size := range []struct {
		label string
		bytes int
		count int
	}{{"50 KB", smallBundle, o.small}, {"2 MB", largeBundle, o.large}} {
		entries := fillEntries(src, size.bytes)
		maker := newBodyMaker(entries, hex.EncodeToString(nonce))
		if o.warmup > 0 {
			fmt.Fprintf(logw, "intake %s: warming up …\n", size.label)
			warm := measureIntake(ctx, g, seen, intakePlan{slug: slug, maker: maker, first: sent, count: o.warmup, concurrency: slices.Max(o.concurrency)})
			if warm.failed > 0 {
				return nil, fmt.Errorf("intake %s warm-up: %w", size.label, warm.firstFail)
			}
			sent += o.warmup
		}
		for _, c := range o.concurrency {
			fmt.Fprintf(logw, "intake %s: %d drop-offs from %d senders …\n", size.label, size.count, c)
			r := measureIntake(ctx, g, seen, intakePlan{slug: slug, maker: maker, first: sent, count: size.count,
				concurrency: c, deadline: time.Now().Add(o.duration)})
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			r.label, r.entries = size.label, len(entries)
			results = append(results, r)
			sent += size.count
		}
	}
	listed, err := inboxSize(ctx, g, slug)
	if err != nil {
		return nil, err
	}
	if listed != seen.count() {
		return nil, fmt.Errorf("the inbox lists %d drop-offs, but %d receipts were given", listed, seen.count())
	}
	return results, nil
}

// parseConcurrency reads -c: a comma-separated list of positive numbers.
func parseConcurrency(s string) ([]int, error) {
	var out []int
	for field := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(field))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-c %q: want a comma-separated list of positive numbers", s)
		}
		out = append(out, n)
	}
	return out, nil
}

// joinInts formats a list of numbers as -c takes it.
func joinInts(ns []int) string {
	parts := make([]string, len(ns))
	for i, n := range ns {
		parts[i] = strconv.Itoa(n)
	}
	return strings.Join(parts, ",")
}

// loadSynthea loads the largest Synthea Bundle from dir, or from the
// module's testdata when dir is empty.
func loadSynthea(dir string) (*syntheaBundle, error) {
	return loadLargest(dir, "testdata", "fhir", "synthea")
}

// loadLargest loads the largest Bundle of dir, or, when dir is empty, of
// the module's directory at path.
func loadLargest(dir string, path ...string) (*syntheaBundle, error) {
	if dir == "" {
		root, err := moduleRoot()
		if err != nil {
			return nil, err
		}
		dir = filepath.Join(append([]string{root}, path...)...)
	}
	return largestSynthea(dir)
}

// moduleRoot is the nearest directory at or above the working directory
// that holds go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding the module root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory; pass -synthea")
		}
		dir = parent
	}
}
