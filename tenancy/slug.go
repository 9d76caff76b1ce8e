package tenancy

import (
	"fmt"
	"slices"
)

// Slug length limits. A DNS label holds at most 63 octets; three is our own
// floor, so that short names cannot be squatted and one- or two-letter
// labels stay free for infrastructure.
const (
	MinSlugLength = 3
	MaxSlugLength = 63
)

// reservedSlugs are labels refused as slugs because they name, or could be
// mistaken for, infrastructure under the base domain: web, mail and DNS
// hosts, identity and API endpoints, this gateway's own paths, deployment
// stages and mail-policy or autodiscovery names that clients probe by
// convention. Names shorter than MinSlugLength (mx, ns) are refused by
// length, and labels with characters a slug cannot contain anyway (such as
// "_acme-challenge" or "_dmarc") are refused by the character rules and need
// no entry. Kept sorted; a test checks it.
var reservedSlugs = []string{
	"abuse", "account", "accounts", "acme", "admin", "administrator", "apex",
	"api", "app", "apps", "assets", "audit", "auth", "autoconfig",
	"autodiscover", "billing", "blog", "cdn", "console", "dashboard", "default",
	"demo", "dev", "dns", "doc", "docs", "dopu", "download", "dropoff", "email",
	"fhir", "ftp", "gateway", "hapi", "help", "hostmaster", "imap", "img",
	"internal", "invitations", "isatap", "local", "localhost", "login",
	"logout", "mail", "manage", "media", "metadata", "mta-sts", "noc",
	"ns1", "ns2", "ns3", "ns4", "oauth", "oauth2", "oidc", "openid",
	"partition", "pfr", "pop", "pop3", "portal", "postmaster", "prod",
	"production", "proxy", "register", "root", "security", "signin", "signup",
	"smart", "smtp", "sso", "staging", "static", "status", "support", "system",
	"test", "token", "webmail", "webmaster", "well-known", "wpad", "www",
}

// ReservedSlugs returns a copy of the labels ValidateSlug refuses by name,
// sorted.
func ReservedSlugs() []string { return slices.Clone(reservedSlugs) }

// ValidateSlug reports whether slug may name a PFR, i.e. be the leftmost
// label of {slug}.{base_domain}. The rules: 3 to 63 characters of lower-case
// ASCII letters, digits and '-'; no leading or trailing '-'; no "--" in the
// third and fourth positions (RFC 5891 reserves those labels, "xn--" being
// IDNA's punycode prefix, so look-alike Unicode names cannot come in that
// way); not a reserved name (see ReservedSlugs). It does not fold case:
// callers that accept "John" must lower-case it themselves. Errors wrap
// ErrInvalidSlug.
func ValidateSlug(slug string) error {
	if len(slug) < MinSlugLength || len(slug) > MaxSlugLength {
		return fmt.Errorf("%w %q: must be %d to %d characters", ErrInvalidSlug, slug, MinSlugLength, MaxSlugLength)
	}
	for i := 0; i < len(slug); i++ {
		c := slug[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return fmt.Errorf("%w %q: only lower-case letters a-z, digits and '-' are allowed", ErrInvalidSlug, slug)
		}
	}
	if slug[0] == '-' || slug[len(slug)-1] == '-' {
		return fmt.Errorf("%w %q: must not start or end with '-'", ErrInvalidSlug, slug)
	}
	if slug[2] == '-' && slug[3] == '-' {
		return fmt.Errorf("%w %q: '--' in the third and fourth positions is reserved (IDNA)", ErrInvalidSlug, slug)
	}
	if _, reserved := slices.BinarySearch(reservedSlugs, slug); reserved {
		return fmt.Errorf("%w %q: reserved name", ErrInvalidSlug, slug)
	}
	return nil
}
