package audit

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// Run writes queued events until ctx ends: one bbolt transaction per
// batch, at most one batch every FlushInterval, pruning each record to
// MaxPerRecord events and deleting events older than Retention. When ctx
// ends it writes what is queued and returns; the error is that last
// write's. Errors of earlier batches are logged and counted as dropped
// events, and Run goes on.
func (l *Log) Run(ctx context.Context) error {
	tick := l.tick
	if tick == nil {
		ticker := time.NewTicker(l.flushInterval)
		defer ticker.Stop()
		tick = ticker.C
	}
	for {
		select {
		case <-ctx.Done():
			return l.writeQueued()
		case <-tick:
			if err := l.writeQueued(); err != nil {
				l.logger.Error("writing audit events", zap.Error(err))
			}
		}
	}
}

// Flush writes everything queued now, and prunes, in one transaction. Run
// need not be running.
func (l *Log) Flush(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return l.writeQueued()
}

// DeleteRecord deletes every event of recordID, after writing what is
// queued so that no queued event of the record outlives it.
func (l *Log) DeleteRecord(ctx context.Context, recordID string) error {
	if !validRecordID(recordID) {
		return fmt.Errorf("audit: deleting log of %q: %w", recordID, ErrInvalidRecordID)
	}
	if err := l.Flush(ctx); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := l.store.DeleteRecord(ctx, recordID); err != nil {
		return fmt.Errorf("audit: deleting log of %s: %w", recordID, err)
	}
	return nil
}

// writeQueued takes the events queued now and writes them in one
// transaction with the pruning they call for. It never gives up halfway
// for a cancelled context: the events it took from the queue would be
// lost.
func (l *Log) writeQueued() error {
	batch := l.takeQueued()
	cutoff := l.now().Add(-l.retention)
	if len(batch) == 0 && !l.anyExpired(cutoff) {
		return nil
	}
	// Not ctx-bound: the events taken from the queue must be written.
	err := l.store.Write(context.Background(), batch, l.maxPerRecord, cutoff)
	if err != nil {
		l.dropped.Add(uint64(len(batch)))
		return fmt.Errorf("audit: writing %d events: %w", len(batch), err)
	}
	if l.written != nil {
		l.written(len(batch))
	}
	return nil
}

// takeQueued removes and returns the events queued now; events queued
// meanwhile wait for the next batch, so a busy queue cannot make a batch
// endless.
func (l *Log) takeQueued() []Event {
	n := len(l.queue)
	batch := make([]Event, 0, n)
	for range n {
		select {
		case e := <-l.queue:
			batch = append(batch, e)
		default:
			return batch
		}
	}
	return batch
}

// anyExpired reports whether an event is older than cutoff. A failed read
// says yes, so that the write reports the error.
func (l *Log) anyExpired(cutoff time.Time) bool {
	found, err := l.store.HasExpired(context.Background(), cutoff)
	return found || err != nil
}
