package audit

import (
	"context"
	"testing"
	"time"
)

// BenchmarkWriteAtLimit is the log's writer in the gateway's steady state:
// one busy record already holding MaxPerRecord events, batches of 500
// events (about a second of a busy record's reads), so that every event
// written makes the oldest one go. Reported per event, with the bytes of
// pages the writes allocated.
func BenchmarkWriteAtLimit(b *testing.B) { benchmarkWriteAtLimit(b, 500) }

// BenchmarkWriteAtLimitQuiet is a quiet record at its limit: a batch of
// one event, which makes the oldest go.
func BenchmarkWriteAtLimitQuiet(b *testing.B) { benchmarkWriteAtLimit(b, 1) }

func benchmarkWriteAtLimit(b *testing.B, batchSize int) {
	const maxPerRecord = 2000
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
	for range (maxPerRecord + batchSize - 1) / batchSize {
		if err := store.Write(ctx, batch(), maxPerRecord, cutoff); err != nil {
			b.Fatal(err)
		}
	}
	pageAlloc := func() int64 {
		st := f.db.Stats()
		return st.TxStats.GetPageAlloc()
	}
	allocBefore := pageAlloc()
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
	b.ReportMetric(float64(pageAlloc()-allocBefore)/float64(b.N*batchSize), "page-B/event")
}
