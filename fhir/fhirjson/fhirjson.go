// Package fhirjson is the door every JSON body passes before anything is
// written: a decoder that accepts only JSON that round-trips, byte for
// value, through the gateway, the stores and any FHIR client.
//
// Refused, each with the path of the offending value:
//   - invalid UTF-8 anywhere, and control characters inside strings;
//   - \u escapes that are lone surrogates (\ud800 without its pair): they
//     encode no character, and decoders replace them differently;
//   - a member name repeated in one object, however it is escaped: decoders
//     keep the first or the last, so a check and a write could see
//     different resources;
//   - numbers outside the range of an IEEE-754 double (1e999 overflows,
//     1e-999 underflows to 0), or with more than MaxDigits significant
//     digits (FHIR's decimal precision; what Java, JavaScript and Go clients
//     can all carry);
//   - nesting deeper than MaxDepth, data after the value, and every JSON
//     syntax error.
//
// Numbers decode as json.Number, so decimals keep their exact text.
package fhirjson

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// MaxDigits is the most significant digits a number may have: FHIR decimals
// carry 18 (the precision XML Schema requires of every processor, which FHIR
// adopts); more would be rounded by some reader.
const MaxDigits = 18

// MaxDepth bounds the nesting of objects and arrays. FHIR resources nest a
// few dozen levels at most, a Bundle of Bundles included.
const MaxDepth = 100

// Error is a refusal: what is wrong and where.
type Error struct {
	// Path is the FHIRPath-like location of the offending value, e.g.
	// "Observation.valueQuantity.value" or "Bundle.entry[2].resource";
	// empty for the document itself.
	Path string
	// Offset is the byte offset in the input.
	Offset int
	// Msg says what is wrong.
	Msg string
	// TooDeep: the refusal is for nesting deeper than the limit.
	TooDeep bool
}

func (e *Error) Error() string {
	if e.Path == "" {
		return e.Msg + " (at byte " + strconv.Itoa(e.Offset) + ")"
	}
	return e.Path + ": " + e.Msg
}

// Decode parses data, which must hold exactly one JSON value, and returns it
// (map[string]any, []any, string, json.Number, bool or nil). Refusals are
// *Error.
func Decode(data []byte) (any, error) {
	p := &parser{data: data, build: true}
	return p.document()
}

// DecodeObject is Decode for a body that must be a JSON object.
func DecodeObject(data []byte) (map[string]any, error) {
	v, err := Decode(data)
	if err != nil {
		return nil, err
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, &Error{Msg: "the body must be a JSON object"}
	}
	return m, nil
}

// Check validates data like Decode without building the value.
func Check(data []byte) error {
	p := &parser{data: data}
	_, err := p.document()
	return err
}

// CheckDepth is Check with nesting bounded by maxDepth instead of MaxDepth
// (when smaller): one pass for a caller with a tighter limit. A refusal
// for depth is an *Error with TooDeep set.
func CheckDepth(data []byte, maxDepth int) error {
	p := &parser{data: data, depthLimit: maxDepth}
	_, err := p.document()
	return err
}

// Step is one step of the path to a value: a member of an object (Index
// -1, Name its name with escapes decoded) or an element of an array
// (Index >= 0, Name nil).
type Step struct {
	Name  []byte
	Index int
}

// CheckVisit is CheckDepth that also shows the caller the values near the
// top, in the same pass: after each value at most visitDepth steps below
// the top-level value has been checked (a member of the top-level object
// is one step down), visit gets the path to it and where it lies,
// data[start:end] (no whitespace around it). Values come in document
// order, a container after its contents. path and its names are only
// valid during the call. A refusal is reported as by CheckDepth, after
// the values before it were visited.
func CheckVisit(data []byte, maxDepth, visitDepth int, visit func(path []Step, start, end int)) error {
	p := &parser{data: data, depthLimit: maxDepth, visit: visit, visitDepth: visitDepth}
	_, err := p.document()
	return err
}

type parser struct {
	data  []byte
	pos   int
	build bool
	path  []Step
	// root is the top-level object's resourceType once read: the head of
	// every path.
	root string
	// depthLimit, when positive and below MaxDepth, bounds the nesting.
	depthLimit int
	// visit, when set, gets each value at most visitDepth steps down
	// (CheckVisit).
	visit      func(path []Step, start, end int)
	visitDepth int
}

func (p *parser) maxDepth() int {
	if p.depthLimit > 0 && p.depthLimit < MaxDepth {
		return p.depthLimit
	}
	return MaxDepth
}

func (p *parser) tooDeep() error {
	err := p.fail("nested deeper than %d levels", p.maxDepth())
	err.(*Error).TooDeep = true
	return err
}

func (p *parser) fail(format string, args ...any) error {
	return &Error{Path: p.pathString(), Offset: p.pos, Msg: fmt.Sprintf(format, args...)}
}

func (p *parser) pathString() string {
	var b strings.Builder
	b.WriteString(p.root)
	for _, s := range p.path {
		if s.Index >= 0 {
			b.WriteString("[" + strconv.Itoa(s.Index) + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.Write(s.Name)
	}
	if b.Len() > maxPathLen {
		// A pathological nesting: keep both ends.
		full := b.String()
		return full[:maxPathLen/2] + "…" + full[len(full)-maxPathLen/2:]
	}
	return b.String()
}

// maxPathLen bounds the length of a path in a refusal.
const maxPathLen = 200

func (p *parser) document() (any, error) {
	p.skipSpace()
	v, err := p.value(0)
	if err != nil {
		return nil, err
	}
	p.skipSpace()
	if p.pos < len(p.data) {
		return nil, p.fail("trailing data after the JSON value")
	}
	return v, nil
}

func (p *parser) skipSpace() { p.pos = skipSpace(p.data, p.pos) }

func (p *parser) value(depth int) (any, error) {
	if p.pos >= len(p.data) {
		return nil, p.fail("unexpected end of JSON")
	}
	switch c := p.data[p.pos]; {
	case c == '{':
		return p.object(depth + 1)
	case c == '[':
		return p.array(depth + 1)
	case c == '"' && !p.build:
		_, err := p.rawStr()
		return nil, err
	case c == '"':
		return p.str()
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	case c == 't':
		return true, p.literal("true")
	case c == 'f':
		return false, p.literal("false")
	case c == 'n':
		return nil, p.literal("null")
	default:
		return nil, p.fail("invalid character %q where a value belongs", rune(c))
	}
}

func (p *parser) literal(word string) error {
	if !strings.HasPrefix(string(p.data[p.pos:min(p.pos+len(word), len(p.data))]), word) {
		return p.fail("invalid literal, want %s", word)
	}
	p.pos += len(word)
	return nil
}

func (p *parser) object(depth int) (any, error) {
	if depth > p.maxDepth() {
		return nil, p.tooDeep()
	}
	p.pos++ // '{'
	var m map[string]any
	if p.build {
		m = map[string]any{}
	}
	// The names seen, to refuse one given twice: a few in a small array
	// (most objects), a map past that.
	var small [16][]byte
	names := small[:0]
	var seen map[string]struct{}
	p.skipSpace()
	if p.pos < len(p.data) && p.data[p.pos] == '}' {
		p.pos++
		return m, nil
	}
	for {
		p.skipSpace()
		if p.pos >= len(p.data) || p.data[p.pos] != '"' {
			return nil, p.fail("expected a member name")
		}
		name, err := p.rawStr()
		if err != nil {
			return nil, err
		}
		p.path = append(p.path, Step{Name: name, Index: -1})
		dup := false
		if seen == nil {
			for _, n := range names {
				if bytes.Equal(n, name) {
					dup = true
					break
				}
			}
			if names = append(names, name); len(names) == len(small) {
				seen = make(map[string]struct{}, 2*len(small))
				for _, n := range names {
					seen[string(n)] = struct{}{}
				}
			}
		} else if _, dup = seen[string(name)]; !dup {
			seen[string(name)] = struct{}{}
		}
		if dup {
			return nil, p.fail("member %q appears twice in one object", name)
		}
		var key string
		if p.build || depth == 1 && string(name) == "resourceType" {
			key = string(name)
		}
		p.skipSpace()
		if p.pos >= len(p.data) || p.data[p.pos] != ':' {
			return nil, p.fail("expected ':' after a member name")
		}
		p.pos++
		p.skipSpace()
		start := p.pos
		var v any
		if key == "resourceType" && depth == 1 && p.pos < len(p.data) && p.data[p.pos] == '"' {
			v, err = p.str() // the root of every path, so a string even in Check
		} else {
			v, err = p.value(depth)
		}
		if err != nil {
			return nil, err
		}
		if p.visit != nil && len(p.path) <= p.visitDepth {
			p.visit(p.path, start, p.pos)
		}
		if depth == 1 && key == "resourceType" && p.root == "" {
			if s, ok := v.(string); ok && validTypeName(s) {
				p.root = s
			}
		}
		if p.build {
			m[key] = v
		}
		p.path = p.path[:len(p.path)-1]
		p.skipSpace()
		if p.pos >= len(p.data) {
			return nil, p.fail("unexpected end of JSON in an object")
		}
		switch p.data[p.pos] {
		case ',':
			p.pos++
		case '}':
			p.pos++
			return m, nil
		default:
			return nil, p.fail("expected ',' or '}' in an object")
		}
	}
}

// validTypeName reports whether s can name a resource type in a path.
func validTypeName(s string) bool {
	if s == "" || len(s) > 64 || s[0] < 'A' || s[0] > 'Z' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func (p *parser) array(depth int) (any, error) {
	if depth > p.maxDepth() {
		return nil, p.tooDeep()
	}
	p.pos++ // '['
	var list []any
	if p.build {
		list = []any{}
	}
	p.skipSpace()
	if p.pos < len(p.data) && p.data[p.pos] == ']' {
		p.pos++
		return list, nil
	}
	// The path names the array's member with the index: entry[2].
	parent := len(p.path)
	for i := 0; ; i++ {
		p.path = append(p.path[:parent], Step{Index: i})
		p.skipSpace()
		start := p.pos
		v, err := p.value(depth)
		if err != nil {
			return nil, err
		}
		if p.visit != nil && len(p.path) <= p.visitDepth {
			p.visit(p.path, start, p.pos)
		}
		if p.build {
			list = append(list, v)
		}
		p.skipSpace()
		if p.pos >= len(p.data) {
			return nil, p.fail("unexpected end of JSON in an array")
		}
		switch p.data[p.pos] {
		case ',':
			p.pos++
		case ']':
			p.pos++
			p.path = p.path[:parent]
			return list, nil
		default:
			return nil, p.fail("expected ',' or ']' in an array")
		}
	}
}

// rawStr reads a string at p.pos (which is '"') and returns what it
// holds without making a string of it: the bytes between the quotes, or,
// when it has escapes, the decoded bytes.
func (p *parser) rawStr() ([]byte, error) {
	p.pos++
	start := p.pos
	p.pos = stringStop(p.data, p.pos)
	for p.pos < len(p.data) {
		c := p.data[p.pos]
		switch {
		case c == '"':
			p.pos++
			return p.data[start : p.pos-1], nil
		case c == '\\':
			s, err := p.strSlow(start)
			return []byte(s), err
		case c < 0x20:
			return nil, p.fail("control character U+%04X inside a string (escape it)", c)
		case c < utf8.RuneSelf:
			p.pos++
		default:
			r, size := utf8.DecodeRune(p.data[p.pos:])
			if r == utf8.RuneError && size <= 1 {
				return nil, p.fail("invalid UTF-8")
			}
			p.pos = stringStop(p.data, p.pos+size)
		}
	}
	return nil, p.fail("unterminated string")
}

// str reads a string at p.pos (which is '"').
func (p *parser) str() (string, error) {
	p.pos++
	start := p.pos
	p.pos = stringStop(p.data, p.pos)
	// Fast path: no escapes, ASCII or valid UTF-8, no control characters.
	for p.pos < len(p.data) {
		c := p.data[p.pos]
		switch {
		case c == '"':
			s := string(p.data[start:p.pos])
			p.pos++
			return s, nil
		case c == '\\':
			return p.strSlow(start)
		case c < 0x20:
			return "", p.fail("control character U+%04X inside a string (escape it)", c)
		case c < utf8.RuneSelf:
			p.pos++
		default:
			r, size := utf8.DecodeRune(p.data[p.pos:])
			if r == utf8.RuneError && size <= 1 {
				return "", p.fail("invalid UTF-8")
			}
			p.pos = stringStop(p.data, p.pos+size)
		}
	}
	return "", p.fail("unterminated string")
}

func (p *parser) strSlow(start int) (string, error) {
	var b strings.Builder
	b.Write(p.data[start:p.pos])
	for p.pos < len(p.data) {
		c := p.data[p.pos]
		switch {
		case c == '"':
			p.pos++
			return b.String(), nil
		case c == '\\':
			if p.pos+1 >= len(p.data) {
				return "", p.fail("unterminated escape")
			}
			e := p.data[p.pos+1]
			p.pos += 2
			switch e {
			case '"', '\\', '/':
				b.WriteByte(e)
			case 'b':
				b.WriteByte('\b')
			case 'f':
				b.WriteByte('\f')
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			case 'u':
				r, err := p.hex4()
				if err != nil {
					return "", err
				}
				switch {
				case utf16.IsSurrogate(r) && r < 0xDC00:
					// A high surrogate must be followed by a low one.
					if p.pos+1 < len(p.data) && p.data[p.pos] == '\\' && p.data[p.pos+1] == 'u' {
						p.pos += 2
						lo, err := p.hex4()
						if err != nil {
							return "", err
						}
						if lo >= 0xDC00 && lo <= 0xDFFF {
							b.WriteRune(utf16.DecodeRune(r, lo))
							continue
						}
					}
					return "", p.fail("lone surrogate \\u%04X in a string: it encodes no character", r)
				case utf16.IsSurrogate(r):
					return "", p.fail("lone surrogate \\u%04X in a string: it encodes no character", r)
				}
				b.WriteRune(r)
			default:
				return "", p.fail("invalid escape \\%c", rune(e))
			}
		case c < 0x20:
			return "", p.fail("control character U+%04X inside a string (escape it)", c)
		case c < utf8.RuneSelf:
			b.WriteByte(c)
			p.pos++
		default:
			r, size := utf8.DecodeRune(p.data[p.pos:])
			if r == utf8.RuneError && size <= 1 {
				return "", p.fail("invalid UTF-8")
			}
			b.Write(p.data[p.pos : p.pos+size])
			p.pos += size
		}
	}
	return "", p.fail("unterminated string")
}

func (p *parser) hex4() (rune, error) {
	if p.pos+4 > len(p.data) {
		return 0, p.fail("truncated \\u escape")
	}
	var r rune
	for _, c := range p.data[p.pos : p.pos+4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, p.fail("invalid \\u escape")
		}
	}
	p.pos += 4
	return r, nil
}

// exponent reports whether a number's text has an exponent.
func exponent(text []byte) bool { return bytes.ContainsAny(text, "eE") }

// number reads a number: JSON's grammar, at most MaxDigits significant
// digits, within the range of a double.
func (p *parser) number() (any, error) {
	start := p.pos
	d := p.data
	if p.pos < len(d) && d[p.pos] == '-' {
		p.pos++
	}
	digits, nonZero := 0, false
	count := func(c byte) {
		if c != '0' || nonZero {
			nonZero = true
			digits++
		}
	}
	switch {
	case p.pos < len(d) && d[p.pos] == '0':
		p.pos++
	case p.pos < len(d) && d[p.pos] >= '1' && d[p.pos] <= '9':
		for p.pos < len(d) && d[p.pos] >= '0' && d[p.pos] <= '9' {
			count(d[p.pos])
			p.pos++
		}
	default:
		return nil, p.fail("invalid number")
	}
	if p.pos < len(d) && d[p.pos] == '.' {
		p.pos++
		if p.pos >= len(d) || d[p.pos] < '0' || d[p.pos] > '9' {
			return nil, p.fail("invalid number: no digits after the decimal point")
		}
		for p.pos < len(d) && d[p.pos] >= '0' && d[p.pos] <= '9' {
			count(d[p.pos])
			p.pos++
		}
	}
	if p.pos < len(d) && (d[p.pos] == 'e' || d[p.pos] == 'E') {
		p.pos++
		if p.pos < len(d) && (d[p.pos] == '+' || d[p.pos] == '-') {
			p.pos++
		}
		if p.pos >= len(d) || d[p.pos] < '0' || d[p.pos] > '9' {
			return nil, p.fail("invalid number: no digits in the exponent")
		}
		for p.pos < len(d) && d[p.pos] >= '0' && d[p.pos] <= '9' {
			p.pos++
		}
	}
	if !p.build && digits <= 15 && !exponent(d[start:p.pos]) {
		// At most 15 digits and no exponent: a double holds it, and a
		// non-zero one stays non-zero. Nothing to check, nothing to build.
		return nil, nil
	}
	text := string(d[start:p.pos])
	if digits > MaxDigits {
		p.pos = start
		return nil, p.fail("the number %.40q has %d significant digits; FHIR allows %d", text, digits, MaxDigits)
	}
	f, err := strconv.ParseFloat(text, 64)
	if err != nil || math.IsInf(f, 0) || (f == 0 && nonZero) {
		p.pos = start
		return nil, p.fail("the number %.40q is outside the range of a double (IEEE-754)", text)
	}
	if !p.build {
		return nil, nil
	}
	return json.Number(text), nil
}
