package main

import (
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"
)

// stats summarises a sample.
type stats struct {
	count    int
	p50, p99 time.Duration
	rps      float64       // requests per second of batch wall time
	cpu      time.Duration // Caddy's CPU time per request (0: not measured)
}

// summarize computes the stats of s.
func summarize(s sample) stats {
	st := stats{count: len(s.latencies)}
	if st.count == 0 {
		return st
	}
	sorted := slices.Clone(s.latencies)
	slices.Sort(sorted)
	st.p50 = percentile(sorted, 50)
	st.p99 = percentile(sorted, 99)
	if s.busy > 0 {
		st.rps = float64(st.count) / s.busy.Seconds()
	}
	st.cpu = s.cpu / time.Duration(st.count)
	return st
}

// percentile returns the q-th percentile of sorted (nearest rank).
func percentile(sorted []time.Duration, q int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := (q*len(sorted) + 99) / 100 // ceil(q/100 * n)
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// ratio is a/b for the table, or "-" when b is zero.
func ratio(a, b float64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

// comparison is one ratio row: target x over target y.
type comparison struct {
	name string
	x, y int // target indices
}

// report prints the per-target table and the ratio table.
func report(w io.Writer, targets []*target, results map[kind][]sample, comparisons []comparison) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "kind\ttarget\trequests\tp50\tp99\treq/s\tcpu/req\t")
	all := map[kind][]stats{}
	for _, k := range kinds {
		for i, t := range targets {
			st := summarize(results[k][i])
			all[k] = append(all[k], st)
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%.0f\t%s\t\n", k, t.label, st.count, ms(st.p50), ms(st.p99), st.rps, ms(st.cpu))
		}
	}
	_ = tw.Flush()
	fmt.Fprintln(w)

	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "kind\tratio\tp50\tp99\treq/s\tcpu/req\t")
	for _, k := range kinds {
		for _, c := range comparisons {
			x, y := all[k][c.x], all[k][c.y]
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", k, c.name,
				ratio(float64(x.p50), float64(y.p50)), ratio(float64(x.p99), float64(y.p99)), ratio(x.rps, y.rps), ratio(float64(x.cpu), float64(y.cpu)))
		}
	}
	_ = tw.Flush()
	fmt.Fprintln(w, "latency ratios above 1 and req/s ratios below 1 mean the first path is slower; cpu/req is the CPU")
	fmt.Fprintln(w, "time Caddy (gateway, proxy and store together) spent per request, steady even on a busy machine;")
	fmt.Fprintln(w, "issue 18's targets for (c)/(b): reads p50 at most 1.10× and req/s at least 0.90×; 50-entry searches p50 at most 1.15× and req/s at least 0.87×.")
}

// ms formats a duration in milliseconds.
func ms(d time.Duration) string {
	return fmt.Sprintf("%.3fms", float64(d)/float64(time.Millisecond))
}
