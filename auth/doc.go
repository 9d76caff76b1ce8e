// Package auth verifies bearer tokens and decides what they grant.
//
// A [Verifier] checks JWT access tokens against a fixed set of trusted
// issuers: the signature with a key taken only from the token's own issuer
// (a JWKS fetched directly or through OIDC discovery, or a static
// [KeySource]), an algorithm allow-list, and the iss, aud, exp, nbf and iat
// claims. [ParseScopes] turns the token's SMART on FHIR scopes (v1 and v2)
// into [Grants] that answer whether a FHIR interaction is allowed.
// [DevIssuer] is a local signing key for development on *.localhost.
//
// The package knows nothing of Caddy or HTTP routing; the gateway calls it.
package auth
