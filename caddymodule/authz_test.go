package caddymodule

import (
	"encoding/json"
	"testing"
	"time"
)

func TestAuthzCaddyfile(t *testing.T) {
	cfg, err := adapt(t, `
:8443 {
	pfr {
		base_domain pfr.example.com
		authorization_server {
			issuer https://pfr.example.com
			login oidc https://login.example.com/realms/pfr {
				client_id pfr-gateway
				client_secret {env.PFR_OIDC_SECRET}
				scope email
			}
			client my-app {
				name "My App"
				redirect_uri https://app.example/cb http://127.0.0.1/cb
				scope patient/*.rs launch/patient
				grant_type authorization_code
			}
			registration off
			access_token_ttl 2m
			key_rotation 24h
		}
		upstream pfr_store
	}
}`)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(handler(t, cfg, "pfr")["authorization_server"])
	var got AuthzConfig
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	if got.Issuer != "https://pfr.example.com" || got.Login.Provider != "oidc" || got.Login.ClientID != "pfr-gateway" ||
		got.Login.ClientSecret != "{env.PFR_OIDC_SECRET}" || !got.DisableRegistration || time.Duration(got.AccessTokenTTL) != 2*time.Minute {
		t.Errorf("authorization_server %s", raw)
	}
	if len(got.Clients) != 1 || got.Clients[0].Name != "My App" || len(got.Clients[0].RedirectURIs) != 2 ||
		got.Clients[0].Scope != "patient/*.rs launch/patient" {
		t.Errorf("clients %+v", got.Clients)
	}
	for _, bad := range []string{
		"authorization_server extra",
		"authorization_server {\n\t\t\tlogin ldap\n\t\t}",
		"authorization_server {\n\t\t\tregistration maybe\n\t\t}",
		"authorization_server {\n\t\t\taccess_token_ttl -1s\n\t\t}",
		"authorization_server {\n\t\t\tclient\n\t\t}",
		"authorization_server {\n\t\t\tunknown x\n\t\t}",
	} {
		_, err := adapt(t, "pfr.localhost {\n\tpfr {\n\t\tbase_domain pfr.localhost\n\t\t"+bad+"\n\t\tupstream pfr_store\n\t}\n}")
		if err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}
