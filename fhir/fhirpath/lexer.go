package fhirpath

import (
	"fmt"
	"strings"
	"unicode"
)

// tokenKind classifies a lexical token.
type tokenKind int

const (
	tokEOF tokenKind = iota
	tokIdent
	tokString
	tokNumber
	tokEnv   // %name
	tokDelim // one of . | ( ) [ ] , = != < <= > >=
)

// token is one lexical token with its byte offset for error messages.
type token struct {
	kind tokenKind
	text string
	pos  int
}

// lex splits src into tokens.
func lex(src string) ([]token, error) {
	var toks []token
	i := 0
	for i < len(src) {
		c := src[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '/' && strings.HasPrefix(src[i:], "//"):
			for i < len(src) && src[i] != '\n' {
				i++
			}
		case c == '\'':
			s, n, err := lexString(src[i:])
			if err != nil {
				return nil, fmt.Errorf("at offset %d: %w", i, err)
			}
			toks = append(toks, token{tokString, s, i})
			i += n
		case c == '`':
			end := strings.IndexByte(src[i+1:], '`')
			if end < 0 {
				return nil, fmt.Errorf("at offset %d: unterminated delimited identifier", i)
			}
			toks = append(toks, token{tokIdent, src[i+1 : i+1+end], i})
			i += end + 2
		case c == '%':
			j := i + 1
			for j < len(src) && isIdentByte(src[j]) {
				j++
			}
			if j == i+1 {
				return nil, fmt.Errorf("at offset %d: %% without a name", i)
			}
			toks = append(toks, token{tokEnv, src[i+1 : j], i})
			i = j
		case c >= '0' && c <= '9':
			j := i
			for j < len(src) && (src[j] >= '0' && src[j] <= '9') {
				j++
			}
			if j+1 < len(src) && src[j] == '.' && src[j+1] >= '0' && src[j+1] <= '9' {
				j++
				for j < len(src) && (src[j] >= '0' && src[j] <= '9') {
					j++
				}
			}
			toks = append(toks, token{tokNumber, src[i:j], i})
			i = j
		case isIdentByte(c) || c == '$':
			j := i + 1
			for j < len(src) && isIdentByte(src[j]) {
				j++
			}
			toks = append(toks, token{tokIdent, src[i:j], i})
			i = j
		default:
			two := ""
			if i+1 < len(src) {
				two = src[i : i+2]
			}
			switch {
			case two == "!=" || two == "<=" || two == ">=":
				toks = append(toks, token{tokDelim, two, i})
				i += 2
			case strings.IndexByte(".|()[],=<>", c) >= 0:
				toks = append(toks, token{tokDelim, string(c), i})
				i++
			default:
				return nil, fmt.Errorf("at offset %d: unexpected character %q", i, c)
			}
		}
	}
	return append(toks, token{tokEOF, "", len(src)}), nil
}

func isIdentByte(c byte) bool {
	return c == '_' || c < 0x80 && (unicode.IsLetter(rune(c)) || unicode.IsDigit(rune(c)))
}

// lexString reads a single-quoted string literal at the start of s and
// returns its value and the number of bytes consumed.
func lexString(s string) (string, int, error) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\'':
			return b.String(), i + 1, nil
		case '\\':
			i++
			if i >= len(s) {
				return "", 0, fmt.Errorf("unterminated string literal")
			}
			switch s[i] {
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			case 'r':
				b.WriteByte('\r')
			case 'f':
				b.WriteByte('\f')
			default: // \' \" \` \\ \/ stand for themselves
				b.WriteByte(s[i])
			}
		default:
			b.WriteByte(s[i])
		}
	}
	return "", 0, fmt.Errorf("unterminated string literal")
}
