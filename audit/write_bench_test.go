package audit

import (
	"context"
	"testing"
	"time"
)

// BenchmarkWriteAtLimit is the log's writer in the gateway's steady state:
// one busy record already holding MaxPerRecord events, batches of
// batchSize events (about a second of a busy record's reads), so that
// every event written makes the oldest one go. Reported per event.
func BenchmarkWriteAtLimit(b *testing.B) {
	const (
		maxPerRecord = 2000
		batchSize    = 500
	)
	f := newFixture(b, Options{MaxPerRecord: maxPerRecord})
	store := f.log.store
	start := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	n := 0
	batch := func() []Event {
		events := make([]Event, batchSize)
		for i := range events {
			events[i] = normalize(Event{
				Time: start.Add(time.Duration(n) * time.Millisecond), RecordID: "rec-0123456789abcdef",
				Issuer: "https://issuer.example", Subject: "user-1", ClientID: "app-1",
				SourceIP: "127.0.0.1", Interaction: "read", Target: "Observation/obs-42", Status: 200,
			}, start)
			n++
		}
		return events
	}
	ctx := context.Background()
	cutoff := start.Add(-time.Hour)
	for range maxPerRecord / batchSize {
		if err := store.Write(ctx, batch(), maxPerRecord, cutoff); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		events := batch()
		b.StartTimer()
		if err := store.Write(ctx, events, maxPerRecord, cutoff); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batchSize), "ns/event")
}
