package audit

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/kv"
)

// modelEvent is an event as the model of the log keeps it: its time, and
// the order in which the store stamped events of equal time.
type modelEvent struct {
	at     time.Time
	order  int
	target string
}

func compareModel(a, b modelEvent) int {
	if c := a.at.Compare(b.at); c != 0 {
		return c
	}
	return cmp.Compare(a.order, b.order)
}

// TestSegmentsAgreeWithAModel writes random batches (several records,
// times out of order within and across batches, batches larger than a
// segment, limits and retention that cut segments in their middle) and
// after each compares every record's newest events, and the stored
// layout, with a model: the events sorted by time, the newest kept.
func TestSegmentsAgreeWithAModel(t *testing.T) {
	for seed := range uint64(6) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			f := newFixture(t, Options{})
			store := f.log.store
			records := []string{recA, recB, "cccccccccccccccccccccccccc"}
			model := map[string][]modelEvent{}
			base := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
			now := base
			order := 0
			for round := range 25 {
				n := rng.IntN(2 * maxSegmentEvents)
				if round%5 == 4 {
					n = 0 // pruning alone
				}
				var batch []Event
				touched := map[string]bool{}
				for range n {
					rec := records[rng.IntN(len(records))]
					// Mostly the latest seconds; a few stragglers from
					// before the previous batch.
					at := now.Add(-time.Duration(rng.IntN(3000)) * time.Millisecond)
					if rng.IntN(20) == 0 {
						at = now.Add(-time.Duration(rng.IntN(60)) * time.Second)
					}
					target := fmt.Sprintf("Observation/r%d-%d", round, len(batch))
					batch = append(batch, normalize(Event{Time: at, RecordID: rec, Interaction: "read", Target: target}, now))
					model[rec] = append(model[rec], modelEvent{at: at, order: order, target: target})
					order++
					touched[rec] = true
				}
				maxPer := uint64(150 + rng.IntN(400))
				cutoff := now.Add(-time.Duration(20+rng.IntN(40)) * time.Second)
				if err := store.Write(context.Background(), batch, maxPer, cutoff); err != nil {
					t.Fatalf("round %d: %v", round, err)
				}
				checkCounts(t, f.kv)
				for _, rec := range records {
					evs := model[rec]
					slices.SortStableFunc(evs, compareModel)
					if touched[rec] && uint64(len(evs)) > maxPer {
						evs = evs[uint64(len(evs))-maxPer:]
					}
					for len(evs) > 0 && evs[0].at.Before(cutoff) {
						evs = evs[1:]
					}
					model[rec] = evs
					checkNewest(t, store, rec, evs, round)
				}
				now = now.Add(time.Duration(1+rng.IntN(4)) * time.Second)
			}
		})
	}
}

// checkNewest compares what the store lists of rec, whole and from a
// time, with the model's events (oldest first).
func checkNewest(t *testing.T, store Store, rec string, model []modelEvent, round int) {
	t.Helper()
	got, err := store.Newest(context.Background(), rec, time.Time{}, len(model)+10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(model) {
		t.Fatalf("round %d, %s: %d events listed, want %d", round, rec, len(got), len(model))
	}
	for i, ev := range got {
		want := model[len(model)-1-i]
		if ev.Target != want.target || !ev.Time.Equal(want.at) {
			t.Fatalf("round %d, %s: event %d is %s at %s, want %s at %s", round, rec, i, ev.Target, ev.Time, want.target, want.at)
		}
		if i > 0 && ev.ID >= got[i-1].ID {
			t.Fatalf("round %d, %s: ids %s then %s are not newest first", round, rec, got[i-1].ID, ev.ID)
		}
	}
	if len(model) < 3 {
		return
	}
	from := model[len(model)/2].at
	since, err := store.Newest(context.Background(), rec, from, 5)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := len(model) - 1; i >= 0 && len(want) < 5 && !model[i].at.Before(from); i-- {
		want = append(want, model[i].target)
	}
	var have []string
	for _, ev := range since {
		have = append(have, ev.Target)
	}
	if !slices.Equal(have, want) {
		t.Fatalf("round %d, %s: since %s lists %v, want %v", round, rec, from, have, want)
	}
}

// TestEventsStoredAloneAreRead is a log written before segments (every
// event its own key, indexed by its stamp with the record id): it is
// listed, pruned, appended to (overlapping it too) and deleted as if it
// had been written in segments.
func TestEventsStoredAloneAreRead(t *testing.T) {
	f := newFixture(t, Options{MaxPerRecord: 4})
	t0 := f.clock.Now()
	// The layout of before: one key per event, the sequence counting up.
	err := f.kv.Update(context.Background(), "test", func(tx kv.Tx) error {
		for i, rec := range []string{recA, recA, recA, recB} {
			seq, err := tx.Bucket(bucketEvents).NextSequence()
			if err != nil {
				return err
			}
			e := normalize(Event{Time: t0.Add(time.Duration(i) * time.Second), RecordID: rec, Interaction: "read",
				Target: fmt.Sprintf("Patient/old%d", i)}, t0)
			data, err := appendStored(nil, e)
			if err != nil {
				return err
			}
			st := stamp(e.Time, seq)
			if err := tx.Bucket(bucketEvents).Put(eventKey(rec, st), data); err != nil {
				return err
			}
			if err := tx.Bucket(bucketByTime).Put(st, []byte(rec)); err != nil {
				return err
			}
		}
		bt := boltTx{tx}
		if err := bt.setCount(recA, 3); err != nil {
			return err
		}
		return bt.setCount(recB, 1)
	})
	if err != nil {
		t.Fatal(err)
	}
	checkCounts(t, f.kv)
	targets := func(rec string) string {
		var out []string
		for _, ae := range f.events(rec) {
			out = append(out, path(ae, "entity", 0, "what", "reference").(string))
		}
		return fmt.Sprint(out)
	}
	if got := targets(recA); got != "[Patient/old2 Patient/old1 Patient/old0]" {
		t.Fatalf("stored alone, listed as %s", got)
	}
	// A new event between two old ones, and one after them all: merged
	// into one segment; the limit of four drops the oldest.
	f.log.Record(Event{Time: t0.Add(1500 * time.Millisecond), RecordID: recA, Interaction: "read", Target: "Patient/between"})
	f.log.Record(Event{Time: t0.Add(time.Minute), RecordID: recA, Interaction: "read", Target: "Patient/new"})
	f.flush()
	checkCounts(t, f.kv)
	if got := targets(recA); got != "[Patient/new Patient/old2 Patient/between Patient/old1]" {
		t.Errorf("after new events, listed as %s", got)
	}
	if got := targets(recB); got != "[Patient/old3]" {
		t.Errorf("the other record lists %s", got)
	}
	if err := f.log.DeleteRecord(context.Background(), recB); err != nil {
		t.Fatal(err)
	}
	checkCounts(t, f.kv)
	if n := storedEvents(t, f.kv); n != 4 {
		t.Errorf("%d events stored, want 4", n)
	}
	// Retention reaches the old events the same way.
	f.clock.Advance(DefaultRetention + 30*time.Second)
	f.flush()
	checkCounts(t, f.kv)
	if got := targets(recA); got != "[Patient/new]" {
		t.Errorf("after retention, listed as %s", got)
	}
}

// TestMalformedSegmentsAreErrors: a value that is neither a segment nor
// an event stored alone is an error, never a panic or a silent skip.
func TestMalformedSegmentsAreErrors(t *testing.T) {
	key := stamp(time.Unix(1, 0), 1)
	good := appendSegment(nil, []segEvent{{stamp: key, data: []byte(`{"a":"R"}`)}})
	for _, v := range [][]byte{
		nil, {}, {0x02}, good[:len(good)-1], good[:10],
		append(append([]byte{segmentMark}, key...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01),
	} {
		if _, err := readSegment(nil, key, v); err == nil {
			t.Errorf("%x read without error", v)
		}
	}
	evs, err := readSegment(nil, key, good)
	if err != nil || len(evs) != 1 || !bytes.Equal(evs[0].stamp, key) || string(evs[0].data) != `{"a":"R"}` {
		t.Errorf("a good segment reads as %v, %v", evs, err)
	}
}
