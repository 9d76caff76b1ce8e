package caddymodule

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

func adapt(t *testing.T, caddyfile string) (map[string]any, error) {
	t.Helper()
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
	if err != nil {
		return nil, err
	}
	var cfg map[string]any
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg, nil
}

// handler digs the first handler named name out of an adapted config.
func handler(t *testing.T, cfg map[string]any, name string) map[string]any {
	t.Helper()
	found := findObject(cfg, func(x map[string]any) bool { return x["handler"] == name })
	if found == nil {
		t.Fatalf("no %s handler in %v", name, cfg)
	}
	return found
}

// findObject returns the first JSON object in v (depth first) that match
// accepts, or nil.
func findObject(v any, match func(map[string]any) bool) map[string]any {
	switch x := v.(type) {
	case map[string]any:
		if match(x) {
			return x
		}
		for _, c := range x {
			if found := findObject(c, match); found != nil {
				return found
			}
		}
	case []any:
		for _, c := range x {
			if found := findObject(c, match); found != nil {
				return found
			}
		}
	}
	return nil
}

func TestGatewayCaddyfile(t *testing.T) {
	cfg, err := adapt(t, `
https://:8443 {
	pfr {
		base_domain pfr.example.com
		fhir_path /r4
		data_dir /var/lib/pfr
		state postgres postgres://pfr@db.internal/pfr
		partition tenant_header X-Tenant {
			datastore_header X-DS
			datastore_id main
		}
		upstream_fhir_path /fhir-server/api/v4
		upstream_url https://fhir.internal/fhir-server/api/v4
		strip_header X-Other
		issuer https://login.example.com/realms/pfr {
			jwks_url https://login.example.com/certs
			audience pfr-gateway api://pfr
			scope_claim scope permissions
		}
		scopes_when_absent patient/*.rs
		smart {
			issuer https://login.example.com/realms/pfr
			authorization_endpoint https://login.example.com/auth
			capabilities launch-standalone client-public
		}
		allowed_types Practitioner Organization
		trust_upstream_isolation false
		response_filter off
		jwks_cache_ttl 5m
		jwks_min_refetch 30s
		max_body_bytes 1048576
		export {
			dir /var/lib/pfr-export
			ttl 2h
			workers 3
			lease 5s
			import_chunk 500
			import_ca /etc/pfr/peer-ca.pem
		}
		dropoff {
			max_bytes 1000000
			ttl 48h
			source_rate 10 5
			record_rate -1
			retry_base 1s
			alert_lease 90s
		}
		upstream reverse_proxy fhir.internal:9443 {
			header_up X-Api-Key secret
		}
	}
}`)
	if err != nil {
		t.Fatal(err)
	}
	h := handler(t, cfg, "pfr")
	raw, _ := json.Marshal(h)
	for _, want := range []string{
		`"base_domain":"pfr.example.com"`, `"fhir_path":"/r4"`, `"data_dir":"/var/lib/pfr"`,
		`"state":{"postgres":"postgres://pfr@db.internal/pfr"}`, `"mode":"tenant_header"`, `"tenant_header":"X-Tenant"`, `"datastore_header":"X-DS"`, `"datastore_id":"main"`,
		`"upstream_fhir_path":"/fhir-server/api/v4"`, `"upstream_urls":["https://fhir.internal/fhir-server/api/v4"]`,
		`"strip_headers":["X-Other"]`, `"jwks_url":"https://login.example.com/certs"`, `"audiences":["pfr-gateway","api://pfr"]`,
		`"scope_claims":["scope","permissions"]`, `"scopes_when_absent":["patient/*.rs"]`,
		`"authorization_endpoint":"https://login.example.com/auth"`, `"capabilities":["launch-standalone","client-public"]`,
		`"allowed_types":["Practitioner","Organization"]`, `"trust_upstream_isolation":false`, `"response_filter":false`,
		`"jwks_cache_ttl":300000000000`, `"max_body_bytes":1048576`, `"source_per_minute":10`, `"source_burst":5`,
		`"record_per_minute":-1`, `"retry_base":1000000000`, `"alert_lease":90000000000`, `"handler":"reverse_proxy"`, `"X-Api-Key":["secret"]`,
		`"export":{"dir":"/var/lib/pfr-export","import_ca":"/etc/pfr/peer-ca.pem","import_chunk":500,"lease":5000000000,"ttl":7200000000000,"workers":3}`,
	} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("adapted pfr handler lacks %s:\n%s", want, raw)
		}
	}
}

func TestCaddyfileRefusals(t *testing.T) {
	for name, body := range map[string]string{
		"unknown option":        "pfr {\n\tbase_domain x.localhost\n\tbogus 1\n}",
		"unknown partition":     "pfr {\n\tpartition sideways\n}",
		"per_record_url no url": "pfr {\n\tpartition per_record_url\n}",
		"argument to pfr":       "pfr extra {\n}",
		"bad duration":          "pfr {\n\tjwks_cache_ttl soon\n}",
		"bad filter":            "pfr {\n\tresponse_filter maybe\n}",
		"bad dropoff":           "pfr {\n\tdropoff {\n\t\tmax_bytes -5\n\t}\n}",
		"store path argument":   "pfr_store ./store.db",
		"unknown upstream":      "pfr {\n\tupstream no_such_handler\n}",
		"unknown state":         "pfr {\n\tstate redis x\n}",
		"postgres without dsn":  "pfr {\n\tstate postgres\n}",
		"bolt with argument":    "pfr {\n\tstate bolt /x\n}",
		"bad export ttl":        "pfr {\n\texport {\n\t\tttl never\n\t}\n}",
		"bad export lease":      "pfr {\n\texport {\n\t\tlease 0s\n\t}\n}",
		"bad import_chunk":      "pfr {\n\texport {\n\t\timport_chunk 0\n\t}\n}",
		"export on":             "pfr {\n\texport on\n}",
	} {
		if _, err := adapt(t, "http://:8080 {\n"+body+"\n}"); err == nil {
			t.Errorf("%s: adapted without error", name)
		}
	}
}

func TestStoreAndPermissionCaddyfile(t *testing.T) {
	cfg, err := adapt(t, `{
	on_demand_tls {
		permission pfr {
			base_domain pfr.example.com
			data_dir /var/lib/pfr
			state postgres {$NO_SUCH_PFR_TEST_VAR:postgres://pfr@db/pfr}
		}
	}
}
http://:8095 {
	pfr_store {
		path /var/lib/pfr/store.db
		partition_header X-Partition
		base_path /r4
	}
}`)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(cfg)
	for _, want := range []string{
		`"handler":"pfr_store"`, `"path":"/var/lib/pfr/store.db"`, `"partition_header":"X-Partition"`, `"base_path":"/r4"`,
		`"module":"pfr"`, `"base_domain":"pfr.example.com"`, `"state":{"postgres":"postgres://pfr@db/pfr"}`,
	} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("adapted config lacks %s:\n%s", want, raw)
		}
	}
}
