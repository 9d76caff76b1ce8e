package audit

import (
	"context"
	"fmt"
	"time"
)

// Page sizes of Bundle.
const (
	DefaultCount = 100
	MaxCount     = 1000
)

// Bundle returns the log of recordID as a FHIR R4 searchset Bundle of
// AuditEvent resources, newest first: the events at or after since (zero:
// all kept), at most count of them (0 or less: DefaultCount; at most
// MaxCount). Only written events are listed; Flush first to see queued
// ones. Events past Retention are never listed, pruned yet or not.
func (l *Log) Bundle(ctx context.Context, recordID string, since time.Time, count int) (map[string]any, error) {
	if !validRecordID(recordID) {
		return nil, fmt.Errorf("audit: reading log of %q: %w", recordID, ErrInvalidRecordID)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	switch {
	case count <= 0:
		count = DefaultCount
	case count > MaxCount:
		count = MaxCount
	}
	now := l.now().UTC()
	from := now.Add(-l.retention)
	if since.After(from) {
		from = since
	}
	events, err := l.store.Newest(ctx, recordID, from, count)
	if err != nil {
		return nil, fmt.Errorf("audit: reading log of %s: %w", recordID, err)
	}
	bundle := map[string]any{
		"resourceType": "Bundle",
		"type":         "searchset",
		"timestamp":    now.Format(time.RFC3339Nano),
	}
	// FHIR forbids empty arrays: no events, no entry element.
	if len(events) > 0 {
		entries := make([]any, len(events))
		for i, ev := range events {
			entries[i] = map[string]any{
				"resource": auditEvent(ev),
				"search":   map[string]any{"mode": "match"},
			}
		}
		bundle["entry"] = entries
	}
	return bundle, nil
}
