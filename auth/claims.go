package auth

import (
	"slices"
	"strings"

	"github.com/golang-jwt/jwt/v5"
)

// identity builds the Identity from claims that already passed signature
// and time checks.
func (ti *trustedIssuer) identity(claims jwt.MapClaims) (*Identity, error) {
	sub, err := claims.GetSubject()
	if err != nil || sub == "" {
		return nil, tokenErr(ErrMissingClaim, "missing sub", err)
	}
	aud, err := claims.GetAudience()
	if err != nil {
		return nil, tokenErr(ErrMalformed, "aud has the wrong type", err)
	}
	exp, err := claims.GetExpirationTime()
	if err != nil || exp == nil {
		return nil, tokenErr(ErrMissingClaim, "missing exp", err)
	}
	return &Identity{
		Issuer:    ti.config.Issuer,
		Subject:   sub,
		ClientID:  firstString(claims, ti.config.ClientIDClaims),
		Scopes:    scopesFromClaims(claims, ti.config.ScopeClaims),
		Audience:  []string(aud),
		ExpiresAt: exp.Time,
		Claims:    map[string]any(claims),
	}, nil
}

// scopesFromClaims collects scopes from every named claim, whether it is a
// space-separated string (OAuth "scope") or an array (Azure/Okta "scp").
func scopesFromClaims(claims jwt.MapClaims, names []string) []string {
	var scopes []string
	add := func(s string) {
		for _, f := range strings.Fields(s) {
			if !slices.Contains(scopes, f) {
				scopes = append(scopes, f)
			}
		}
	}
	for _, name := range names {
		switch v := claims[name].(type) {
		case string:
			add(v)
		case []any:
			for _, item := range v {
				if s, ok := item.(string); ok {
					add(s)
				}
			}
		}
	}
	return scopes
}

func firstString(claims jwt.MapClaims, names []string) string {
	for _, name := range names {
		if s, ok := claims[name].(string); ok && s != "" {
			return s
		}
	}
	return ""
}
