package caddymodule

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/pfrgateway/caddy-pfr/backend"
)

// TestPartitionSyntaxForEveryMode: every partition mode backend knows has
// its Caddyfile syntax here, and only those; each one's example adapts to
// the partition config it says, and an unknown mode is refused naming
// every mode.
func TestPartitionSyntaxForEveryMode(t *testing.T) {
	for _, m := range backend.Modes() {
		if partitionSyntax[m] == nil {
			t.Errorf("partition mode %s has no Caddyfile syntax in partitionSyntax", m)
		}
	}
	if len(partitionSyntax) != len(backend.Modes()) {
		t.Errorf("partitionSyntax has %d modes, backend %d: %v", len(partitionSyntax), len(backend.Modes()), backend.Modes())
	}
	examples := map[backend.Mode]struct {
		caddyfile string
		want      PartitionConfig
	}{
		backend.ModeHeader:    {"partition header X-Partition", PartitionConfig{Mode: "header", Header: "X-Partition"}},
		backend.ModeURLPrefix: {"partition url_prefix", PartitionConfig{Mode: "url_prefix"}},
		backend.ModeTenantHeader: {"partition tenant_header X-Tenant {\n\t\tdatastore_header X-DS\n\t\tdatastore_id ds1\n\t}",
			PartitionConfig{Mode: "tenant_header", TenantHeader: "X-Tenant", DataStoreHeader: "X-DS", DataStoreID: "ds1"}},
		backend.ModePerRecordURL: {"partition per_record_url https://fhir-{record_id}.internal/fhir",
			PartitionConfig{Mode: "per_record_url", URLTemplate: "https://fhir-{record_id}.internal/fhir"}},
	}
	for _, m := range backend.Modes() {
		ex, ok := examples[m]
		if !ok {
			t.Errorf("no example of partition mode %s in this test", m)
			continue
		}
		cfg, err := adapt(t, "http://:8080 {\n\tpfr {\n\t"+ex.caddyfile+"\n\t}\n}")
		if err != nil {
			t.Errorf("%s: %v", m, err)
			continue
		}
		raw, _ := json.Marshal(handler(t, cfg, "pfr")["partition"])
		var got PartitionConfig
		if err := json.Unmarshal(raw, &got); err != nil || !reflect.DeepEqual(got, ex.want) {
			t.Errorf("%s adapted to %s, want %+v", m, raw, ex.want)
		}
		// A stray argument after the mode's own is refused.
		if _, err := adapt(t, "http://:8080 {\n\tpfr {\n\t"+strings.SplitN(ex.caddyfile, " {", 2)[0]+" x y\n\t}\n}"); err == nil {
			t.Errorf("%s with extra arguments adapted", m)
		}
	}
	_, err := adapt(t, "http://:8080 {\n\tpfr {\n\tpartition sideways\n\t}\n}")
	for _, m := range backend.Modes() {
		if err == nil || !strings.Contains(err.Error(), string(m)) {
			t.Errorf("unknown mode refused with %v, which does not name %s", err, m)
		}
	}
}
