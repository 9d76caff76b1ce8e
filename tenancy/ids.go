package tenancy

import (
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"strings"
)

// idEncoding is RFC 4648 base32 in lower case without padding: URL-, DNS-
// and file-name-safe, and case-insensitive readers cannot confuse two ids.
var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// idBytes is the entropy of ids and invitation codes: 128 bits.
const idBytes = 16

// IDLength is the length of ids and invitation codes in characters:
// 128 bits in 5-bit characters, rounded up.
const IDLength = (idBytes*8 + 4) / 5

// NewID returns a fresh random id: 128 bits as 26 characters of lower-case
// base32. Record ids, account ids and invitation codes have this form.
func NewID() string {
	b := make([]byte, idBytes)
	// crypto/rand.Read never fails (it crashes the program instead).
	_, _ = rand.Read(b)
	return idEncoding.EncodeToString(b)
}

// ValidateID reports whether id has the form NewID returns. Errors wrap
// ErrInvalid.
func ValidateID(id string) error {
	if len(id) != IDLength || strings.Trim(id, "abcdefghijklmnopqrstuvwxyz234567") != "" {
		return fmt.Errorf("%w id %q: want %d characters of lower-case base32", ErrInvalid, id, IDLength)
	}
	return nil
}
