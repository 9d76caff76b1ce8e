package fhirjson

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
)

// ErrIncomplete is ScanValue's answer when data ends inside the value:
// more bytes may complete it.
var ErrIncomplete = errors.New("fhirjson: the JSON value is incomplete")

// MaxScanDepth bounds the nesting ScanValue accepts, as encoding/json's
// decoder does (10 000).
const MaxScanDepth = 10000

// SyntaxError is a JSON syntax error found by ScanValue, at Offset bytes
// into the data it was given.
type SyntaxError struct {
	Offset int
	Msg    string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("invalid JSON at byte %d: %s", e.Offset, e.Msg)
}

// ScanValue returns the length of the one JSON value at the start of data
// (whitespace before it included), checking its syntax as strictly
// as encoding/json does (strings, escapes, numbers, literals, commas and
// colons, control characters; not UTF-8, not repeated member names: Check
// and Decode are the door for bodies that are written). It builds nothing
// and allocates only for nesting deeper than 64 levels, so a filter can
// cut a stream into values at the speed of a byte loop — or faster: on
// a machine with AVX2 an object or array is classified 64 bytes at a time
// and walked from token to token (scanBlocks), the byte loop answering
// for whatever the walk does not find whole and valid. ErrIncomplete when
// data ends inside the value (a number at the very end counts as
// incomplete: only its next byte shows that it ended); a *SyntaxError
// otherwise.
func ScanValue(data []byte) (int, error) { return ScanValueNames(data, nil) }

// SkipSpace returns the index of the first byte of data at or after i that
// is not JSON whitespace (len(data) if none).
func SkipSpace(data []byte, i int) int { return skipSpace(data, i) }

func skipSpace(data []byte, i int) int {
	if i < len(data) && data[i] > ' ' {
		return i // compact JSON: no whitespace between tokens (inlined)
	}
	return skipSpaces(data, i)
}

// skipSpaces is skipSpace past at least one byte of whitespace.
func skipSpaces(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\n', '\r':
			i++
			// Pretty-printed JSON indents with runs of spaces: eight at
			// a time.
			for i+8 <= len(data) && binary.LittleEndian.Uint64(data[i:]) == eightSpaces {
				i += 8
			}
		default:
			return i
		}
	}
	return i
}

const (
	eightSpaces = 0x2020202020202020
	lows        = 0x0101010101010101 // 0x01 in every byte
	highs       = 0x8080808080808080 // 0x80 in every byte
)

// stringStop returns the index of the first byte at or after i that ends
// a run of bytes a JSON string holds as they are and the decoder need not
// look at: '"', '\\', a control character or a byte of a multi-byte UTF-8
// sequence (to be checked). It looks at eight bytes at a time and returns
// len(data) if there is none.
func stringStop(data []byte, i int) int {
	// The loop's condition is written so that the compiler sees the load
	// in bounds (no check, no slice built for it: a third of the loop).
	for ; i >= 0 && i <= len(data)-8; i += 8 {
		w := binary.LittleEndian.Uint64(data[i : i+8])
		if m := (stopBorrows(w) | w) & highs; m != 0 {
			return i + bits.TrailingZeros64(m)/8
		}
	}
	for ; i < len(data); i++ {
		if c := data[i]; c == '"' || c == '\\' || c < 0x20 || c >= 0x80 {
			return i
		}
	}
	return i
}

// stopBorrows is what flags, in stopMask, the bytes of w (little-endian)
// that are '"', '\\' or control characters: x - 0x01 in every byte of x
// borrows into its high bit where the byte of x is 0, for x = w^'"',
// w^'\\' and, with 0x20 for 0x01, w itself.
func stopBorrows(w uint64) uint64 {
	return (w ^ '"'*lows - lows) | (w ^ '\\'*lows - lows) | (w - 0x20*lows)
}

// stopMask flags (0x80) the bytes of w (little-endian) that are '"',
// '\\' or control characters; stringStop adds the bytes of multi-byte
// UTF-8 sequences (w&highs). Only the lowest flag is exact: a borrow only
// runs upwards, so a byte can be flagged wrongly only above one that is
// flagged rightly. It is the usual (x-0x01…)&^x&0x80… of each of the three
// x, with the &^x done once: w^'"' and w^'\\' have the high bits of w.
func stopMask(w uint64) uint64 { return stopBorrows(w) &^ w & highs }

// quoteOrStop returns the index of the first byte after the '"' at
// data[i] that ends a run of plain string bytes (stopMask: '"', '\\' or a
// control character), looking at eight bytes at a time, or len(data) when
// fewer than eight bytes are left to look at. Where it finds a '"', the
// string ends there; at anything else the caller reads the string with
// scanString, which reports what is wrong. It is small enough to be
// inlined into the scanner's loop: most strings of FHIR JSON are short
// member names and codes, for which a call costs as much as the reading.
func quoteOrStop(data []byte, i int) int {
	for i++; i >= 0 && i <= len(data)-8; i += 8 {
		if m := stopMask(binary.LittleEndian.Uint64(data[i : i+8])); m != 0 {
			return i + bits.TrailingZeros64(m)/8
		}
	}
	return len(data)
}

// scanString returns the length of the string at the start of data
// (which starts with '"'), quotes included.
func scanString(data []byte) (int, error) {
	i := quoteOrStop(data, 0) // eight bytes at a time up to the first that matters
	if i < len(data) && data[i] == '"' {
		return i + 1, nil // no escape: most strings end here
	}
	i = max(1, min(i, len(data)-8)) // the last bytes, or what stopped the loop, one at a time
	for i < len(data) {
		c := data[i]
		switch {
		case c == '"':
			return i + 1, nil
		case c == '\\':
			if i+1 >= len(data) {
				return 0, ErrIncomplete
			}
			switch data[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				for k := 2; k < 6; k++ {
					if i+k >= len(data) {
						return 0, ErrIncomplete
					}
					if !isHex(data[i+k]) {
						return 0, syntaxErr(i+k, "invalid \\u escape")
					}
				}
				i += 6
			default:
				return 0, syntaxErr(i+1, "invalid escape")
			}
		case c < 0x20:
			return 0, syntaxErr(i, "control character in a string")
		default:
			i++
		}
	}
	return 0, ErrIncomplete
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// scanNumber returns the length of the number at the start of data.
func scanNumber(data []byte) (int, error) {
	i := 0
	if data[i] == '-' {
		i++
	}
	digits := func(what string) error {
		start := i
		for i < len(data) && data[i] >= '0' && data[i] <= '9' {
			i++
		}
		if i >= len(data) {
			return ErrIncomplete
		}
		if i == start {
			return syntaxErr(i, "a number needs digits "+what)
		}
		return nil
	}
	if i >= len(data) {
		return 0, ErrIncomplete
	}
	if data[i] == '0' {
		i++
	} else if err := digits("first"); err != nil {
		return 0, err
	}
	if i >= len(data) {
		return 0, ErrIncomplete
	}
	if data[i] == '.' {
		i++
		if err := digits("after '.'"); err != nil {
			return 0, err
		}
	}
	if data[i] == 'e' || data[i] == 'E' {
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		if err := digits("in the exponent"); err != nil {
			return 0, err
		}
	}
	return i, nil
}

func syntaxErr(at int, msg string) error { return &SyntaxError{Offset: at, Msg: msg} }

// offset moves a SyntaxError found in a part of the data to the whole's
// offsets.
func offset(err error, by int) error {
	var se *SyntaxError
	if errors.As(err, &se) {
		return &SyntaxError{Offset: se.Offset + by, Msg: se.Msg}
	}
	return err
}

// Members calls fn with each member of the JSON object that data holds
// (whitespace around it allowed, nothing else): its name as sent, quotes
// and escapes included, and its value's bytes. Every value is checked by
// ScanValue, so a nil error means data is one syntactically valid object,
// read once, nothing built. fn's error stops the walk and is returned.
func Members(data []byte, fn func(name, value []byte) error) error {
	end, err := Object(data, 0, func(name []byte, at int) (int, error) {
		n, err := ScanValue(data[at:])
		if err != nil {
			return 0, offset(err, at)
		}
		return at + n, fn(name, data[at:at+n])
	})
	if err != nil {
		return incomplete(err)
	}
	return trailing(data, end)
}

// Elements is Members for the JSON array that data holds: fn gets each
// element's bytes and its index.
func Elements(data []byte, fn func(i int, value []byte) error) error {
	end, err := Array(data, 0, func(k, at int) (int, error) {
		n, err := ScanValue(data[at:])
		if err != nil {
			return 0, offset(err, at)
		}
		return at + n, fn(k, data[at:at+n])
	})
	if err != nil {
		return incomplete(err)
	}
	return trailing(data, end)
}

// Object walks the JSON object that starts at data[i] (after optional
// whitespace), for walks that go into some values: fn gets each member's
// name as sent and the index where its value starts, reads the value
// itself (ScanValue, or Object and Array for a value it walks into) and
// returns the index just past it. Object checks the syntax between the
// values and returns the index just past the closing brace.
func Object(data []byte, i int, fn func(name []byte, at int) (int, error)) (int, error) {
	i = skipSpace(data, i)
	if i >= len(data) || data[i] != '{' {
		return 0, syntaxErr(i, "not a JSON object")
	}
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == '}' {
		return i + 1, nil
	}
	for {
		if i >= len(data) || data[i] != '"' {
			return 0, syntaxErr(i, "a member name must be a string")
		}
		n, err := scanString(data[i:])
		if err != nil {
			return 0, offset(err, i)
		}
		name := data[i : i+n]
		i = skipSpace(data, i+n)
		if i >= len(data) || data[i] != ':' {
			return 0, syntaxErr(i, "a member name must be followed by ':'")
		}
		if i, err = fn(name, skipSpace(data, i+1)); err != nil {
			return 0, err
		}
		i = skipSpace(data, i)
		switch {
		case i < len(data) && data[i] == ',':
			i = skipSpace(data, i+1)
		case i < len(data) && data[i] == '}':
			return i + 1, nil
		default:
			return 0, syntaxErr(i, "a member must be followed by ',' or '}'")
		}
	}
}

// Array is Object for the JSON array that starts at data[i]: fn gets each
// element's index in the array and where it starts.
func Array(data []byte, i int, fn func(k, at int) (int, error)) (int, error) {
	i = skipSpace(data, i)
	if i >= len(data) || data[i] != '[' {
		return 0, syntaxErr(i, "not a JSON array")
	}
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == ']' {
		return i + 1, nil
	}
	for k := 0; ; k++ {
		var err error
		if i, err = fn(k, i); err != nil {
			return 0, err
		}
		i = skipSpace(data, i)
		switch {
		case i < len(data) && data[i] == ',':
			i = skipSpace(data, i+1)
		case i < len(data) && data[i] == ']':
			return i + 1, nil
		default:
			return 0, syntaxErr(i, "an element must be followed by ',' or ']'")
		}
	}
}

// trailing refuses anything but whitespace after the value ending at i.
func trailing(data []byte, i int) error {
	if i = skipSpace(data, i); i < len(data) {
		return syntaxErr(i, "data after the JSON value")
	}
	return nil
}

// incomplete turns ErrIncomplete into a syntax error: Members and
// Elements have the whole document.
func incomplete(err error) error {
	if errors.Is(err, ErrIncomplete) {
		return &SyntaxError{Offset: -1, Msg: "unexpected end of JSON"}
	}
	return err
}
