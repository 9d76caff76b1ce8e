package fhirjson

import (
	"fmt"
)

// NameVisitor's Name is called by ScanValueNames with every member name
// of the value, as sent (quotes and escapes included), the nesting depth
// of the object that holds it (1 for the members of the outermost object,
// arrays counted as levels too) and the index in data where the member's
// value starts. It is an interface, not a func, so that a type's method is
// called directly (a method value is called through a wrapper: two calls
// for every member name).
type NameVisitor interface {
	Name(depth int, name []byte, at int)
}

// NameSieve is a NameVisitor that hears only of some names: every name at
// a depth up to the depth Sieve returns, and deeper names whose length
// (quotes included) is below 64 and a set bit of the lengths it returns.
// The scanners leave the other names out where they find them, without a
// call: a filter that looks for "reference" in a search page hears of a
// name in five, not of all.
type NameSieve interface {
	NameVisitor
	Sieve() (depth int, lengths uint64)
}

// sieve returns what fn hears of (NameSieve): every name up to depth,
// and deeper names whose lengths are bits of lengths; nothing for a nil
// fn, every name for a NameVisitor that is no NameSieve.
func sieve(fn NameVisitor) (depth int, lengths uint64) {
	switch s := fn.(type) {
	case nil:
		return -1, 0
	case NameSieve:
		return s.Sieve()
	}
	return MaxScanDepth, 0
}

// hears reports whether a visitor with the sieve depth, lengths hears of
// a name of length n at depth d.
func hears(d, n, depth int, lengths uint64) bool {
	return d <= depth || uint(n) < 64 && lengths>>uint(n)&1 != 0
}

// NameFunc is a func as a NameVisitor.
type NameFunc func(depth int, name []byte, at int)

// Name calls fn.
func (fn NameFunc) Name(depth int, name []byte, at int) { fn(depth, name, at) }

// ScanValueNames is ScanValue that also tells fn (unless nil) of every
// member name on the way (a NameSieve: of those it asks for), in the same
// single pass: what a filter needs to
// know of a value (which members it has, and where their values start) is
// learnt while its end is found, instead of in another pass over it. Its
// contract is ScanValue's (the length, ErrIncomplete, *SyntaxError; the
// same syntax checks): ScanValue is ScanValueNames without fn. fn may be
// called for members of a value that then turns out to be incomplete or
// invalid; only a nil error says the calls describe a whole, valid value.
// The value's bytes from at on may be incomplete when fn is called.
func ScanValueNames(data []byte, fn NameVisitor) (int, error) {
	if haveBlocks && len(data) >= blocksFrom {
		if i := skipSpace(data, 0); i < len(data) && (data[i] == '{' || data[i] == '[') {
			if n, ok := scanBlocks(data, fn); ok {
				return n, nil
			}
		}
	}
	return scanBytes(data, fn)
}

// blocksFrom: ScanValueNames walks blocks (scanBlocks) when data holds at
// least this many bytes; a shorter value costs less read byte by byte
// than classified.
const blocksFrom = 128

// scanBytes is ScanValueNames one byte at a time: the rule, and the whole
// of it where scanBlocks does not answer.
func scanBytes(data []byte, fn NameVisitor) (int, error) {
	// A state machine whose states are the labels value, after and key
	// (a jump, not a state variable tested at every token: this loop is
	// the response filter's whole cost per byte).
	depth, lengths := sieve(fn)
	var small [64]byte
	stack := small[:0] // '{' or '[' of each open container
	i := 0
	var c byte
value: // a value is expected
	i = skipSpace(data, i)
	if i >= len(data) {
		return 0, ErrIncomplete
	}
	switch c = data[i]; {
	case c == '"':
		if j := quoteOrStop(data, i); j < len(data) && data[j] == '"' {
			i = j + 1
			break
		}
		n, err := scanString(data[i:])
		if err != nil {
			return 0, offset(err, i)
		}
		i += n
	case c == '{' || c == '[':
		if len(stack) >= MaxScanDepth {
			return 0, syntaxErr(i, "nested too deeply")
		}
		stack = append(stack, c)
		i = skipSpace(data, i+1)
		if i >= len(data) {
			return 0, ErrIncomplete
		}
		switch {
		case c == '{' && data[i] == '}', c == '[' && data[i] == ']':
			i++
			stack = stack[:len(stack)-1]
		case c == '{':
			goto key
		default:
			goto value
		}
	default:
		n, err := scanScalar(data[i:])
		if err != nil {
			return 0, offset(err, i)
		}
		i += n
	}
after: // a value ended: ',' or a closing bracket, or the end
	if len(stack) == 0 {
		return i, nil
	}
	i = skipSpace(data, i)
	if i >= len(data) {
		return 0, ErrIncomplete
	}
	switch c, top := data[i], stack[len(stack)-1]; {
	case c == ',':
		i++
		if top == '[' {
			goto value
		}
	case c == '}' && top == '{', c == ']' && top == '[':
		i++
		stack = stack[:len(stack)-1]
		goto after
	default:
		return 0, syntaxErr(i, fmt.Sprintf("invalid character %q after a value", rune(c)))
	}
key: // a member name is expected
	i = skipSpace(data, i)
	if i >= len(data) {
		return 0, ErrIncomplete
	}
	if data[i] != '"' {
		return 0, syntaxErr(i, "a member name must be a string")
	}
	{
		j := quoteOrStop(data, i)
		if j < len(data) && data[j] == '"' {
			j++
		} else {
			n, err := scanString(data[i:])
			if err != nil {
				return 0, offset(err, i)
			}
			j = i + n
		}
		name := i // data[name:j]
		if i = j; i >= len(data) || data[i] != ':' {
			if i = skipSpace(data, i); i >= len(data) {
				return 0, ErrIncomplete
			}
			if data[i] != ':' {
				return 0, syntaxErr(i, "a member name must be followed by ':'")
			}
		}
		i = skipSpace(data, i+1)
		if hears(len(stack), j-name, depth, lengths) {
			fn.Name(len(stack), data[name:j], i)
		}
		// Compact JSON's commonest member, a string followed by the next
		// member's name ("code":"x","…), goes from name to name here,
		// without the turn through the states value and after (the open
		// container is this object).
		if i < len(data) && data[i] == '"' {
			if k := quoteOrStop(data, i); k < len(data) && data[k] == '"' {
				if i = k + 1; i < len(data) && data[i] == ',' {
					i++
					goto key
				}
				goto after
			}
		}
	}
	goto value
}

// scanScalar returns the length of the number or literal (true, false,
// null) at the start of data.
func scanScalar(data []byte) (int, error) {
	c := data[0]
	switch {
	case c == '-' || c >= '0' && c <= '9':
		return scanNumber(data)
	case c == 't' || c == 'f' || c == 'n':
		word := "null"
		if c == 't' {
			word = "true"
		} else if c == 'f' {
			word = "false"
		}
		for k := 0; k < len(word); k++ {
			if k >= len(data) {
				return 0, ErrIncomplete
			}
			if data[k] != word[k] {
				return 0, syntaxErr(k, "invalid literal, want "+word)
			}
		}
		return len(word), nil
	}
	return 0, syntaxErr(0, fmt.Sprintf("invalid character %q where a value belongs", rune(c)))
}
