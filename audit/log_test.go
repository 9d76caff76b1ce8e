package audit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

const (
	recA = "aaaaaaaaaaaaaaaaaaaaaaaaaa"
	recB = "bbbbbbbbbbbbbbbbbbbbbbbbbb"
)

func TestFlushedEventsNewestFirstAsAuditEvents(t *testing.T) {
	f := newFixture(t, Options{})
	t0 := f.clock.Now()
	f.log.Record(Event{
		RecordID: recA, Issuer: "https://idp.example.com", Subject: "alice", ClientID: "app1",
		SourceIP: "192.0.2.1", Interaction: "read", Target: "Observation/123", Status: 200,
	})
	f.clock.Advance(time.Second)
	f.log.Record(Event{RecordID: recA, SourceIP: "198.51.100.7", Interaction: "dropoff", Status: 202, Detail: "dropoff d1"})
	f.clock.Advance(time.Second)
	f.log.Record(Event{
		RecordID: recA, Issuer: "https://idp.example.com", Subject: "alice", Interaction: "search-type",
		Target: "Observation", Status: 403,
	})
	f.clock.Advance(time.Second)
	f.log.Record(Event{RecordID: recA, Subject: "bob", Interaction: "transaction", Status: 500, Action: "X"})

	if got := f.events(recA); len(got) != 0 {
		t.Fatalf("before Flush: %d events listed, want 0", len(got))
	}
	f.flush()
	got := f.events(recA)
	if len(got) != 4 {
		t.Fatalf("got %d events, want 4", len(got))
	}
	ids := map[string]bool{}
	for i, ae := range got {
		recorded := checkAuditEvent(t, ae)
		// Newest first: event i was recorded at t0 + (3-i) seconds.
		if want := t0.Add(time.Duration(3-i) * time.Second); !recorded.Equal(want) {
			t.Errorf("event %d recorded %v, want %v", i, recorded, want)
		}
		ids[ae["id"].(string)] = true
	}
	if len(ids) != 4 {
		t.Errorf("ids not unique: %v", ids)
	}

	tx, search, drop, read := got[0], got[1], got[2], got[3]

	if read["action"] != "R" || path(read, "subtype", 0, "system") != "http://hl7.org/fhir/restful-interaction" ||
		path(read, "subtype", 0, "code") != "read" {
		t.Errorf("read: action/subtype %v %v", read["action"], read["subtype"])
	}
	if read["outcome"] != "0" || read["outcomeDesc"] != "200 OK" {
		t.Errorf("read: outcome %v %v", read["outcome"], read["outcomeDesc"])
	}
	if path(read, "agent", 0, "who", "identifier", "system") != "https://idp.example.com" ||
		path(read, "agent", 0, "who", "identifier", "value") != "alice" ||
		path(read, "agent", 0, "altId") != "app1" ||
		path(read, "agent", 0, "network", "address") != "192.0.2.1" ||
		path(read, "agent", 0, "network", "type") != "2" {
		t.Errorf("read: agent %v", read["agent"])
	}
	if path(read, "entity", 0, "what", "reference") != "Observation/123" {
		t.Errorf("read: entity %v", read["entity"])
	}

	if drop["action"] != "C" || path(drop, "subtype", 0, "system") != SystemPFR || path(drop, "subtype", 0, "code") != "dropoff" {
		t.Errorf("dropoff: action/subtype %v %v", drop["action"], drop["subtype"])
	}
	if path(drop, "agent", 0, "who") != nil || path(drop, "agent", 0, "altId") != nil {
		t.Errorf("anonymous dropoff names someone: %v", drop["agent"])
	}
	if drop["outcomeDesc"] != "202 Accepted: dropoff d1" || drop["entity"] != nil {
		t.Errorf("dropoff: outcomeDesc %v entity %v", drop["outcomeDesc"], drop["entity"])
	}

	if search["outcome"] != "4" || search["action"] != "R" || path(search, "subtype", 0, "code") != "search-type" {
		t.Errorf("search: %v %v %v", search["outcome"], search["action"], search["subtype"])
	}
	// A type is no reference: it is named.
	if path(search, "entity", 0, "what") != nil || path(search, "entity", 0, "name") != "Observation" {
		t.Errorf("search: entity %v", search["entity"])
	}

	// An invalid action is replaced by the interaction's.
	if tx["outcome"] != "8" || tx["action"] != "E" || path(tx, "subtype", 0, "code") != "transaction" {
		t.Errorf("transaction: %v %v %v", tx["outcome"], tx["action"], tx["subtype"])
	}
	if path(tx, "agent", 0, "who", "identifier", "value") != "bob" || path(tx, "agent", 0, "who", "identifier", "system") != nil {
		t.Errorf("transaction: agent %v", tx["agent"])
	}
}

func TestSubtypeFollowsTheTarget(t *testing.T) {
	cases := []struct{ interaction, target, system, code string }{
		{"history", "Patient/p1", systemInteraction, "history-instance"},
		{"history", "Patient", systemInteraction, "history-type"},
		{"history", "", systemInteraction, "history-system"},
		{"search", "Patient", systemInteraction, "search-type"},
		{"search", "", systemInteraction, "search-system"},
		{"vread", "Patient/p1/_history/2", systemInteraction, "vread"},
		{"operation", "Patient/p1", systemInteraction, "operation"},
		{"pickup", "", SystemPFR, "pickup"},
		{"member-change", "", SystemPFR, "member-change"},
	}
	for _, c := range cases {
		sub := subtype(c.interaction, c.target)
		if sub["system"] != c.system || sub["code"] != c.code {
			t.Errorf("subtype(%q, %q) = %v, want %s|%s", c.interaction, c.target, sub, c.system, c.code)
		}
	}
	if subtype("", "Patient/1") != nil {
		t.Errorf("empty interaction has a subtype")
	}
}

func TestHostileFieldsAreBoundedAndNeverReferences(t *testing.T) {
	f := newFixture(t, Options{})
	huge := strings.Repeat("x", 100000)
	f.log.Record(Event{
		RecordID: recA, Subject: huge, ClientID: huge, SourceIP: huge,
		Interaction: "read", Target: "../../Patient/other", Detail: strings.Repeat("é", 1000) + "\xff",
		Status: 200,
	})
	f.log.Record(Event{RecordID: recA, Interaction: "read", Target: "Patient/1?x=http://evil/", Status: 200})
	f.flush()
	got := f.events(recA)
	if len(got) != 2 {
		t.Fatalf("got %d events", len(got))
	}
	for _, ae := range got {
		checkAuditEvent(t, ae)
		if path(ae, "entity", 0, "what") != nil {
			t.Errorf("malformed target became a reference: %v", ae["entity"])
		}
	}
	ae := got[1]
	if v := path(ae, "agent", 0, "who", "identifier", "value").(string); len(v) > maxFieldLen {
		t.Errorf("subject kept at %d bytes", len(v))
	}
	if v := path(ae, "agent", 0, "network", "address").(string); len(v) > maxFieldLen {
		t.Errorf("address kept at %d bytes", len(v))
	}
	desc := ae["outcomeDesc"].(string)
	if len(desc) > maxDetailLen+len("200 OK: ") || !strings.HasPrefix(desc, "200 OK: é") {
		t.Errorf("outcomeDesc %d bytes: %.40q", len(desc), desc)
	}
	if strings.ContainsRune(desc, '\uFFFD') || strings.Contains(desc, "\xff") {
		t.Errorf("outcomeDesc holds invalid UTF-8 or its replacement")
	}
}

func TestRecordsNeverSeeEachOthersEvents(t *testing.T) {
	f := newFixture(t, Options{})
	// "rec" is a prefix of "rec2": keys must not run into each other.
	for i := range 3 {
		f.log.Record(Event{RecordID: "rec", Interaction: "read", Target: fmt.Sprintf("Patient/r%d", i), Status: 200})
		f.log.Record(Event{RecordID: "rec2", Interaction: "read", Target: fmt.Sprintf("Patient/s%d", i), Status: 200})
		f.log.Record(Event{RecordID: "re", Interaction: "read", Target: fmt.Sprintf("Patient/t%d", i), Status: 200})
	}
	// An id with the key separator could forge another record's key.
	f.log.Record(Event{RecordID: "rec\x00", Interaction: "read", Target: "Patient/forged", Status: 200})
	f.log.Record(Event{RecordID: "", Interaction: "read", Target: "Patient/none", Status: 200})
	if f.log.Dropped() != 2 {
		t.Errorf("Dropped = %d, want 2 (invalid record ids)", f.log.Dropped())
	}
	f.flush()
	for rec, letter := range map[string]string{"rec": "r", "rec2": "s", "re": "t"} {
		got := f.events(rec)
		if len(got) != 3 {
			t.Errorf("%s: %d events, want 3", rec, len(got))
		}
		for _, ae := range got {
			ref, _ := path(ae, "entity", 0, "what", "reference").(string)
			if !strings.HasPrefix(ref, "Patient/"+letter) {
				t.Errorf("%s lists %s", rec, ref)
			}
		}
	}
	if got := f.events("unknown"); len(got) != 0 {
		t.Errorf("unknown record lists %d events", len(got))
	}
	for _, bad := range []string{"", "rec\x00", strings.Repeat("r", 300)} {
		if _, err := f.log.Bundle(context.Background(), bad, time.Time{}, 0); !errors.Is(err, ErrInvalidRecordID) {
			t.Errorf("Bundle(%q): %v, want ErrInvalidRecordID", bad, err)
		}
	}
}

func TestMaxPerRecordDropsTheOldest(t *testing.T) {
	f := newFixture(t, Options{MaxPerRecord: 3})
	for i := range 2 {
		f.log.Record(Event{RecordID: recA, Interaction: "read", Target: fmt.Sprintf("Patient/a%d", i)})
		f.clock.Advance(time.Second)
	}
	f.log.Record(Event{RecordID: recB, Interaction: "read", Target: "Patient/b0"})
	f.flush()
	for i := 2; i < 5; i++ {
		f.log.Record(Event{RecordID: recA, Interaction: "read", Target: fmt.Sprintf("Patient/a%d", i)})
		f.clock.Advance(time.Second)
	}
	f.flush()
	got := f.events(recA)
	var refs []string
	for _, ae := range got {
		refs = append(refs, path(ae, "entity", 0, "what", "reference").(string))
	}
	if strings.Join(refs, ",") != "Patient/a4,Patient/a3,Patient/a2" {
		t.Errorf("kept %v, want the newest three", refs)
	}
	if n := len(f.events(recB)); n != 1 {
		t.Errorf("the other record lost events: %d", n)
	}
	if n := storedEvents(t, f.kv); n != 4 {
		t.Errorf("%d events stored, want 4", n)
	}
	checkCounts(t, f.kv)
	// One batch over the limit on its own.
	for i := range 7 {
		f.log.Record(Event{RecordID: recB, Interaction: "read", Target: fmt.Sprintf("Patient/b%d", i+1)})
	}
	f.flush()
	if n := len(f.events(recB)); n != 3 {
		t.Errorf("recB keeps %d events, want 3", n)
	}
	if n := storedEvents(t, f.kv); n != 6 {
		t.Errorf("%d events stored, want 6", n)
	}
	checkCounts(t, f.kv)
	// A record already at its limit keeps its newest MaxPerRecord.
	f.log.Record(Event{RecordID: recA, Interaction: "read", Target: "Patient/a5"})
	f.flush()
	if n := len(f.events(recA)); n != 3 {
		t.Errorf("recA keeps %d events, want 3", n)
	}
	checkCounts(t, f.kv)
}

func TestRetentionPrunesOldEvents(t *testing.T) {
	f := newFixture(t, Options{Retention: 24 * time.Hour})
	f.log.Record(Event{RecordID: recA, Interaction: "read", Target: "Patient/old"})
	f.log.Record(Event{RecordID: recB, Interaction: "read", Target: "Patient/oldB"})
	f.flush()
	f.clock.Advance(20 * time.Hour)
	f.log.Record(Event{RecordID: recA, Interaction: "read", Target: "Patient/new"})
	f.flush()
	if n := len(f.events(recA)); n != 2 {
		t.Fatalf("before expiry: %d events", n)
	}
	f.clock.Advance(5 * time.Hour)
	// Expired events are not listed even before pruning.
	got := f.events(recA)
	if len(got) != 1 || path(got[0], "entity", 0, "what", "reference") != "Patient/new" {
		t.Errorf("after expiry lists %v", got)
	}
	if n := storedEvents(t, f.kv); n != 3 {
		t.Fatalf("pruned before any flush: %d left", n)
	}
	// A flush with nothing queued still prunes.
	f.flush()
	if n := storedEvents(t, f.kv); n != 1 {
		t.Errorf("%d events stored after pruning, want 1", n)
	}
	if n := keyCount(t, f.kv, bucketCounts); n != 1 {
		t.Errorf("%d counts after pruning, want 1 (recB has none left)", n)
	}
	checkCounts(t, f.kv)
}

func TestRecordNeverBlocksWhenTheQueueIsFull(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	f := newFixture(t, Options{QueueSize: 2, Logger: zap.New(core)})
	// No Run: nothing drains the queue.
	for i := range 10 {
		f.log.Record(Event{RecordID: recA, Interaction: "read", Target: fmt.Sprintf("Patient/%d", i)})
	}
	if f.log.Dropped() != 8 {
		t.Errorf("Dropped = %d, want 8", f.log.Dropped())
	}
	if n := logs.FilterMessage("dropping audit events").Len(); n != 1 {
		t.Errorf("%d warnings, want 1 (rate-limited)", n)
	}
	f.clock.Advance(dropWarningInterval)
	f.log.Record(Event{RecordID: recA, Interaction: "read"})
	if n := logs.FilterMessage("dropping audit events").Len(); n != 2 {
		t.Errorf("%d warnings after a minute, want 2", n)
	}
	f.flush()
	got := f.events(recA)
	if len(got) != 2 || path(got[1], "entity", 0, "what", "reference") != "Patient/0" {
		t.Errorf("the first two events should be kept: %v", got)
	}
	// The queue has room again.
	f.log.Record(Event{RecordID: recA, Interaction: "read"})
	if f.log.Dropped() != 9 {
		t.Errorf("Dropped = %d, want 9", f.log.Dropped())
	}
}

func TestRunWritesBatchesAndFlushesOnCancel(t *testing.T) {
	f := newFixture(t, Options{})
	tick := make(chan time.Time)
	batches := make(chan int, 10)
	f.log.tick = tick
	f.log.written = func(n int) { batches <- n }

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.log.Run(ctx) }()

	record := func(n int) {
		for range n {
			f.log.Record(Event{RecordID: recA, Interaction: "read"})
			f.clock.Advance(time.Millisecond)
		}
	}
	record(3)
	tick <- time.Time{}
	if n := <-batches; n != 3 {
		t.Errorf("first batch %d events, want 3", n)
	}
	record(2)
	tick <- time.Time{}
	if n := <-batches; n != 2 {
		t.Errorf("second batch %d events, want 2", n)
	}
	// Nothing queued: a tick writes nothing; the next batch is the last.
	tick <- time.Time{}
	record(4)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := <-batches; n != 4 {
		t.Errorf("final batch %d events, want 4", n)
	}
	if len(batches) != 0 {
		t.Errorf("unexpected batch of %d", <-batches)
	}
	if n := len(f.events(recA)); n != 9 {
		t.Errorf("%d events written, want 9", n)
	}
}

func TestRunWithRealTickerUnderConcurrentRecords(t *testing.T) {
	f := newFixture(t, Options{QueueSize: 50, FlushInterval: time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.log.Run(ctx) }()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				f.log.Record(Event{RecordID: recA, Interaction: "read", Target: fmt.Sprintf("Patient/g%di%d", g, i)})
			}
		}()
	}
	wg.Wait()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	stored := storedEvents(t, f.kv)
	if uint64(stored)+f.log.Dropped() != 800 {
		t.Errorf("stored %d + dropped %d != 800 recorded", stored, f.log.Dropped())
	}
	checkCounts(t, f.kv)
}

func TestReopenKeepsEvents(t *testing.T) {
	f := newFixture(t, Options{})
	f.log.Record(Event{RecordID: recA, Interaction: "read", Target: "Patient/1"})
	f.flush()
	first := f.events(recA)[0]["id"]
	l, err := NewWithStore(f.reopen(), Options{Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	// Same time as the first event: the sequence still orders them.
	l.Record(Event{RecordID: recA, Interaction: "update", Target: "Patient/1"})
	if err := l.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	b, err := l.Bundle(context.Background(), recA, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := entriesOf(t, b)
	if len(got) != 2 || got[1]["id"] != first || got[0]["action"] != "U" || got[0]["id"] == first {
		t.Errorf("after reopen: %v", got)
	}
}

func TestDeleteRecordRemovesOnlyItsEvents(t *testing.T) {
	f := newFixture(t, Options{})
	for range 3 {
		f.log.Record(Event{RecordID: recA, Interaction: "read"})
		f.log.Record(Event{RecordID: recB, Interaction: "read"})
	}
	f.flush()
	// Still queued: must not outlive the deletion.
	f.log.Record(Event{RecordID: recA, Interaction: "read"})
	if err := f.log.DeleteRecord(context.Background(), recA); err != nil {
		t.Fatal(err)
	}
	f.flush()
	if n := len(f.events(recA)); n != 0 {
		t.Errorf("deleted record lists %d events", n)
	}
	if n := len(f.events(recB)); n != 3 {
		t.Errorf("other record lists %d events, want 3", n)
	}
	// One segment of recB's three events, its index entry and its count.
	for _, b := range BoltBuckets {
		if n := keyCount(t, f.kv, b); n != 1 {
			t.Errorf("%s holds %d keys, want 1", b, n)
		}
	}
	if n := storedEvents(t, f.kv); n != 3 {
		t.Errorf("%d events stored, want 3", n)
	}
	checkCounts(t, f.kv)
	if err := f.log.DeleteRecord(context.Background(), "a\x00b"); !errors.Is(err, ErrInvalidRecordID) {
		t.Errorf("DeleteRecord of an invalid id: %v", err)
	}
}

func TestBundleCountAndSince(t *testing.T) {
	f := newFixture(t, Options{})
	t0 := f.clock.Now()
	for range 1005 {
		f.log.Record(Event{RecordID: recA, Interaction: "read"})
		f.clock.Advance(time.Second)
	}
	f.flush()
	for _, c := range []struct{ count, want int }{{0, DefaultCount}, {-5, DefaultCount}, {7, 7}, {5000, MaxCount}} {
		if n := len(entriesOf(t, f.bundle(recA, time.Time{}, c.count))); n != c.want {
			t.Errorf("count %d: %d entries, want %d", c.count, n, c.want)
		}
	}
	// Since is inclusive.
	got := entriesOf(t, f.bundle(recA, t0.Add(1000*time.Second), 0))
	if len(got) != 5 {
		t.Fatalf("since: %d entries, want 5", len(got))
	}
	if last := checkAuditEvent(t, got[4]); !last.Equal(t0.Add(1000 * time.Second)) {
		t.Errorf("oldest listed %v", last)
	}
}

func TestBadOptionsAndCancelledContexts(t *testing.T) {
	if _, err := New(nil, Options{}); err == nil {
		t.Errorf("New(nil) accepted")
	}
	f := newFixture(t, Options{})
	if _, err := NewWithStore(f.log.store, Options{QueueSize: -1}); err == nil {
		t.Errorf("negative queue size accepted")
	}
	f.log.Record(Event{RecordID: recA, Interaction: "read"})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := f.log.Flush(ctx); err == nil {
		t.Errorf("Flush with a cancelled context succeeded")
	}
	if _, err := f.log.Bundle(ctx, recA, time.Time{}, 0); err == nil {
		t.Errorf("Bundle with a cancelled context succeeded")
	}
	if err := f.log.DeleteRecord(ctx, recA); err == nil {
		t.Errorf("DeleteRecord with a cancelled context succeeded")
	}
	// The event is still queued, not lost.
	f.flush()
	if n := len(f.events(recA)); n != 1 {
		t.Errorf("%d events after the refused calls, want 1", n)
	}
}

func TestRetentionDeletesInBoundedRounds(t *testing.T) {
	f := newFixture(t, Options{Retention: time.Hour, QueueSize: 2 * maxExpiredPerTx})
	// Two records, each under MaxPerRecord.
	for i := range maxExpiredPerTx + 5 {
		f.log.Record(Event{RecordID: []string{recA, recB}[i%2], Interaction: "read"})
	}
	f.flush()
	f.clock.Advance(2 * time.Hour)
	f.flush()
	if n := storedEvents(t, f.kv); n != 5 {
		t.Errorf("%d events left after one round, want 5", n)
	}
	checkCounts(t, f.kv)
	f.flush()
	if n := storedEvents(t, f.kv); n != 0 {
		t.Errorf("%d events left after two rounds, want 0", n)
	}
	checkCounts(t, f.kv)
}

func TestTimesOutsideTheStampRange(t *testing.T) {
	f := newFixture(t, Options{})
	future := time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)
	f.log.Record(Event{Time: future, RecordID: recA, Interaction: "read", Target: "Patient/future"})
	f.log.Record(Event{RecordID: recA, Interaction: "read", Target: "Patient/now"})
	f.log.Record(Event{Time: time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC), RecordID: recA, Interaction: "read", Target: "Patient/past"})
	f.flush()
	got := f.events(recA)
	// The 1900 event is past retention; the future one sorts first and
	// keeps its time.
	if len(got) != 2 || path(got[0], "entity", 0, "what", "reference") != "Patient/future" {
		t.Fatalf("got %v", got)
	}
	if recorded := checkAuditEvent(t, got[0]); !recorded.Equal(future) {
		t.Errorf("recorded %v, want %v", recorded, future)
	}
	checkCounts(t, f.kv)
}

func TestFailedWritesAreCountedAsDropped(t *testing.T) {
	core, logs := observer.New(zapcore.ErrorLevel)
	f := newFixture(t, Options{Logger: zap.New(core)})
	tick := make(chan time.Time)
	f.log.tick = tick
	f.log.Record(Event{RecordID: recA, Interaction: "read"})
	f.log.Record(Event{RecordID: recA, Interaction: "read"})
	f.closeDB()
	if err := f.log.Flush(context.Background()); err == nil {
		t.Fatalf("Flush on a closed database succeeded")
	}
	if f.log.Dropped() != 2 {
		t.Errorf("Dropped = %d, want 2", f.log.Dropped())
	}
	// Run logs a failed batch and goes on; its last write's error is
	// what it returns.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.log.Run(ctx) }()
	f.log.Record(Event{RecordID: recA, Interaction: "read"})
	tick <- time.Time{}
	f.log.Record(Event{RecordID: recA, Interaction: "read"})
	cancel()
	if err := <-done; err == nil {
		t.Errorf("Run's last write on a closed database succeeded")
	}
	if n := logs.FilterMessage("writing audit events").Len(); n != 1 {
		t.Errorf("%d write errors logged, want 1", n)
	}
	if f.log.Dropped() != 4 {
		t.Errorf("Dropped = %d, want 4", f.log.Dropped())
	}
}
