package tenancy

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestValidateSlug(t *testing.T) {
	tests := []struct {
		name, slug string
		ok         bool
	}{
		{"simple", "john", true},
		{"digits and hyphen", "anna-2", true},
		{"minimum length", "abc", true},
		{"maximum length", strings.Repeat("a", 63), true},
		{"all digits", "123", true},
		{"inner double hyphen elsewhere", "ab-c--d", true},
		{"empty", "", false},
		{"too short", "ab", false},
		{"too long", strings.Repeat("a", 64), false},
		{"uppercase", "John", false},
		{"underscore", "john_doe", false},
		{"dot", "john.doe", false},
		{"space", "john doe", false},
		{"leading hyphen", "-john", false},
		{"trailing hyphen", "john-", false},
		{"punycode", "xn--bcher-kva", false},
		{"other reserved hyphens", "ab--cd", false},
		{"reserved", "www", false},
		{"reserved api", "api", false},
		{"reserved acme", "_acme-challenge", false},
		{"unicode", "jöhn", false},
		{"unicode look-alike", "јohn", false}, // Cyrillic j
		{"NUL byte", "jo\x00hn", false},
		{"slash", "jo/hn", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateSlug(tt.slug)
			if tt.ok && err != nil {
				t.Fatalf("ValidateSlug(%q) = %v, want nil", tt.slug, err)
			}
			if !tt.ok {
				if !errors.Is(err, ErrInvalidSlug) || !errors.Is(err, ErrInvalid) {
					t.Fatalf("ValidateSlug(%q) = %v, want ErrInvalidSlug (and ErrInvalid)", tt.slug, err)
				}
			}
		})
	}
}

func TestReservedSlugsAreSortedValidLabelsAndRefused(t *testing.T) {
	reserved := ReservedSlugs()
	if !slices.IsSorted(reserved) {
		t.Fatal("reservedSlugs must stay sorted: ValidateSlug binary-searches it")
	}
	if len(slices.Compact(slices.Clone(reserved))) != len(reserved) {
		t.Fatal("reservedSlugs has duplicates")
	}
	for _, s := range reserved {
		err := ValidateSlug(s)
		if !errors.Is(err, ErrInvalidSlug) || !strings.Contains(err.Error(), "reserved") {
			t.Errorf("ValidateSlug(%q) = %v, want refusal as reserved", s, err)
		}
	}
	reserved[0] = "changed"
	if ReservedSlugs()[0] == "changed" {
		t.Fatal("ReservedSlugs exposes the package's own slice")
	}
}
