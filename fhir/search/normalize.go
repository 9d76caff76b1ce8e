package search

import (
	"strings"
	"unicode"

	"golang.org/x/text/unicode/norm"
)

// normalize folds s for string search: accents removed (é → e), case
// folded, so that "Rene" finds "René" and "rené".
func normalize(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range norm.NFD.String(s) {
		if unicode.Is(unicode.Mn, r) {
			continue
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}

// splitOr splits a parameter value at commas that are not escaped with a
// backslash. Escapes are kept for splitUnescaped and unescape to handle.
func splitOr(value string) []string {
	return splitEscaped(value, ',')
}

// splitEscaped splits s at every sep not preceded by a backslash escape.
func splitEscaped(s string, sep byte) []string {
	var parts []string
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case sep:
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}

// unescape removes the backslash escapes of \, \| \$ and \\.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
