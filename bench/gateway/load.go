package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// checkFunc verifies one answer of kind k from t.
type checkFunc func(t *target, k kind, fx *fixture, status int, body []byte) error

// sample is what the measured requests of one kind on one target gave.
type sample struct {
	latencies []time.Duration // one per request
	busy      time.Duration   // wall time of the batches that sent them
	cpu       time.Duration   // CPU time Caddy spent during those batches
}

// batch sends count requests of kind k to t from concurrency workers, each
// reusing its keep-alive connection, and returns every latency (request
// written to body read) and the batch's wall time. The first failed check
// stops the batch and is returned.
func batch(ctx context.Context, t *target, k kind, fx *fixture, count, concurrency int, check checkFunc) ([]time.Duration, time.Duration, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	url := t.url(k, fx)
	var (
		next      atomic.Int64
		mu        sync.Mutex
		latencies = make([]time.Duration, 0, count)
		firstErr  error
		wg        sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
		cancel()
	}
	start := time.Now()
	for range min(concurrency, count) {
		wg.Go(func() {
			var body bytes.Buffer
			mine := make([]time.Duration, 0, count/concurrency+1)
			defer func() {
				mu.Lock()
				latencies = append(latencies, mine...)
				mu.Unlock()
			}()
			for next.Add(1) <= int64(count) {
				d, status, err := send(ctx, t, url, &body)
				if err != nil {
					fail(err)
					return
				}
				if err := check(t, k, fx, status, body.Bytes()); err != nil {
					fail(err)
					return
				}
				mine = append(mine, d)
			}
		})
	}
	wg.Wait()
	return latencies, time.Since(start), firstErr
}

// send does one GET and reads the whole body into buf.
func send(ctx context.Context, t *target, url string, buf *bytes.Buffer) (time.Duration, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %w", t.label, err)
	}
	req.Header = t.header.Clone()
	req.Header.Set("Accept", "application/fhir+json")
	buf.Reset()
	start := time.Now()
	res, err := t.client.Do(req)
	if err != nil {
		return 0, 0, fmt.Errorf("%s GET %s: %w", t.label, url, err)
	}
	_, err = buf.ReadFrom(res.Body)
	_ = res.Body.Close()
	d := time.Since(start)
	if err != nil {
		return 0, 0, fmt.Errorf("%s GET %s: reading the body: %w", t.label, url, err)
	}
	return d, res.StatusCode, nil
}

// plan says how many requests to send, how, and for how long at most.
type plan struct {
	requests    int            // per target and kind
	roundSize   int            // per target and kind and round
	concurrency int            // workers per batch
	deadline    time.Time      // no new round starts after it (zero: none)
	check       checkFunc      // verification of every answer
	progress    func(int, int) // called after each round with done and total (may be nil)
	// cpu, when set, returns the CPU time Caddy has used so far: read
	// around every batch, it charges each target with what Caddy spent
	// on it (the client's and other processes' time left out).
	cpu func() time.Duration
}

// rounds sends p.requests of every kind to every target in rounds of
// p.roundSize, rotating the order of the targets each round so that
// machine noise, warm caches and connection reuse favour none of them.
// It returns a sample per kind and target index.
func rounds(ctx context.Context, targets []*target, fx *fixture, p plan) (map[kind][]sample, error) {
	out := map[kind][]sample{}
	for _, k := range kinds {
		out[k] = make([]sample, len(targets))
	}
	for round, done := 0, 0; done < p.requests; round++ {
		if !p.deadline.IsZero() && time.Now().After(p.deadline) {
			break
		}
		size := min(p.roundSize, p.requests-done)
		for _, k := range kinds {
			for i := range targets {
				ti := (i + round) % len(targets)
				var before time.Duration
				if p.cpu != nil {
					before = p.cpu()
				}
				lat, busy, err := batch(ctx, targets[ti], k, fx, size, p.concurrency, p.check)
				if err != nil {
					return nil, err
				}
				s := &out[k][ti]
				s.latencies = append(s.latencies, lat...)
				s.busy += busy
				if p.cpu != nil {
					s.cpu += p.cpu() - before
				}
			}
		}
		done += size
		if p.progress != nil {
			p.progress(done, p.requests)
		}
	}
	return out, ctx.Err()
}
