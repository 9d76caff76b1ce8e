// Package authz is the gateway's built-in SMART authorization server
// (SMART App Launch 2.2, OAuth 2.0): every Personal FHIR Record gets one,
// so any SMART app can connect to a record with no work in an identity
// provider, and the person decides, on a consent page, what each app may
// do with which record.
//
// It delegates who the user is to a configured OpenID provider (as a
// relying party, authorization code with PKCE) or, on localhost only, to
// the development accounts; and decides itself what an app may do:
//
//   - clients: static ones from the configuration and dynamically
//     registered ones (RFC 7591), public (PKCE) or confidential
//     (client_secret_basic, private_key_jwt);
//   - authorization code with PKCE S256 only, codes single-use and valid
//     for one minute, exact redirect_uri match, aud required and equal to
//     the record's FHIR base;
//   - the consent page: server-rendered HTML with every scope untickable,
//     CSRF tokens bound to the browser, never framed;
//   - grants per (record, app, account): listed and revoked by the
//     record's owners and managers; revocation ends refresh tokens at once
//     and access tokens at their next use (the token check is a store read);
//   - rotating refresh tokens in families: presenting a rotated one
//     revokes the whole family;
//   - signing keys (RS256) rotated on a schedule, old ones kept in the
//     JWKS until every token they signed has expired.
//
// Its tokens are verified by the gateway's pipeline like any trusted
// issuer's: Server.IssuerConfig is one more auth.IssuerConfig.
//
// State lives behind Store; KVStore implements it on internal/kv, that is
// on the gateway's bbolt file for one node or on PostgreSQL for several.
// The package knows nothing of Caddy.
package authz
