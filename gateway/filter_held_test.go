package gateway

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/pfrgateway/caddy-pfr/fhir"
)

// TestFilterBundleHeldOrStreamed: a searchset the filter holds whole (up to
// maxHeldBundle) and one it streams (larger) lose the same foreign entries
// and keep the rest byte for byte; the held one is sent with its exact
// Content-Length, whatever the sizes of the writes it arrived in.
func TestFilterBundleHeldOrStreamed(t *testing.T) {
	searchset := func(n int) (body, want string) {
		var in, out strings.Builder
		in.WriteString(`{"resourceType":"Bundle","type":"searchset","entry":[`)
		out.WriteString(`{"resourceType":"Bundle","type":"searchset","entry":[`)
		kept := 0
		for i := range n {
			owner := "p1"
			if i%7 == 3 {
				owner = "someone-else"
			}
			e := fmt.Sprintf(`{"fullUrl":"https://john.pfr.example/fhir/Observation/o%d","resource":{"resourceType":"Observation","id":"o%d","status":"final","code":{"text":"%s"},"subject":{"reference":"Patient/%s"}},"search":{"mode":"match"}}`,
				i, i, strings.Repeat("x", 200), owner)
			if i > 0 {
				in.WriteByte(',')
			}
			in.WriteString(e)
			if owner == "p1" {
				if kept > 0 {
					out.WriteByte(',')
				}
				out.WriteString(e)
				kept++
			}
		}
		in.WriteString("]}")
		out.WriteString("]}")
		return in.String(), out.String()
	}
	owner := fhir.Owner{PatientID: "p1", Bases: []string{"https://john.pfr.example/fhir"}}
	policy := fhir.DefaultOwnershipPolicy()
	for _, c := range []struct {
		name     string
		entries  int
		chunk    int
		streamed bool
	}{
		{"small, one write", 50, 1 << 30, false},
		{"small, many writes", 50, 1000, false},
		{"larger than held, one write", 2000, 1 << 30, true},
		{"larger than held, many writes", 2000, 4096, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			body, want := searchset(c.entries)
			if streamed := len(body) > maxHeldBundle; streamed != c.streamed {
				t.Fatalf("a body of %d bytes: streamed %v, want %v", len(body), streamed, c.streamed)
			}
			for _, quick := range []bool{false, true} {
				rec := httptest.NewRecorder()
				rec.Header().Set("Content-Type", "application/fhir+json")
				rec.Header().Set("Content-Length", strconv.Itoa(len(body)))
				f := &filteringWriter{w: rec, log: zap.NewNop(), record: "rec1", limit: 1 << 20,
					keep: func(res map[string]any) bool { return owner.Belongs(res, policy) }}
				if quick {
					f.opts.Quick = func(e *fhir.EntryFacts) (bool, bool) {
						_, keep, decided := owner.JudgeEntry(e, policy)
						return keep, decided
					}
				}
				f.WriteHeader(http.StatusOK)
				for rest := body; rest != ""; {
					n := min(c.chunk, len(rest))
					if _, err := f.Write([]byte(rest[:n])); err != nil {
						t.Fatal(err)
					}
					rest = rest[n:]
				}
				if err := f.Close(); err != nil {
					t.Fatal(err)
				}
				got := rec.Body.String()
				if got != want {
					t.Fatalf("quick %v: got %d bytes, want %d: %.200s", quick, len(got), len(want), got)
				}
				cl := rec.Header().Get("Content-Length")
				switch {
				case !c.streamed && cl != strconv.Itoa(len(want)):
					t.Errorf("quick %v: Content-Length %q, want %d", quick, cl, len(want))
				case c.streamed && cl != "":
					t.Errorf("quick %v: a streamed answer with Content-Length %q", quick, cl)
				}
				if bytes.Contains(rec.Body.Bytes(), []byte("someone-else")) {
					t.Errorf("quick %v: another person's entry shown", quick)
				}
			}
		})
	}
}

// TestFilterBundleHeldInvalid: a held Bundle that is not valid JSON is an
// error before anything is sent, so that the answer is aborted, never
// shown unchecked or cut.
func TestFilterBundleHeldInvalid(t *testing.T) {
	rec := httptest.NewRecorder()
	rec.Header().Set("Content-Type", "application/fhir+json")
	f := &filteringWriter{w: rec, log: zap.NewNop(), record: "rec1", limit: 1 << 20,
		keep: func(map[string]any) bool { return true }}
	f.WriteHeader(http.StatusOK)
	if _, err := f.Write([]byte(`{"resourceType":"Bundle","entry":[{"resource":{"id":"x"}}`)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err == nil {
		t.Fatal("no error for a truncated Bundle")
	}
	if rec.Body.Len() != 0 {
		t.Errorf("sent %q of a Bundle that failed its check", rec.Body)
	}
}

// TestFilterSingleKnownFacts: a single resource is judged from the facts
// verifyAnswer's pass learnt only when the held bytes are the bytes those
// facts describe; when anything between changed them (the URL rewriter),
// the held resource is read again, and a resource of another person is
// refused either way.
func TestFilterSingleKnownFacts(t *testing.T) {
	owner := fhir.Owner{PatientID: "p1"}
	policy := fhir.DefaultOwnershipPolicy()
	own := []byte(`{"resourceType":"Observation","id":"o1","subject":{"reference":"Patient/p1"}}`)
	foreign := []byte(`{"resourceType":"Observation","id":"o1","subject":{"reference":"Patient/p2"}}`)
	for _, c := range []struct {
		name         string
		known, held  []byte
		wantStatus   int
		wantFromKnow bool
	}{
		{"same bytes, own", own, own, http.StatusOK, true},
		{"same bytes, foreign", foreign, foreign, http.StatusNotFound, true},
		{"changed to foreign", own, foreign, http.StatusNotFound, false},
		{"changed to own", foreign, own, http.StatusOK, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			var known fhir.EntryFacts
			if n, err := fhir.ScanResource(c.known, &known); err != nil || n != len(c.known) {
				t.Fatal(n, err)
			}
			rec := httptest.NewRecorder()
			rec.Header().Set("Content-Type", "application/fhir+json")
			fromKnown := false
			f := &filteringWriter{w: rec, log: zap.NewNop(), record: "rec1", limit: 1 << 20, single: true,
				keep:  func(res map[string]any) bool { return owner.Belongs(res, policy) },
				known: &known, knownBody: c.known}
			f.opts.Quick = func(e *fhir.EntryFacts) (bool, bool) {
				fromKnown = e == &known
				_, keep, decided := owner.JudgeEntry(e, policy)
				return keep, decided
			}
			f.WriteHeader(http.StatusOK)
			if _, err := f.Write(c.held); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			if rec.Code != c.wantStatus || fromKnown != c.wantFromKnow {
				t.Fatalf("status %d, judged from the known facts %v; want %d, %v: %s", rec.Code, fromKnown, c.wantStatus, c.wantFromKnow, rec.Body)
			}
			if c.wantStatus == http.StatusOK && !bytes.Equal(rec.Body.Bytes(), c.held) {
				t.Fatalf("sent %s, want %s", rec.Body, c.held)
			}
		})
	}
}
