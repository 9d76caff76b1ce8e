package fhirjson

import (
	"unicode/utf8"
	"unsafe"
)

const hexDigits = "0123456789abcdef"

// AppendString appends s to buf as a JSON string: '"', '\\' and control
// characters escaped, nothing else (no HTML escaping: "<div>" stays as it
// is, as FHIR's narratives are written), and each byte that is not part
// of valid UTF-8 written as \ufffd, as encoding/json does.
func AppendString(buf []byte, s string) []byte {
	buf = append(buf, '"')
	// Runs of bytes that need no care are skipped eight at a time
	// (stringStop); the loop below looks only at the byte that ends one.
	// data is s's bytes, read only.
	data := unsafe.Slice(unsafe.StringData(s), len(s))
	start := 0
	for i := stringStop(data, 0); i < len(s); i = stringStop(data, i) {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			buf = append(buf, s[start:i]...)
			switch c {
			case '"', '\\':
				buf = append(buf, '\\', c)
			case '\n':
				buf = append(buf, '\\', 'n')
			case '\r':
				buf = append(buf, '\\', 'r')
			case '\t':
				buf = append(buf, '\\', 't')
			default:
				buf = append(buf, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			buf = append(buf, s[start:i]...)
			buf = append(buf, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	buf = append(buf, s[start:]...)
	return append(buf, '"')
}
