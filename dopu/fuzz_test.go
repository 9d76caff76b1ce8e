package dopu

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// FuzzIntakeAndPrepare feeds arbitrary bodies to intake's validation and,
// when accepted, to the pick-up preparation: neither may panic, and an
// accepted Bundle must always prepare into valid JSON that no longer
// names the sender's Patient by its fullUrl.
func FuzzIntakeAndPrepare(f *testing.F) {
	for _, path := range []string{ipsPath, father, "spec/Bundle-bundle-transaction.json"} {
		f.Add(testkit.ReadFHIR(f, path))
	}
	f.Add([]byte(`{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Patient","name":[{"text":" "}]}}]}`))
	f.Add([]byte(`{"resourceType":"Bundle","type":"transaction","entry":[{"fullUrl":"http://x/Patient/1","resource":{"resourceType":"Patient","id":"1","identifier":{"value":"a"}},"request":{"method":"PUT","url":"Patient?identifier=a"}},{"resource":{"resourceType":"Observation","subject":{"reference":"Patient/1/_history/2"},"patient":[1]}}]}`))
	f.Add([]byte(`{"resourceType":"Bundle","type":"document","entry":[{"resource":{"resourceType":"Composition","subject":{"reference":"Patient?identifier=x|y"}}}]}`))
	limits := Limits{}.withDefaults()
	record := map[string]any{"resourceType": "Patient", "name": []any{map[string]any{"text": "A B"}}}
	f.Fuzz(func(t *testing.T, data []byte) {
		facts, err := parseBundle(data, limits)
		if err != nil {
			return
		}
		_ = ScoreMatch(facts.Subject, SummarizePatient(record))
		p := &Pickup{body: data, dropOff: DropOff{Summary: Summary{ID: "fuzz"}}}
		imp, err := p.Prepare(record, "me", PrepareOptions{Force: true})
		if err != nil {
			// Only decoding differences between intake and pick-up may
			// fail here, never a panic; record them.
			t.Skipf("prepare: %v", err)
		}
		if !json.Valid(imp.Transaction) {
			t.Fatalf("invalid transaction JSON: %s", imp.Transaction)
		}
		var b decodedBundle
		if json.Unmarshal(data, &b) == nil {
			ix := make([]entryHead, len(b.Entry))
			for i, e := range b.Entry {
				ix[i] = headOf(e.FullURL, e.Resource)
			}
			if s, _ := newBundleIndex(ix).subject(); s >= 0 && b.Entry[s].FullURL != "" {
				needle, _ := json.Marshal(b.Entry[s].FullURL)
				if bytes.Contains(imp.Transaction, append([]byte(`"reference":`), needle...)) {
					t.Fatalf("the transaction still references the sender's Patient %s", needle)
				}
			}
		}
	})
}
