package dopu

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Pickup is a pick-up in progress: it holds a lease on one pending
// drop-off so that no other pick-up, rejection or expiry touches it until
// Commit or Abort (or until Options.LeaseTTL passes, after a crash).
//
// The gateway calls Prepare, runs the transaction upstream, then Commit on
// success or Abort on anything else (a refused match included): defer
// Abort right after BeginPickup, it does nothing after Commit. A crash
// after the upstream transaction and before Commit leaves the drop-off
// pending with its resources already imported; they carry the meta.tag
// {TagSystem, drop-off id}, so the next attempt can search for them
// (_tag=urn:pfr:dopu|<id>) before importing again.
type Pickup struct {
	s       *Service
	dropOff DropOff
	body    []byte
	lease   string
	done    bool
	// status and reason are what Commit records: set by Prepare.
	status Status
	reason string
}

// BeginPickup leases a pending drop-off of the record for a pick-up.
// ErrNotFound if the record has no such drop-off, ErrNotPending if it was
// picked up, rejected or has expired, ErrPickupInProgress if another
// pick-up holds it.
func (s *Service) BeginPickup(ctx context.Context, recordID, id string) (*Pickup, error) {
	now := s.now()
	p := &Pickup{s: s, lease: processLeasePrefix + newID()}
	expired := false
	err := s.store.Update(ctx, func(tx Tx) error {
		d, err := tx.Get(id)
		if err != nil {
			return err
		}
		if d.RecordID != recordID {
			return ErrNotFound
		}
		if d.Status != StatusPending {
			return ErrNotPending
		}
		if !now.Before(d.Expires) {
			// Past its TTL: expire it now rather than import stale data.
			expired = true
			d.Status, d.Changed = StatusExpired, now
			d.Lease, d.LeaseExpires = "", time.Time{}
			if err := tx.Put(d); err != nil {
				return err
			}
			return tx.DeleteAlert(id)
		}
		if s.leaseHeld(d, now) {
			return ErrPickupInProgress
		}
		body, err := tx.Body(id)
		if err != nil {
			return err
		}
		d.Lease, d.LeaseExpires = p.lease, now.Add(s.opts.LeaseTTL)
		if err := tx.Put(d); err != nil {
			return err
		}
		p.dropOff, p.body = *d, body
		return nil
	})
	if err == nil && expired {
		err = ErrNotPending
	}
	if err != nil {
		return nil, fmt.Errorf("dopu: beginning pick-up of %s: %w", id, err)
	}
	return p, nil
}

// processLeasePrefix starts every lease this process takes. With a store
// only one process can open (bbolt locks its file), a lease with another
// prefix was left by a process that died mid-pick-up: it blocks nothing.
var processLeasePrefix = newID() + ":"

// leaseHeld reports whether a live pick-up holds d at now.
func (s *Service) leaseHeld(d *DropOff, now time.Time) bool {
	if d.Lease == "" || !now.Before(d.LeaseExpires) {
		return false
	}
	return !s.exclusive || strings.HasPrefix(d.Lease, processLeasePrefix)
}

// Summary returns the drop-off being picked up.
func (p *Pickup) Summary() Summary { return p.dropOff.Summary }

// Outcome is the status Commit will record and the reason the sender will
// see: picked-up, or picked-up-partially when Prepare left entries out.
func (p *Pickup) Outcome() (Status, string) {
	if p.status == "" {
		return StatusPickedUp, ""
	}
	return p.status, p.reason
}

// Bundle returns the drop-off's Bundle as it was received.
func (p *Pickup) Bundle() []byte { return p.body }

// Commit marks the drop-off picked up (picked-up-partially with its reason
// when Prepare left entries out), deletes its Bundle and its alert.
// ErrNotPending if it is no longer pending, ErrLeaseLost if the lease
// expired and another pick-up took it.
func (p *Pickup) Commit(ctx context.Context) error {
	if p.done {
		return fmt.Errorf("dopu: committing pick-up of %s: %w", p.dropOff.ID, ErrNotPending)
	}
	now := p.s.now()
	err := p.s.store.Update(ctx, func(tx Tx) error {
		d, err := tx.Get(p.dropOff.ID)
		if err != nil {
			return err
		}
		if d.Status != StatusPending {
			return ErrNotPending
		}
		if d.Lease != p.lease {
			return ErrLeaseLost
		}
		d.Status, d.Reason, d.Changed = StatusPickedUp, "", now
		if p.status == StatusPickedUpPartially {
			d.Status, d.Reason = p.status, truncate(p.reason, maxReason)
			d.SenderReason = d.Reason
		}
		d.Lease, d.LeaseExpires = "", time.Time{}
		if err := tx.Put(d); err != nil {
			return err
		}
		return tx.DeleteAlert(d.ID)
	})
	if err != nil {
		return fmt.Errorf("dopu: committing pick-up of %s: %w", p.dropOff.ID, err)
	}
	p.done = true
	return nil
}

// Abort releases the drop-off, which stays pending. It is safe to call
// after Commit (it does nothing) and more than once.
func (p *Pickup) Abort() {
	if p.done {
		return
	}
	p.done = true
	// Not the caller's context: the release must happen even when the
	// request that began the pick-up was cancelled.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := p.s.store.Update(ctx, func(tx Tx) error {
		d, err := tx.Get(p.dropOff.ID)
		if err != nil {
			return err
		}
		if d.Status != StatusPending || d.Lease != p.lease {
			return nil
		}
		d.Lease, d.LeaseExpires = "", time.Time{}
		return tx.Put(d)
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		// The lease then simply runs out after Options.LeaseTTL.
		p.s.opts.Logger.Warn("releasing a pick-up lease failed",
			zap.String("dropoff", p.dropOff.ID), zap.Error(err))
	}
}
