package authz

import (
	"encoding/json"
	"time"
)

// Client is an OAuth client: a SMART app or a backend service.
type Client struct {
	ID string `json:"client_id"`
	// SecretHash is the SHA-256 (hex) of the client_secret of a
	// client_secret_basic client.
	SecretHash string `json:"secret_hash,omitempty"`
	Name       string `json:"client_name,omitempty"`
	// RedirectURIs are compared exactly.
	RedirectURIs []string `json:"redirect_uris,omitempty"`
	// AuthMethod is none (a public client, PKCE only),
	// client_secret_basic or private_key_jwt.
	AuthMethod string `json:"token_endpoint_auth_method"`
	// JWKS (a JSON Web Key Set) holds a private_key_jwt client's public
	// keys.
	JWKS json.RawMessage `json:"jwks,omitempty"`
	// JWKSURI is where a private_key_jwt client publishes its keys
	// instead (fetched through Config.Egress).
	JWKSURI string `json:"jwks_uri,omitempty"`
	// GrantTypes are authorization_code, refresh_token and
	// client_credentials.
	GrantTypes []string `json:"grant_types"`
	// Scope bounds what the client may ask for ("" = any SMART scope).
	Scope string `json:"scope,omitempty"`
	// RegistrationHash is the SHA-256 (hex) of the registration access
	// token of a registered client (RFC 7592); static clients have none.
	RegistrationHash string `json:"registration_hash,omitempty"`
	// Static clients come from the configuration.
	Static  bool      `json:"static,omitempty"`
	Created time.Time `json:"created"`
}

// Pending is an authorization request waiting for login and consent.
type Pending struct {
	ID string `json:"id"`
	// Browser is the hash of the browser cookie it is bound to.
	Browser     string    `json:"browser"`
	ClientID    string    `json:"client_id"`
	RedirectURI string    `json:"redirect_uri"`
	State       string    `json:"state,omitempty"`
	Scope       []string  `json:"scope"`
	Challenge   string    `json:"code_challenge"`
	Nonce       string    `json:"nonce,omitempty"`
	RecordID    string    `json:"record"`
	Audience    string    `json:"aud"`
	CSRF        string    `json:"csrf"`
	Expires     time.Time `json:"exp"`
	// Login is the relying party's state with the OpenID provider.
	Login *LoginState `json:"login,omitempty"`
}

// LoginState is an OpenID login in progress.
type LoginState struct {
	Verifier string `json:"verifier"`
	Nonce    string `json:"nonce"`
}

// Session is a browser's login.
type Session struct {
	Hash    string    `json:"hash"`
	Issuer  string    `json:"iss"`
	Subject string    `json:"sub"`
	Expires time.Time `json:"exp"`
}

// Code is an authorization code, single-use, valid for a minute.
type Code struct {
	Hash        string    `json:"hash"`
	ClientID    string    `json:"client_id"`
	RedirectURI string    `json:"redirect_uri"`
	Challenge   string    `json:"code_challenge"`
	GrantID     string    `json:"grant"`
	Scope       []string  `json:"scope"`
	Nonce       string    `json:"nonce,omitempty"`
	Expires     time.Time `json:"exp"`
	Used        bool      `json:"used,omitempty"`
	// Families are the refresh token families its exchange started.
	Families []string `json:"families,omitempty"`
}

// Grant is a person's approval of an app for a record: the scopes they
// ticked. A new approval replaces it with a new id.
type Grant struct {
	ID        string    `json:"id"`
	RecordID  string    `json:"record"`
	ClientID  string    `json:"client_id"`
	AccountID string    `json:"account"`
	Issuer    string    `json:"iss"`
	Subject   string    `json:"sub"`
	Scope     []string  `json:"scope"`
	Created   time.Time `json:"created"`
}

// Refresh is a refresh token (stored by hash).
type Refresh struct {
	Family   string    `json:"family"`
	GrantID  string    `json:"grant"`
	ClientID string    `json:"client_id"`
	Scope    []string  `json:"scope"`
	Nonce    string    `json:"nonce,omitempty"`
	Expires  time.Time `json:"exp"`
	// FamilyExpires is when the family ends, whatever the rotations.
	FamilyExpires time.Time `json:"family_exp"`
	Used          bool      `json:"used,omitempty"`
}

// StoredKey is a signing key.
type StoredKey struct {
	Kid string `json:"kid"`
	// PrivateKey is PEM, PKCS #8 (RSA).
	PrivateKey string    `json:"private_key"`
	Created    time.Time `json:"created"`
	// Retired is when a newer key took over signing; zero for the
	// current key.
	Retired time.Time `json:"retired,omitzero"`
}
