package auth

import (
	"errors"
	"strings"
)

// Sentinel errors a *TokenError wraps; test them with errors.Is.
var (
	// ErrMalformed: the token is not a well-formed JWS compact JWT.
	ErrMalformed = errors.New("malformed token")
	// ErrAlgorithm: the token's alg is not on the allow-list, or does not fit the key.
	ErrAlgorithm = errors.New("signing algorithm not allowed")
	// ErrUnknownIssuer: the iss claim names no trusted issuer.
	ErrUnknownIssuer = errors.New("untrusted issuer")
	// ErrUnknownKey: the issuer publishes no key matching the token's kid.
	ErrUnknownKey = errors.New("unknown signing key")
	// ErrBadSignature: the signature does not verify with the issuer's key.
	ErrBadSignature = errors.New("invalid signature")
	// ErrBadAudience: no aud value is one this gateway accepts.
	ErrBadAudience = errors.New("invalid audience")
	// ErrExpired: exp is in the past (beyond the leeway).
	ErrExpired = errors.New("token expired")
	// ErrNotYetValid: nbf or iat is in the future (beyond the leeway).
	ErrNotYetValid = errors.New("token not yet valid")
	// ErrMissingClaim: a required claim (exp, iss, sub) is absent or has the wrong type.
	ErrMissingClaim = errors.New("missing required claim")
	// ErrKeysUnavailable: the issuer's discovery document or JWKS could not be
	// fetched, so the token cannot be checked. A gateway may answer 503 instead of 401.
	ErrKeysUnavailable = errors.New("issuer keys unavailable")
	// ErrRevoked: the issuer says the token, or the grant it came from,
	// was revoked (see IssuerConfig.Check).
	ErrRevoked = errors.New("token revoked")
)

// TokenError says why a bearer token was refused. Reason is safe to show to
// the client: it never contains key material or the token itself.
type TokenError struct {
	// Kind is one of the sentinel errors above.
	Kind error
	// Reason is a short human-readable explanation.
	Reason string
	// Err is the underlying cause, for logs only.
	Err error
}

// Error implements error.
func (e *TokenError) Error() string {
	if e.Reason == "" && e.Kind != nil {
		return "invalid token: " + e.Kind.Error()
	}
	return "invalid token: " + e.Reason
}

// Unwrap lets errors.Is see both the sentinel kind and the cause.
func (e *TokenError) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

func tokenErr(kind error, reason string, cause error) *TokenError {
	return &TokenError{Kind: kind, Reason: reason, Err: cause}
}

// WWWAuthenticate returns the value of a WWW-Authenticate header (RFC 6750
// section 3) for a 401 answer. With a nil err (no token was sent) it carries
// only the realm, as RFC 6750 asks; otherwise error="invalid_token" and a
// description taken from the *TokenError's Reason.
func WWWAuthenticate(realm string, err error) string {
	var b strings.Builder
	b.WriteString("Bearer")
	sep := " "
	param := func(name, value string) {
		b.WriteString(sep)
		b.WriteString(name)
		b.WriteString(`="`)
		b.WriteString(quotable(value))
		b.WriteString(`"`)
		sep = ", "
	}
	if realm != "" {
		param("realm", realm)
	}
	if err != nil {
		param("error", "invalid_token")
		description := "the access token is invalid"
		var te *TokenError
		if errors.As(err, &te) {
			description = strings.TrimPrefix(te.Error(), "invalid token: ")
		}
		param("error_description", description)
	}
	return b.String()
}

// WWWAuthenticateInsufficientScope returns the WWW-Authenticate value for a
// 403 answer to a valid token that lacks scope (RFC 6750 section 3.1).
func WWWAuthenticateInsufficientScope(realm, scope string) string {
	var b strings.Builder
	b.WriteString("Bearer ")
	if realm != "" {
		b.WriteString(`realm="` + quotable(realm) + `", `)
	}
	b.WriteString(`error="insufficient_scope"`)
	if scope != "" {
		b.WriteString(`, scope="` + quotable(scope) + `"`)
	}
	return b.String()
}

// quotable keeps only the characters RFC 6750 allows inside its quoted
// strings (%x20-21 / %x23-5B / %x5D-7E), so no value can break the header.
func quotable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			return '_'
		}
		return r
	}, s)
}
