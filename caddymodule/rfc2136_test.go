package caddymodule

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/pfrgateway/caddy-pfr/rfc2136"
)

// dnsProvider digs the first DNS challenge provider out of an adapted
// config: under an ACME issuer's challenges, or the TLS app's global one.
func dnsProvider(t *testing.T, cfg map[string]any) map[string]any {
	t.Helper()
	found := findObject(cfg, func(x map[string]any) bool { return x["name"] == "rfc2136" })
	if found == nil {
		t.Fatalf("no rfc2136 provider in %v", cfg)
	}
	return found
}

func TestRFC2136Caddyfile(t *testing.T) {
	want := map[string]any{
		"name": "rfc2136", "server": "ns1.example.com:53", "key_name": "acme-update",
		"key_alg": "hmac-sha512", "key": "{env.RFC2136_KEY}", "timeout": float64(5 * time.Second),
	}
	block := `rfc2136 {
			server ns1.example.com:53
			key_name acme-update
			key_alg hmac-sha512
			key {env.RFC2136_KEY}
			timeout 5s
		}`
	for name, caddyfile := range map[string]string{
		"tls dns": `https://pfr.example.com, https://*.pfr.example.com {
	tls {
		dns ` + block + `
	}
	respond ok
}`,
		"acme_dns": `{
	acme_dns ` + block + `
}
https://pfr.example.com, https://*.pfr.example.com {
	respond ok
}`,
	} {
		cfg, err := adapt(t, caddyfile)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got := dnsProvider(t, cfg)
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: provider %s = %v, want %v (all: %v)", name, k, got[k], v, got)
			}
		}
	}

	cfg, err := adapt(t, `https://*.pfr.example.com {
	tls {
		dns rfc2136 ns1.example.com
	}
}`)
	if err != nil {
		t.Fatal(err)
	}
	if got := dnsProvider(t, cfg); got["server"] != "ns1.example.com" {
		t.Errorf("server as the argument: %v", got)
	}

	for _, bad := range []string{
		"rfc2136 {\n\t\t\tsecret x\n\t\t}",
		"rfc2136 {\n\t\t\ttimeout soon\n\t\t}",
		"rfc2136 {\n\t\t\ttimeout -1s\n\t\t}",
		"rfc2136 {\n\t\t\tkey_name a b\n\t\t}",
		"rfc2136 a b",
	} {
		if _, err := adapt(t, "https://*.pfr.example.com {\n\ttls {\n\t\tdns "+bad+"\n\t}\n}"); err == nil {
			t.Errorf("%q adapted without an error", bad)
		}
	}
}

func TestRFC2136Provision(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	t.Setenv("PFR_TEST_TSIG", "c2VjcmV0")
	r := &RFC2136DNS{Server: "127.0.0.1:5353", KeyName: "acme", Key: "{env.PFR_TEST_TSIG}"}
	if err := r.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	if r.provider.KeySecret != "c2VjcmV0" || r.provider.Server != "127.0.0.1:5353" {
		t.Errorf("placeholders not replaced: %+v", r.provider)
	}
	for _, bad := range []*RFC2136DNS{
		{KeyName: "acme", Key: "c2VjcmV0"},
		{Server: "ns1", Key: "c2VjcmV0"},
		{Server: "ns1", KeyName: "acme", Key: "{env.PFR_TEST_UNSET}"},
		{Server: "ns1", KeyName: "acme", Key: "c2VjcmV0", KeyAlgorithm: "hmac-md5"},
	} {
		err := bad.Provision(ctx)
		if !errors.Is(err, rfc2136.ErrConfig) || !strings.HasPrefix(err.Error(), "dns.providers.rfc2136: ") {
			t.Errorf("Provision(%+v) = %v, want a configuration error", bad, err)
		}
	}
}
