package dopu

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// benchBundle returns a collection of about size bytes: a Patient and
// Observations referencing it.
func benchBundle(b *testing.B, size, seed int) []byte {
	obs := func(i int) map[string]any {
		return map[string]any{"resourceType": "Observation", "status": "final",
			"code":          map[string]any{"text": fmt.Sprintf("observation %d-%d", seed, i)},
			"subject":       map[string]any{"reference": "urn:uuid:00000000-0000-4000-8000-000000000000"},
			"valueQuantity": map[string]any{"value": 72.5, "unit": "kg"}, "note": []any{map[string]any{"text": strings.Repeat("n", 200)}}}
	}
	resources := []map[string]any{patient("Bench", "Mark", "1980-01-01", "male")}
	for i := 0; len(resources)*380 < size; i++ {
		resources = append(resources, obs(i))
	}
	return bundleJSON(b, "collection", resources...)
}

func benchmarkIntake(b *testing.B, size int) {
	unlimited := Rate{PerMinute: -1}
	f := newFixture(b, Limits{SourceRate: unlimited, RecordRate: unlimited, PendingPerRecord: 1 << 30, PendingBytesPerRecord: 1 << 50}, Options{})
	bodies := make([][]byte, 16)
	for i := range bodies {
		bodies[i] = benchBundle(b, size, i)
	}
	b.SetBytes(int64(len(bodies[0])))
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		// Vary a byte so every drop-off is new, not a duplicate.
		body := append([]byte(fmt.Sprintf(`{"id":"bench-%d",`, i)), bodies[i%len(bodies)][1:]...)
		if _, err := f.svc.Intake(context.Background(), fmt.Sprint("rec", i%8), fhir.ContentType, "", bytes.NewReader(body), Sender{IP: "192.0.2.1"}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIntake50KB and BenchmarkIntake2MB measure a validated,
// fsynced drop-off.
func BenchmarkIntake50KB(b *testing.B) { benchmarkIntake(b, 50<<10) }
func BenchmarkIntake2MB(b *testing.B)  { benchmarkIntake(b, 2<<20) }

// BenchmarkPrepareSynthea measures preparing the largest Synthea Bundle.
func BenchmarkPrepareSynthea(b *testing.B) {
	f := newFixture(b, Limits{}, Options{})
	in := testkit.ReadFHIR(b, "synthea/Alda_Carter_ee1034c9-cb75-413c-8f36-da7e4268d2b5.json")
	r := f.mustDrop("rec1", in, "192.0.2.1")
	p, err := f.svc.BeginPickup(context.Background(), "rec1", r.ID)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Abort()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, err := p.Prepare(nil, "x", PrepareOptions{Force: true}); err != nil {
			b.Fatal(err)
		}
	}
}
