package auth_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"strings"

	"github.com/pfrgateway/caddy-pfr/auth"
)

// The gateway's use of the package: verify the bearer token for the PFR's
// FHIR base, then ask the token's SMART scopes about the interaction.
func Example() {
	dir, err := os.MkdirTemp("", "pfr-auth-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	if !auth.DevIssuerAllowed("pfr.localhost") {
		log.Fatal("dev issuer refused")
	}
	dev, err := auth.LoadOrCreateDevIssuer(dir)
	if err != nil {
		log.Fatal(err)
	}
	verifier, err := auth.NewVerifier([]auth.IssuerConfig{dev.Config()}, auth.Options{})
	if err != nil {
		log.Fatal(err)
	}
	token, err := dev.Mint("alice", "openid patient/Observation.rs", nil, 0)
	if err != nil {
		log.Fatal(err)
	}

	id, err := verifier.Verify(context.Background(), token, []string{"https://john.pfr.localhost/fhir"})
	if err != nil {
		fmt.Println(auth.WWWAuthenticate("pfr", err)) // 401
		return
	}
	grants := id.Grants()
	ok, _ := grants.Allows(auth.Request{Interaction: auth.InteractionSearch, ResourceType: "Observation"})
	fmt.Println("search Observation:", ok)
	ok, missing := grants.Allows(auth.Request{Interaction: auth.InteractionCreate, ResourceType: "Observation"})
	fmt.Println("create Observation:", ok, "missing", missing) // 403

	// A token whose signature was changed (its first character) is refused.
	i := strings.LastIndexByte(token, '.') + 1
	other := map[byte]string{'A': "B"}[token[i]]
	if other == "" {
		other = "A"
	}
	_, err = verifier.Verify(context.Background(), token[:i]+other+token[i+1:], nil)
	fmt.Println(auth.WWWAuthenticate("pfr", err))
	// Output:
	// search Observation: true
	// create Observation: false missing patient/Observation.c
	// Bearer realm="pfr", error="invalid_token", error_description="invalid signature"
}
