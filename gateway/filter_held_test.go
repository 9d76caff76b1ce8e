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
