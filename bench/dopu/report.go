package main

import (
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"
)

// percentile returns the q-th percentile of sorted (nearest rank).
func percentile(sorted []time.Duration, q int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := (q*len(sorted) + 99) / 100 // ceil(q/100 * n)
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// sortedCopy returns d sorted, leaving d as it is.
func sortedCopy(d []time.Duration) []time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s
}

// ms formats a duration in milliseconds.
func ms(d time.Duration) string {
	return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
}

// reportIntake prints one row per intake phase: accepted drop-offs per
// second of the phase's wall time, the megabytes per second they carried,
// their latency, and Caddy's CPU time per accepted drop-off (cpu/drop:
// what the gateway spends on one, steady however busy a shared machine
// is, unlike the latency; "-" when unknown).
func reportIntake(w io.Writer, results []*intakeResult) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "intake\tbytes\tentries\tc\taccepted\tfailed\tdrop-offs/s\tMB/s\tp50\tp99\tmax\tcpu/drop\t")
	for _, r := range results {
		sorted := sortedCopy(r.latencies)
		rate, mbps := 0.0, 0.0
		if r.wall > 0 {
			rate = float64(len(sorted)) / r.wall.Seconds()
			mbps = rate * float64(r.bodySize) / 1e6
		}
		var worst time.Duration
		if len(sorted) > 0 {
			worst = sorted[len(sorted)-1]
		}
		cpu := "-"
		if r.cpu > 0 && len(sorted) > 0 {
			cpu = ms(r.cpu / time.Duration(len(sorted)))
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%.1f\t%.1f\t%s\t%s\t%s\t%s\t\n", r.label, r.bodySize, r.entries, r.senders,
			len(sorted), r.failed, rate, mbps, ms(percentile(sorted, 50)), ms(percentile(sorted, 99)), ms(worst), cpu)
	}
	_ = tw.Flush()
}

// reportPickup prints the pick-up rounds' min, median and max, with the
// drop-off of the same Bundle beside it.
func reportPickup(w io.Writer, src *syntheaBundle, rounds []*pickupRound) {
	fmt.Fprintf(w, "pick-up of %s (%d bytes, %d entries; a fresh record per round)\n", src.name, len(src.raw), len(src.entries))
	var picks, drops []time.Duration
	imported := 0
	for _, r := range rounds {
		picks = append(picks, r.pickup)
		drops = append(drops, r.dropOff)
		imported = r.imported
	}
	picks, drops = sortedCopy(picks), sortedCopy(drops)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "step\trounds\timported\tmin\tmedian\tmax\t")
	if len(picks) > 0 {
		fmt.Fprintf(tw, "drop-off\t%d\t-\t%s\t%s\t%s\t\n", len(drops), ms(drops[0]), ms(percentile(drops, 50)), ms(drops[len(drops)-1]))
		fmt.Fprintf(tw, "pick-up\t%d\t%d\t%s\t%s\t%s\t\n", len(picks), imported, ms(picks[0]), ms(percentile(picks, 50)), ms(picks[len(picks)-1]))
	}
	_ = tw.Flush()
}
