package pfrproc

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/pfrgateway/caddy-pfr/caddymodule"
)

// TestPlainGatewayAdapts: the benches' Caddyfile adapts with the lines
// they add inside the pfr block, and those lines reach the handler.
func TestPlainGatewayAdapts(t *testing.T) {
	lines := "dropoff {\n\tsource_rate -1\n}\n" + StoreUpstream("/w")
	cfg := PlainGateway(2001, 2002, "/w", "pfr.localhost", lines)
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cfg), nil)
	if err != nil {
		t.Fatalf("%v\n%s", err, cfg)
	}
	var doc map[string]any
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatal(err)
	}
	js := string(out)
	for _, want := range []string{`"127.0.0.1:2001"`, `"127.0.0.1:2002"`, `"/w/store.db"`, `"/w/gateway"`, `"pfr.localhost"`, `"source_per_minute":-1`} {
		if !strings.Contains(js, want) {
			t.Errorf("adapted config lacks %s:\n%s", want, js)
		}
	}
}
