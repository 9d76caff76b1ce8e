package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/pebble"
	"github.com/pfrgateway/caddy-pfr/internal/pfrproc"
)

// bench is what the visits need: the ACME server (to count its orders)
// and the gateways.
type bench struct {
	ca       *pebble.Server
	gateways []*gateway
}

// gateway addresses one of the two gateways over HTTPS.
type gateway struct {
	base  string
	port  int
	token string         // the records' owner's dev-issuer token
	roots *x509.CertPool // Pebble's root, the only one trusted
	api   *http.Client   // keep-alive client for the management API
}

// visit is one measured first visit.
type visit struct {
	slug    string
	elapsed time.Duration
	leaf    *x509.Certificate
	orders  int // ACME orders Pebble received during the visit
}

// result gathers one kind's visits.
type result struct {
	kind, base string
	visits     []visit
}

func (r *result) add(v visit) { r.visits = append(r.visits, v) }

// firstVisit creates the record slug through the apex (not timed), then
// times its first visit: a new TCP and TLS connection to
// https://{slug}.{base}/fhir/metadata, verified against Pebble's root only,
// until the whole answer is read.
func (b *bench) firstVisit(ctx context.Context, g *gateway, slug string) (visit, error) {
	if err := g.createRecord(ctx, slug); err != nil {
		return visit{}, err
	}
	transport := pfrproc.LocalTransport()
	transport.TLSClientConfig = &tls.Config{RootCAs: g.roots}
	transport.DisableKeepAlives = true
	client := pfrproc.LocalClient(2*time.Minute, transport)
	url := fmt.Sprintf("https://%s.%s:%d/fhir/metadata", slug, g.base, g.port)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return visit{}, err
	}
	req.Header.Set("Accept", "application/fhir+json")

	orders := b.ca.Orders()
	start := time.Now()
	res, err := client.Do(req)
	if err != nil {
		return visit{}, fmt.Errorf("first visit of %s: %w", url, err)
	}
	body, err := io.ReadAll(res.Body)
	_ = res.Body.Close()
	elapsed := time.Since(start)
	if err != nil {
		return visit{}, fmt.Errorf("first visit of %s: reading the answer: %w", url, err)
	}
	if res.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`"CapabilityStatement"`)) {
		return visit{}, fmt.Errorf("first visit of %s: status %d, %.300s", url, res.StatusCode, body)
	}
	return visit{slug: slug, elapsed: elapsed, leaf: res.TLS.PeerCertificates[0], orders: b.ca.Orders() - orders}, nil
}

// createRecord creates the record slug, owned by the token's subject.
func (g *gateway) createRecord(ctx context.Context, slug string) error {
	body, err := json.Marshal(map[string]any{"slug": slug, "relationship": "self", "patient": map[string]any{
		"resourceType": "Patient", "name": []any{map[string]any{"family": "Visit", "given": []any{slug}}},
	}})
	if err != nil {
		return err
	}
	url := fmt.Sprintf("https://%s:%d/pfr/v1/records", g.base, g.port)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+g.token)
	res, err := g.api.Do(req)
	if err != nil {
		return fmt.Errorf("creating record %s on %s: %w", slug, g.base, err)
	}
	answer, _ := io.ReadAll(res.Body)
	_ = res.Body.Close()
	if res.StatusCode != http.StatusCreated {
		return fmt.Errorf("creating record %s on %s: status %d, %.300s", slug, g.base, res.StatusCode, answer)
	}
	return nil
}

// report prints one row per kind (ACME orders during the visits, and the
// visits' latency) and the ratio of the medians.
func report(w io.Writer, results []*result, wildcardTime time.Duration) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "first visit\tvisits\torders\tmin\tmedian\tmax\t")
	medians := make([]time.Duration, len(results))
	for i, r := range results {
		var times []time.Duration
		orders := 0
		for _, v := range r.visits {
			times = append(times, v.elapsed)
			orders += v.orders
		}
		slices.Sort(times)
		medians[i] = times[(len(times)-1)/2]
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t\n", r.kind, len(times), orders, ms(times[0]), ms(medians[i]), ms(times[len(times)-1]))
	}
	_ = tw.Flush()
	if len(medians) == 2 && medians[1] > 0 {
		fmt.Fprintf(w, "\nratio (median): on demand / wildcard = %.1f×\n", float64(medians[0])/float64(medians[1]))
	}
	fmt.Fprintf(w, "the wildcard itself (one DNS-01 order at start, its TXT record through RFC 2136): ready %s after Caddy started\n", ms(wildcardTime))
}

// check fails the run unless every on-demand visit got a certificate of
// its own (exactly its name, one order) and every wildcard visit the
// wildcard (same serial, no order).
func check(results []*result, wildcard *x509.Certificate) error {
	for _, r := range results {
		for _, v := range r.visits {
			name := v.slug + "." + r.base
			switch r.base {
			case onDemandBase:
				if !slices.Equal(v.leaf.DNSNames, []string{name}) || v.orders != 1 {
					return fmt.Errorf("on-demand visit of %s: certificate for %v after %d orders, want its own after one", name, v.leaf.DNSNames, v.orders)
				}
			case wildcardBase:
				if v.leaf.SerialNumber.Cmp(wildcard.SerialNumber) != 0 || v.orders != 0 {
					return fmt.Errorf("wildcard visit of %s: certificate %s for %v after %d orders, want the wildcard %s and none",
						name, v.leaf.SerialNumber.Text(16), v.leaf.DNSNames, v.orders, wildcard.SerialNumber.Text(16))
				}
			}
		}
	}
	return nil
}

// ms formats a duration in milliseconds.
func ms(d time.Duration) string {
	return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
}
