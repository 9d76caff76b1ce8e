package dopu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/pfrgateway/caddy-pfr/egress"
)

// deliveryBatch and deliveryWorkers bound one pass of the deliverer.
const (
	deliveryBatch   = 64
	deliveryWorkers = 4
)

// Run delivers alerts, expires and purges drop-offs until ctx is done,
// then returns nil. Run it once per Service.
func (s *Service) Run(ctx context.Context) error {
	poll := time.NewTicker(s.opts.PollInterval)
	defer poll.Stop()
	expiry := time.NewTicker(s.opts.ExpiryInterval)
	defer expiry.Stop()
	s.expireAndLog(ctx)
	for {
		if _, err := s.DeliverDue(ctx); err != nil && ctx.Err() == nil {
			s.opts.Logger.Error("delivering drop-off alerts", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-poll.C:
		case <-s.wake:
		case <-expiry.C:
			s.expireAndLog(ctx)
		}
	}
}

func (s *Service) expireAndLog(ctx context.Context) {
	n, err := s.Expire(ctx)
	if err != nil && ctx.Err() == nil {
		s.opts.Logger.Error("expiring drop-offs", zap.Error(err))
	}
	if n > 0 {
		s.opts.Logger.Info("expired drop-offs", zap.Int("count", n))
	}
	n, err = s.Purge(ctx)
	if err != nil && ctx.Err() == nil {
		s.opts.Logger.Error("purging drop-offs", zap.Error(err))
	}
	if n > 0 {
		s.opts.Logger.Info("purged finished drop-offs", zap.Int("count", n))
	}
}

// DeliverDue makes one delivery attempt for each alert due now (at most a
// batch of them) and returns how many were delivered. Run calls it; tests
// call it to step the outbox.
//
// The alerts are leased first, in one transaction: each gets a new lease
// and its NextAttempt moves to the lease's end, so no other loop, in this
// process or on another node sharing the store, attempts it meanwhile
// (Updates serialize across nodes; the claim is the row lock that FOR
// UPDATE SKIP LOCKED would take, held for the lease instead of the
// transaction, since a delivery must not keep a transaction open over the
// network). Finishing or rescheduling an alert checks the lease is still
// this attempt's (fencing): an attempt that outlived its lease changes
// nothing.
func (s *Service) DeliverDue(ctx context.Context) (int, error) {
	due, err := s.claimDue(ctx)
	if err != nil {
		return 0, err
	}
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		delivered int
		firstErr  error
	)
	sem := make(chan struct{}, deliveryWorkers)
	for _, a := range due {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			ok, err := s.deliver(ctx, a)
			mu.Lock()
			defer mu.Unlock()
			if ok {
				delivered++
			}
			if err != nil && firstErr == nil {
				firstErr = err
			}
		}()
	}
	wg.Wait()
	return delivered, firstErr
}

// claimDue leases up to a batch of the alerts due now.
func (s *Service) claimDue(ctx context.Context) ([]Alert, error) {
	var claimed []Alert
	err := s.store.Update(ctx, func(tx Tx) error {
		claimed = claimed[:0]
		now := s.now()
		due, err := tx.DueAlerts(now, deliveryBatch)
		if err != nil {
			return err
		}
		for _, a := range due {
			a.Lease = newID()
			a.NextAttempt = now.Add(s.opts.AlertLease)
			if err := tx.PutAlert(&a); err != nil {
				return err
			}
			claimed = append(claimed, a)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("dopu: leasing due alerts: %w", err)
	}
	return claimed, nil
}

// deliver makes one attempt at an alert. It returns an error only when the
// outbox itself could not be updated; a failed delivery is rescheduled.
func (s *Service) deliver(ctx context.Context, a Alert) (bool, error) {
	var d *DropOff
	err := s.store.View(ctx, func(tx Tx) error {
		var err error
		d, err = tx.Get(a.DropOffID)
		return err
	})
	if errors.Is(err, ErrNotFound) || (err == nil && effectiveStatus(d, s.now()) != StatusPending) {
		// Picked up, rejected or expired: nobody needs the alert any more.
		return false, s.dropAlert(ctx, a.DropOffID)
	}
	if err != nil {
		return false, fmt.Errorf("dopu: reading drop-off %s: %w", a.DropOffID, err)
	}
	if s.opts.Webhook == nil {
		return false, s.dropAlert(ctx, a.DropOffID)
	}
	hook, err := s.opts.Webhook(ctx, a.RecordID)
	if err != nil {
		return false, s.retry(ctx, a, fmt.Errorf("looking up the webhook: %w", err))
	}
	if hook.URL == "" {
		return false, s.dropAlert(ctx, a.DropOffID)
	}
	// The destination policy again at delivery: the URL may have been saved
	// under another configuration, or its name may resolve elsewhere now.
	// The client checks every address it dials as well.
	if err := s.opts.Egress.Check(ctx, hook.URL); err != nil {
		return false, s.retry(ctx, a, err)
	}
	if err := s.post(ctx, hook, d); err != nil {
		return false, s.retry(ctx, a, err)
	}
	return true, s.finishAlert(ctx, a)
}

// finishAlert removes a delivered alert, if the attempt still holds it.
func (s *Service) finishAlert(ctx context.Context, a Alert) error {
	err := s.store.Update(ctx, func(tx Tx) error {
		cur, err := tx.Alert(a.DropOffID)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if cur.Lease != a.Lease {
			// The lease ran out and another attempt holds the alert: it
			// delivers again, with the same idempotency key.
			s.opts.Logger.Warn("drop-off alert delivered after its lease ran out; another attempt holds it",
				zap.String("dropoff", a.DropOffID))
			return nil
		}
		return tx.DeleteAlert(a.DropOffID)
	})
	if err != nil {
		return fmt.Errorf("dopu: removing alert %s: %w", a.DropOffID, err)
	}
	return nil
}

// post sends the signed alert of d to target.
func (s *Service) post(ctx context.Context, hook WebhookTarget, d *DropOff) error {
	body, err := json.Marshal(AlertPayload{
		Record: d.RecordID, Slug: hook.Slug, DropOff: d.ID, Received: d.Received, Expires: d.Expires,
		Summary: AlertSummary{BundleType: d.BundleType, ResourceCounts: d.ResourceCounts, Size: d.Size, Sender: d.Sender},
	})
	if err != nil {
		return fmt.Errorf("encoding the alert: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, hook.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("building the webhook request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "caddy-pfr-dopu")
	req.Header.Set(SignatureHeader, Sign(hook.Secret, s.now(), body))
	req.Header.Set(IdempotencyKeyHeader, d.ID)
	resp, err := s.opts.HTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("posting the webhook: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		return fmt.Errorf("webhook answered %s; redirects are not followed", resp.Status)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}

func (s *Service) dropAlert(ctx context.Context, dropOffID string) error {
	err := s.store.Update(ctx, func(tx Tx) error { return tx.DeleteAlert(dropOffID) })
	if err != nil {
		return fmt.Errorf("dopu: removing alert %s: %w", dropOffID, err)
	}
	return nil
}

// retry reschedules a failed alert with exponential backoff and jitter,
// or makes it dead: after MaxAttempts failures, or at once when the egress
// policy refuses the destination (it can never be delivered as things are
// configured). A dead alert leaves the due index, so it never holds up the
// outbox, and stays for the owner to see.
func (s *Service) retry(ctx context.Context, a Alert, cause error) error {
	dead := errors.Is(cause, egress.ErrRefused) || a.Attempts+1 >= s.opts.MaxAttempts
	log := s.opts.Logger.Info
	msg := "drop-off alert not delivered; will retry"
	if dead {
		log, msg = s.opts.Logger.Warn, "drop-off alert will never be delivered; kept as dead for the owner"
	}
	// Logged once the new schedule is stored, so that the line never
	// tells of a retry that a crash at this moment would leave to the
	// attempt's lease instead (a crash test waits for this line).
	var next time.Time
	err := s.store.Update(ctx, func(tx Tx) error {
		next = time.Time{}
		cur, err := tx.Alert(a.DropOffID)
		if errors.Is(err, ErrNotFound) {
			return nil // delivered or dropped meanwhile
		}
		if err != nil {
			return err
		}
		if a.Lease != "" && cur.Lease != a.Lease {
			return nil // the lease ran out: another attempt holds the alert
		}
		cur.Lease = ""
		cur.Attempts++
		cur.NextAttempt = s.now().Add(s.backoff(cur.Attempts))
		cur.LastError = cause.Error()
		cur.Dead = dead
		next = cur.NextAttempt
		return tx.PutAlert(cur)
	})
	if err != nil {
		return fmt.Errorf("dopu: rescheduling alert %s: %w", a.DropOffID, err)
	}
	fields := []zap.Field{zap.String("record", a.RecordID), zap.String("dropoff", a.DropOffID),
		zap.Int("attempt", a.Attempts+1), zap.Error(cause)}
	if next.IsZero() {
		// Delivered, dropped or taken over by another attempt meanwhile:
		// nothing was rescheduled here.
		s.opts.Logger.Debug("drop-off alert not delivered by this attempt; another holds it", fields...)
		return nil
	}
	if !dead {
		fields = append(fields, zap.Time("next_attempt", next))
	}
	log(msg, fields...)
	return nil
}

// ReviveAlerts makes the dead alerts of a record's pending drop-offs due
// again, with a fresh count of attempts: call it when the owner changes
// the webhook. It returns how many it revived.
func (s *Service) ReviveAlerts(ctx context.Context, recordID string) (int, error) {
	n := 0
	err := s.store.Update(ctx, func(tx Tx) error {
		n = 0
		list, err := tx.List(recordID)
		if err != nil {
			return err
		}
		for i := range list {
			if effectiveStatus(&list[i], s.now()) != StatusPending {
				continue
			}
			a, err := tx.Alert(list[i].ID)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if !a.Dead {
				continue
			}
			a.Dead, a.Attempts, a.NextAttempt, a.Lease = false, 0, s.now(), ""
			if err := tx.PutAlert(a); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("dopu: reviving the alerts of %s: %w", recordID, err)
	}
	if n > 0 {
		s.notify()
	}
	return n, nil
}

// backoff is the delay after the given number of failed attempts:
// RetryBase doubled per attempt, capped at RetryCap, and drawn uniformly
// from its upper half so that alerts failing together spread out.
func (s *Service) backoff(attempts int) time.Duration {
	d := s.opts.RetryCap
	if attempts < 32 {
		if exp := s.opts.RetryBase << (attempts - 1); exp > 0 && exp < d {
			d = exp
		}
	}
	return d/2 + rand.N(d/2+1)
}
