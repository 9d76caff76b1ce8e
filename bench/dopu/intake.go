package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// receiptHeader carries a drop-off's receipt id on the 202 answer
// (gateway.ReceiptHeader).
const receiptHeader = "X-PFR-Receipt"

// intakeResult is what one intake phase measured.
type intakeResult struct {
	label     string          // "50 KB" in the table
	bodySize  int             // bytes of each Bundle
	senders   int             // concurrent senders
	entries   int             // entries of each Bundle
	latencies []time.Duration // one per accepted drop-off
	wall      time.Duration   // the phase's wall time
	cpu       time.Duration   // Caddy's CPU time over the phase (0: unknown)
	failed    int             // answers that were not a new 202 receipt
	firstFail error           // the first of them
}

// checkReceipt verifies a drop-off's answer: 202, a receipt id in the
// header, and an OperationOutcome naming the same receipt. It returns the
// receipt id.
func checkReceipt(a *answer) (string, error) {
	if a.status != http.StatusAccepted {
		return "", fmt.Errorf("status %d, want 202: %.300s", a.status, a.body)
	}
	id := a.header.Get(receiptHeader)
	if len(id) < 16 {
		return "", fmt.Errorf("202 without a receipt id (%s: %q)", receiptHeader, id)
	}
	var outcome struct {
		ResourceType string `json:"resourceType"`
	}
	if err := json.Unmarshal(a.body, &outcome); err != nil || outcome.ResourceType != "OperationOutcome" {
		return "", fmt.Errorf("202 without an OperationOutcome: %.300s", a.body)
	}
	if !bytes.Contains(a.body, []byte(id)) {
		return "", fmt.Errorf("the OperationOutcome does not name receipt %s: %.300s", id, a.body)
	}
	return id, nil
}

// receipts collects the receipt ids of one run: a receipt seen twice means
// de-duplication answered, not intake, and is counted as a failure.
type receipts struct {
	mu   sync.Mutex
	seen map[string]bool
}

// add records id and reports whether it is new.
func (r *receipts) add(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen == nil {
		r.seen = map[string]bool{}
	}
	if r.seen[id] {
		return false
	}
	r.seen[id] = true
	return true
}

// count is the number of distinct receipts.
func (r *receipts) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen)
}

// intakePlan says what one intake phase sends.
type intakePlan struct {
	slug        string     // the record dropped off to
	maker       *bodyMaker // the Bundles
	first       int        // sequence number of the first Bundle
	count       int        // drop-offs to send
	concurrency int        // concurrent senders
	deadline    time.Time  // no new drop-off starts after it (zero: none)
}

// measureIntake sends plan.count distinct Bundles without a token from
// plan.concurrency senders, each on its own keep-alive connection, and
// times each from the request's start to the answer's last byte. Only new
// 202 receipts count as measurements.
func measureIntake(ctx context.Context, g *gateway, seen *receipts, plan intakePlan) *intakeResult {
	res := &intakeResult{bodySize: plan.maker.size(), senders: plan.concurrency, latencies: make([]time.Duration, 0, plan.count)}
	url := g.fhirBase(plan.slug)
	var (
		next atomic.Int64
		mu   sync.Mutex
		wg   sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		res.failed++
		if res.firstFail == nil {
			res.firstFail = err
		}
	}
	start := time.Now()
	cpu0 := g.cpuTime()
	for range min(plan.concurrency, plan.count) {
		wg.Go(func() {
			for {
				n := int(next.Add(1)) - 1
				if n >= plan.count || ctx.Err() != nil || (!plan.deadline.IsZero() && time.Now().After(plan.deadline)) {
					return
				}
				body := plan.maker.body(plan.first + n) // built before the clock starts
				t0 := time.Now()
				a, err := g.do(ctx, http.MethodPost, url, body, "application/fhir+json", false)
				d := time.Since(t0)
				if err != nil {
					fail(err)
					continue
				}
				id, err := checkReceipt(a)
				if err != nil {
					fail(err)
					continue
				}
				if !seen.add(id) {
					fail(fmt.Errorf("receipt %s came back for a distinct Bundle", id))
					continue
				}
				mu.Lock()
				res.latencies = append(res.latencies, d)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	res.wall = time.Since(start)
	if cpu0 > 0 {
		res.cpu = g.cpuTime() - cpu0
	}
	return res
}

// inboxSize returns how many drop-offs a record's inbox lists.
func inboxSize(ctx context.Context, g *gateway, slug string) (int, error) {
	a, err := g.expect(ctx, http.StatusOK, http.MethodGet, g.apex("/pfr/v1/records/"+slug+"/dropoffs"), nil, "", true)
	if err != nil {
		return 0, fmt.Errorf("listing the inbox of %s: %w", slug, err)
	}
	var inbox struct {
		DropOffs []json.RawMessage `json:"dropoffs"`
	}
	if err := json.Unmarshal(a.body, &inbox); err != nil {
		return 0, fmt.Errorf("listing the inbox of %s: %w", slug, err)
	}
	if inbox.DropOffs == nil {
		return 0, errors.New("the inbox answer has no dropoffs list")
	}
	return len(inbox.DropOffs), nil
}
