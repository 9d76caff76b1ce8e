package backend

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// TestModesRegistered: every partition mode is a registered type, New
// names them all when refusing another, and each one strips what a client
// sends and marks the request so that two records never meet upstream.
func TestModesRegistered(t *testing.T) {
	want := []Mode{ModeHeader, ModeURLPrefix, ModeTenantHeader, ModePerRecordURL}
	if len(modes) != len(want) {
		t.Errorf("%d modes registered, want %d", len(modes), len(want))
	}
	_, err := New(Config{Mode: "cookie"})
	for _, m := range want {
		if err == nil || !strings.Contains(err.Error(), string(m)) {
			t.Errorf("unknown mode refused with %v, which does not name %s", err, m)
		}
	}
	alice := Target{RecordID: "alice1", PartitionID: 7, PartitionName: "pfr-alice1"}
	bob := Target{RecordID: "bob1", PartitionID: 8, PartitionName: "pfr-bob1"}
	for _, m := range want {
		cfg := Config{Mode: m}
		if m == ModePerRecordURL {
			cfg.URLTemplate = "http://fhir-{record_id}.internal/fhir"
		}
		b, err := New(cfg)
		if err != nil {
			t.Fatalf("%s: %v", m, err)
		}
		seen := map[string]bool{}
		for _, target := range []Target{alice, bob} {
			r := httptest.NewRequest("GET", "http://gw/fhir/Patient/1", nil)
			r.Header.Set("X-Request-Partition-IDs", "1")
			r.Header.Set("X-FHIR-TENANT-ID", "other")
			if _, err := b.Outbound(r, target); err != nil {
				t.Fatalf("%s: %v", m, err)
			}
			mark := r.Host + r.URL.Path + "|" + r.Header.Get("X-Request-Partition-IDs") + "|" + r.Header.Get("X-FHIR-TENANT-ID")
			if seen[mark] || strings.Contains(mark, "|1|") || strings.Contains(mark, "other") {
				t.Errorf("%s: request for %s sent as %q", m, target.RecordID, mark)
			}
			seen[mark] = true
		}
	}
}
