package tenancy

import (
	"errors"
	"strings"
	"testing"
)

func TestNewIDForm(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := NewID()
		if err := ValidateID(id); err != nil {
			t.Fatalf("NewID() = %q: %v", id, err)
		}
		if seen[id] {
			t.Fatalf("NewID repeated %q", id)
		}
		seen[id] = true
	}
	if IDLength != 26 {
		t.Fatalf("IDLength = %d, want 26 (128 bits of base32)", IDLength)
	}
}

func TestValidateIDRefuses(t *testing.T) {
	for _, id := range []string{
		"", "abc", strings.Repeat("a", 25), strings.Repeat("a", 27),
		strings.ToUpper(NewID()), "aaaaaaaaaaaaaaaaaaaaaaaaa1", // '1' is not base32
		"aaaaaaaaaaaa/aaaaaaaaaaaaa", "aaaaaaaaaaaaaaaaaaaaaaaaa\x00",
	} {
		if err := ValidateID(id); !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidateID(%q) = %v, want ErrInvalid", id, err)
		}
	}
}
