package audit

import (
	"encoding/json"
	"math"
	"reflect"
	"testing"
	"time"
)

// storedEquivalent checks that appendStored(e) is valid JSON that reads
// back as json.Marshal(storedAs(e)) does.
func storedEquivalent(t *testing.T, e Event) {
	t.Helper()
	want, werr := json.Marshal(storedAs(e))
	got, gerr := appendStored([]byte("prefix"), e)
	if (werr == nil) != (gerr == nil) {
		t.Fatalf("%+v: error %v, encoding/json's %v", e, gerr, werr)
	}
	if werr != nil {
		return
	}
	got = got[len("prefix"):]
	if !json.Valid(got) {
		t.Fatalf("%+v: invalid JSON %s", e, got)
	}
	var a, b storedEvent
	if err := json.Unmarshal(got, &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(want, &b); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a, b) || !a.Time.Equal(b.Time) {
		t.Fatalf("%+v:\n got %s\nwant %s", e, got, want)
	}
	// The same members: nothing added, nothing omitted that was kept.
	var am, bm map[string]any
	_ = json.Unmarshal(got, &am)
	_ = json.Unmarshal(want, &bm)
	if !reflect.DeepEqual(am, bm) {
		t.Fatalf("%+v: members\n got %v\nwant %v", e, am, bm)
	}
}

// TestAppendStoredAsMarshal: the log's own encoder stores what
// encoding/json stored, for every field, string and time it may meet.
func TestAppendStoredAsMarshal(t *testing.T) {
	base := Event{
		Time: time.Date(2026, 12, 4, 5, 6, 7, 123456789, time.UTC), RecordID: "r1",
		Issuer: "https://issuer.example", Subject: "alice", ClientID: "app",
		SourceIP: "127.0.0.1", Action: "R", Interaction: "read", Target: "Observation/1",
		Status: 200, Detail: "3 entries",
	}
	storedEquivalent(t, base)
	storedEquivalent(t, Event{Time: base.Time, Action: "E"}) // every optional field empty
	strs := []string{"", "a", `"`, `\`, "\x00", "\x1f", "\x7f", "\n\r\t\b\f", "<&>", "é", "日本",
		"\u2028\u2029", "\xff", "a\xc3", "\xed\xa0\x80", "😀", `a"b\c` + "\x01d"}
	for _, s := range strs {
		for f := range 7 {
			e := base
			*[]*string{&e.Issuer, &e.Subject, &e.ClientID, &e.SourceIP, &e.Interaction, &e.Target, &e.Detail}[f] = s
			storedEquivalent(t, e)
		}
	}
	for _, st := range []int{0, 1, 99, 404, -1, math.MaxInt, math.MinInt} {
		e := base
		e.Status = st
		storedEquivalent(t, e)
	}
	for _, tm := range []time.Time{{}, time.Unix(0, 0).UTC(), time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600)), time.Date(2026, 1, 2, 3, 4, 5, 1000, time.UTC)} {
		e := base
		e.Time = tm
		storedEquivalent(t, e)
	}
}

// FuzzAppendStored: any strings and numbers read back as encoding/json's.
func FuzzAppendStored(f *testing.F) {
	f.Add("https://issuer.example", "alice", "127.0.0.1", "Observation/1", "\x00\"\\<", 200, int64(0))
	f.Fuzz(func(t *testing.T, iss, sub, ip, target, detail string, status int, ns int64) {
		storedEquivalent(t, Event{
			Time: time.Unix(0, ns).UTC(), Issuer: iss, Subject: sub, ClientID: detail, SourceIP: ip,
			Action: "R", Interaction: sub, Target: target, Status: status, Detail: detail,
		})
	})
}

// BenchmarkEncodeEvent compares the writer's encoder with encoding/json
// on a gateway read's event.
func BenchmarkEncodeEvent(b *testing.B) {
	e := normalize(Event{
		RecordID: "r1", Issuer: "https://issuer.example", Subject: "alice", ClientID: "app",
		SourceIP: "127.0.0.1", Action: "R", Interaction: "read", Target: "Observation/1", Status: 200,
	}, time.Now())
	b.Run("appendStored", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for b.Loop() {
			buf, _ = appendStored(buf[:0], e)
		}
	})
	b.Run("json.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = json.Marshal(storedAs(e))
		}
	})
}
