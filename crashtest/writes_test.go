package crashtest

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// writesSystem is the identifier system of the owner-write crash test.
const writesSystem = "urn:pfr:crashwrites"

// writeObservation is an Observation of the record's Patient named marker,
// written by hand so that its decimal keeps its spelling (72.50).
func writeObservation(patientID, id, marker string) []byte {
	idMember := ""
	if id != "" {
		idMember = `"id":"` + id + `",`
	}
	return []byte(`{"resourceType":"Observation",` + idMember + `"status":"final",
	 "identifier":[{"system":"` + writesSystem + `","value":"` + marker + `"}],
	 "code":{"coding":[{"system":"http://loinc.org","code":"29463-7"}]},
	 "subject":{"reference":"Patient/` + patientID + `"},
	 "valueQuantity":{"value":72.50,"unit":"kg","system":"http://unitsofmeasure.org","code":"kg"}}`)
}

// writeKind is one kind of owner write and the markers it stores.
type ownerWrite struct {
	kind    string // create, update (create-on-update with the client's id), transaction
	markers []string
}

// writesLedger is what the owner's clients know: every write sent and
// whether it was acknowledged.
type writesLedger struct {
	mu    sync.Mutex
	sent  []ownerWrite
	acked map[int]bool // index in sent → acknowledged
	other []string     // answers that are neither acknowledgement nor cut
}

// TestSIGKILLDuringOwnerWrites: owners write (creates, updates that create,
// transactions of three) from several clients at once into the embedded
// store, and the gateway is SIGKILLed at a random moment, then restarted.
// Every acknowledged write is there exactly once, byte for byte (72.50);
// an unacknowledged one is there once or not at all; a transaction is
// whole or absent.
func TestSIGKILLDuringOwnerWrites(t *testing.T) {
	t.Parallel()
	g := newGateway(t)
	owner := g.token("writer")
	const slug = "writes"
	patientID := g.createRecord(owner, slug, map[string]any{
		"resourceType": "Patient", "name": []any{map[string]any{"family": "Crash", "given": []any{"Wes"}}},
		"gender": "male", "birthDate": "1975-06-07",
	})
	ledger := &writesLedger{acked: map[int]bool{}}
	const rounds, writers, perWriter = 3, 4, 300
	for round := range rounds {
		before := len(ledger.acked)
		runWriters(t, g, owner, slug, patientID, ledger, round, writers, perWriter)
		g.restart()
		ledger.mu.Lock()
		if len(ledger.other) > 0 {
			t.Errorf("round %d: writes refused before the kill: %v", round, ledger.other)
		}
		if len(ledger.acked) == before {
			t.Fatalf("round %d: no write was acknowledged before the kill", round)
		}
		sent := append([]ownerWrite(nil), ledger.sent...)
		acked := make(map[int]bool, len(ledger.acked))
		for i := range ledger.acked {
			acked[i] = true
		}
		ledger.mu.Unlock()

		stored := g.storedMarkers(owner, slug)
		cutButStored := 0
		for i, w := range sent {
			n := 0
			for _, m := range w.markers {
				if stored[m] > 1 {
					t.Errorf("round %d: %s %s stored %d times", round, w.kind, m, stored[m])
				}
				n += min(stored[m], 1)
			}
			switch {
			case acked[i] && n != len(w.markers):
				t.Errorf("round %d: acknowledged %s %v: only %d of %d stored after SIGKILL", round, w.kind, w.markers, n, len(w.markers))
			case !acked[i] && n != 0 && n != len(w.markers):
				t.Errorf("round %d: unacknowledged %s %v half stored (%d of %d)", round, w.kind, w.markers, n, len(w.markers))
			case !acked[i] && n != 0:
				cutButStored++
			}
		}
		t.Logf("round %d: in all %d writes sent, %d acknowledged, %d stored whose answer a kill cut off",
			round, len(sent), len(acked), cutButStored)
	}
}

// runWriters writes from several goroutines until the kill, which comes at
// a random moment once a few writes were acknowledged.
func runWriters(t *testing.T, g *gatewayProcess, owner, slug, patientID string, ledger *writesLedger, round, writers, perWriter int) {
	ctx, cancel := context.WithCancel(testkit.WaitContext(t))
	defer cancel()
	acks := make(chan struct{}, writers*perWriter)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				marker := fmt.Sprintf("r%d-w%d-%d", round, w, i)
				var write ownerWrite
				var method, path string
				var body []byte
				ok := http.StatusCreated
				switch i % 3 {
				case 0:
					write, method, path, body = ownerWrite{"create", []string{marker}}, "POST", "/Observation", writeObservation(patientID, "", marker)
				case 1:
					id := "w-" + marker
					write, method, path, body = ownerWrite{"update", []string{marker}}, "PUT", "/Observation/"+id, writeObservation(patientID, id, marker)
				default:
					markers := []string{marker + "-a", marker + "-b", marker + "-c"}
					entries := make([]string, 0, len(markers))
					for _, m := range markers {
						entries = append(entries, `{"resource":`+string(writeObservation(patientID, "", m))+`,"request":{"method":"POST","url":"Observation"}}`)
					}
					write, method, path, ok = ownerWrite{"transaction", markers}, "POST", "", http.StatusOK
					body = []byte(`{"resourceType":"Bundle","type":"transaction","entry":[` + strings.Join(entries, ",") + `]}`)
				}
				ledger.mu.Lock()
				idx := len(ledger.sent)
				ledger.sent = append(ledger.sent, write)
				ledger.mu.Unlock()
				res, err := g.send(ctx, method, g.recordURL(slug, path), owner, body)
				if err != nil {
					return // the kill cut the connection
				}
				ledger.mu.Lock()
				if res.Status == ok {
					ledger.acked[idx] = true
				} else {
					ledger.other = append(ledger.other, fmt.Sprintf("%s %s: %d %.200s", write.kind, marker, res.Status, res.Raw))
				}
				ledger.mu.Unlock()
				if res.Status == ok {
					acks <- struct{}{}
				}
			}
		}()
	}
	g.killOnceAcked(acks, 5, 300*time.Millisecond)
	wg.Wait()
}

// storedMarkers reads every Observation of the test's identifier system in
// the record (following next links) and counts them by marker, checking
// that each kept its decimal's spelling.
func (g *gatewayProcess) storedMarkers(token, slug string) map[string]int {
	g.t.Helper()
	return g.storedMarkersAt(token, g.recordURL(slug, ""))
}

// storedMarkersAt is storedMarkers for a record's FHIR base URL.
func (g *gatewayProcess) storedMarkersAt(token, fhirBase string) map[string]int {
	g.t.Helper()
	out := map[string]int{}
	next := fhirBase + "/Observation?_count=500&identifier=" + url.QueryEscape(writesSystem+"|")
	for next != "" {
		res := g.do("GET", next, token, nil).Expect(g.t, http.StatusOK, "search the written Observations")
		entries, _ := res.Body["entry"].([]any)
		if len(entries) > 0 && !strings.Contains(string(res.Raw), `"value":72.50`) {
			g.t.Errorf("the stored Observations lost the decimal's spelling 72.50: %.300s", res.Raw)
		}
		for _, e := range entries {
			resource, _ := e.(map[string]any)["resource"].(map[string]any)
			ids, _ := resource["identifier"].([]any)
			for _, id := range ids {
				if m, _ := id.(map[string]any); m["system"] == writesSystem {
					out[m["value"].(string)]++
				}
			}
		}
		next = ""
		links, _ := res.Body["link"].([]any)
		for _, l := range links {
			if m, _ := l.(map[string]any); m["relation"] == "next" {
				next, _ = m["url"].(string)
			}
		}
	}
	return out
}
