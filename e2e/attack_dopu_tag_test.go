package e2e

import (
	"net/http"
	"testing"
)

// TestAttackDropOffTagPlantedElsewhere: on an upstream that keeps every
// record in one partition, bob writes into his own record a resource
// tagged with the id of a drop-off waiting for alice (a sender learns that
// id: it is the receipt). Alice's pick-up must not take bob's resource for
// an earlier import of hers (it would import nothing and report success),
// and her rejection must not delete bob's resource. The gateway's own
// searches keep only the record's resources (gateway.searchRecord).
func TestAttackDropOffTagPlantedElsewhere(t *testing.T) {
	for _, kind := range []upstreamKind{embedded, shared} {
		t.Run(kind.String(), func(t *testing.T) {
			w := startAttackWorld(t, kind)
			alice, bob := w.token("alice"), w.token("bob")
			doc := []byte(bundle("collection",
				entry("urn:uuid:11111111-1111-4111-8111-111111111111", "", "",
					`{"resourceType":"Patient","name":[{"family":"Smith","given":["Alice"]}],"gender":"female","birthDate":"1980-04-02"}`),
				entry("urn:uuid:22222222-2222-4222-8222-222222222222", "", "",
					`{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"2339-0"}]},`+
						`"subject":{"reference":"urn:uuid:11111111-1111-4111-8111-111111111111"},"valueQuantity":{"value":0.40,"unit":"mg/dL"}}`)))
			// Two drop-offs for alice: one she picks up, one she rejects.
			var receipts []string
			for _, extra := range []string{"", " "} {
				r := w.dropOff("alice-home", append(append([]byte{}, doc...), extra...)).Expect(t, http.StatusAccepted, "drop off for alice")
				receipts = append(receipts, r.Header.Get("X-PFR-Receipt"))
			}
			if receipts[0] == "" || receipts[0] == receipts[1] {
				t.Fatalf("receipts %q", receipts)
			}
			// Bob plants an Observation in his own record carrying the tags.
			var tags []any
			for _, id := range receipts {
				tags = append(tags, map[string]any{"system": "urn:pfr:dopu", "code": id})
			}
			planted := observation("Patient/"+w.vars["bob"], "2339-0")
			planted["meta"] = map[string]any{"tag": tags}
			made := w.do("POST", recordURL("bob-home", "/Observation"), bob, planted).Expect(t, http.StatusCreated, "bob's tagged Observation")
			plantedID := idOf(t, made)

			p := w.do("POST", apex("/pfr/v1/records/alice-home/dropoffs/"+receipts[0]+"/pickup"), alice, nil).
				Expect(t, http.StatusOK, "alice picks up")
			if n, _ := p.Body["imported"].(float64); n < 1 {
				t.Fatalf("alice's pick-up imported nothing (bob's planted tag taken for an earlier import): %v", p.Body)
			}
			found := w.do("GET", recordURL("alice-home", "/Observation?code=2339-0"), alice, nil).Expect(t, http.StatusOK, "alice searches")
			if len(resources(found.Body)) != 1 {
				t.Fatalf("alice's record holds %d glucose Observations, want 1: %s", len(resources(found.Body)), found.Raw)
			}

			w.do("POST", apex("/pfr/v1/records/alice-home/dropoffs/"+receipts[1]+"/reject"), alice, map[string]any{"reason": "twice"}).
				Expect(t, http.StatusOK, "alice rejects the second")
			w.do("GET", recordURL("bob-home", "/Observation/"+plantedID), bob, nil).
				Expect(t, http.StatusOK, "bob's Observation survives alice's rejection")
		})
	}
}
