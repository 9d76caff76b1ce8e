package fhirjson

import (
	"math/bits"
)

// The block scanner: JSON read 64 bytes at a time into bitmasks (bit k of
// a mask stands for byte k of the block), from which a walk goes token to
// token instead of byte to byte — the design of simdjson's two stages,
// with its first stage done one block at a time, as the walk needs it (a
// value is scanned at the start of data that goes on past it: a stream,
// the rest of a Bundle). The byte loop (scanBytes) remains the rule: the
// walk answers only for values it finds whole and valid, and hands every
// other case back to the loop, which gives the answer and the error.

// masks are a block's bytes by class (classifyGo).
type masks struct {
	quote, backslash, op, space, control uint64
}

// blockState is what blockTokens carries from block to block, and what it
// tells of the block it classified.
type blockState struct {
	inString  uint64 // all ones: the block before ended inside a string
	escaped   uint64 // 1: the next block's first byte is escaped
	otherLast uint64 // 1: the block before ended with an other byte
	backslash uint64 // the block's backslashes
	control   uint64 // the block's control characters inside strings
}

// blockTokensGo returns the tokens of the 64-byte block b (blocks'
// doc) and updates st: the rule blockTokens, its assembly, must follow.
func blockTokensGo(b *[64]byte, st *blockState) uint64 {
	var m masks
	classifyGo(b, &m)
	quote := m.quote
	st.backslash = m.backslash
	if m.backslash|st.escaped != 0 {
		quote &^= escapedBits(m.backslash, &st.escaped)
	}
	in := prefixXor(quote) ^ st.inString
	st.inString = uint64(int64(in) >> 63)
	st.control = m.control & in
	other := ^(m.op | m.space | quote) &^ in
	starts := other &^ (other<<1 | st.otherLast)
	st.otherLast = other >> 63
	return m.op&^in | quote | starts
}

// classifyGo sorts a block's bytes into masks one byte at a time (the
// assembly compares 32 at a time).
//
// op flags ',', ':', '[', ']', '{', '}' and also 0x0c and 0x1a (bytes
// that equal an op's with bit 5 set, as the vector lookup compares them):
// both are control characters, invalid wherever they are, and the walk
// compares the byte it finds at a token with the ones it expects.
func classifyGo(b *[64]byte, m *masks) {
	*m = masks{}
	for k, c := range b {
		bit := uint64(1) << k
		switch c {
		case '"':
			m.quote |= bit
		case '\\':
			m.backslash |= bit
		case ' ', '\t', '\n', '\r':
			m.space |= bit
		}
		switch c | 0x20 {
		case ',', ':', '{', '}':
			m.op |= bit
		}
		if c < 0x20 {
			m.control |= bit
		}
	}
}

// prefixXor returns x with bit k set where an odd number of x's bits 0…k
// are set: the bytes from an opening quote up to (not with) its closing
// one, when x holds the quotes.
func prefixXor(x uint64) uint64 {
	x ^= x << 1
	x ^= x << 2
	x ^= x << 4
	x ^= x << 8
	x ^= x << 16
	x ^= x << 32
	return x
}

const evenBits = 0x5555555555555555

// escapedBits returns the bytes of a block that a backslash escapes: the
// byte after each odd-length run of backslashes. *carry says whether the
// block's first byte is escaped (by a run that ended the block before)
// and is set for the next block. (simdjson's find_escaped: a run that
// starts on an odd bit is carried by addition to its end, which flips the
// parity the even bits assume.)
func escapedBits(backslash uint64, carry *uint64) uint64 {
	backslash &^= *carry // an escaped backslash starts no run
	follows := backslash<<1 | *carry
	oddStarts := backslash &^ evenBits &^ follows
	sum, overflow := bits.Add64(oddStarts, backslash, 0)
	*carry = overflow
	return (evenBits ^ sum<<1) & follows
}

// blocks hands out a value's tokens in order: each quote of a string
// (opening and closing), each ',', ':', '[', ']', '{', '}' outside
// strings, and the first byte of each run of other bytes outside strings
// (numbers, literals, and anything invalid). Every byte outside strings
// that is not whitespace is a token or follows one in its run, so a walk
// that checks every token and every run has checked the whole value.
type blocks struct {
	data      []byte
	next      int // the next block to classify
	st        blockState
	backslash int // the last backslash classified, or -1
	control   int // the first control character classified inside a string, or -1
	padded    [64]byte
}

func (b *blocks) init(data []byte) {
	b.data, b.backslash, b.control = data, -1, -1
}

// refill classifies blocks until one has tokens and returns them with
// the block's index; no tokens when data ends first. (The walk holds the
// tokens of the block it is in, so that they stay in a register.)
func (b *blocks) refill() (tok uint64, base int) {
	for b.next < len(b.data) {
		if tok, base = b.classify(); tok != 0 {
			return tok, base
		}
	}
	return 0, 0
}

// classify classifies the next block: its tokens and its index.
func (b *blocks) classify() (tok uint64, at int) {
	at = b.next
	if at <= len(b.data)-64 {
		tok = blockTokens(&b.data[at], &b.st)
	} else {
		// The last bytes, with spaces after them: no token, no string.
		n := copy(b.padded[:], b.data[at:])
		for k := n; k < len(b.padded); k++ {
			b.padded[k] = ' '
		}
		tok = blockTokens(&b.padded[0], &b.st)
	}
	if b.st.backslash != 0 {
		b.backslash = at + 63 - bits.LeadingZeros64(b.st.backslash)
	}
	if b.st.control != 0 && b.control < 0 {
		b.control = at + bits.TrailingZeros64(b.st.control)
	}
	b.next = at + 64
	return tok, at
}

// escapesOK: scanString finds the string at data[i] valid, ending at j.
func (b *blocks) escapesOK(i, j int) bool {
	n, err := scanString(b.data[i:])
	return err == nil && n == j-i+1
}

// isOther: c neither whitespace, nor structural, nor a quote (the byte
// after a number or literal must not be one, or the run goes on).
func isOther(c byte) bool {
	switch c {
	case ' ', '\t', '\n', '\r', ',', ':', '[', ']', '{', '}', '"':
		return false
	}
	return true
}

// scanBlocks is scanBytes for an object or array, walking from token to
// token: the same length and the same calls to fn when the value is whole
// and valid (ok); !ok when it is not, or when it might not be, and then
// the byte loop is to give the answer (fn may have been called).
//
// Each step to the next token is written out where it is taken (two
// lines: the next block's tokens when the block's are used up, then the
// lowest), so that the block's tokens and base stay in registers. A
// method for it is not inlined (the call to refill in it costs more than
// the inliner allows), and called it makes the walk slower than the byte
// loop.
func scanBlocks(data []byte, fn NameVisitor) (n int, ok bool) {
	depth, lengths := sieve(fn)
	var b blocks
	b.init(data)
	var small [64]byte
	stack := small[:0] // '{' or '[' of each open container
	end := 0           // where the last value read ends
	var tok uint64     // the tokens of the block at base not yet taken
	base := 0
	var i int
	if tok, base = b.refill(); tok == 0 {
		return 0, false
	}
	i, tok = base+bits.TrailingZeros64(tok), tok&(tok-1)
value: // i is the token that starts a value
	switch c := data[i]; c {
	case '"':
		if tok == 0 {
			if tok, base = b.refill(); tok == 0 {
				return 0, false
			}
		}
		j := base + bits.TrailingZeros64(tok)
		tok &= tok - 1
		if b.backslash >= i && !b.escapesOK(i, j) {
			return 0, false
		}
		end = j + 1
	case '{', '[':
		if len(stack) >= MaxScanDepth {
			return 0, false
		}
		stack = append(stack, c)
		if tok == 0 {
			if tok, base = b.refill(); tok == 0 {
				return 0, false
			}
		}
		i, tok = base+bits.TrailingZeros64(tok), tok&(tok-1)
		switch {
		case data[i] == c+2: // '{'+2 is '}', '['+2 is ']'
			stack = stack[:len(stack)-1]
			end = i + 1
		case c == '{':
			goto key
		default:
			goto value
		}
	case ',', ':', ']', '}':
		return 0, false
	default:
		k, err := scanScalar(data[i:])
		if err != nil {
			return 0, false
		}
		if end = i + k; end < len(data) && isOther(data[end]) {
			return 0, false
		}
	}
after: // a value ended at end: ',' or a closing bracket, or the end
	if len(stack) == 0 {
		if b.control >= 0 && b.control < end {
			return 0, false
		}
		return end, true
	}
	if tok == 0 {
		if tok, base = b.refill(); tok == 0 {
			return 0, false
		}
	}
	i, tok = base+bits.TrailingZeros64(tok), tok&(tok-1)
	switch c, top := data[i], stack[len(stack)-1]; {
	case c == ',':
		if tok == 0 {
			if tok, base = b.refill(); tok == 0 {
				return 0, false
			}
		}
		i, tok = base+bits.TrailingZeros64(tok), tok&(tok-1)
		if top == '[' {
			goto value
		}
	case c == top+2:
		stack = stack[:len(stack)-1]
		end = i + 1
		goto after
	default:
		return 0, false
	}
key: // i is the token that starts a member name
	if data[i] != '"' {
		return 0, false
	}
	{
		// The name's closing quote, the colon and the value's first
		// token: three tokens, in one block or more.
		var j, k int
		if tok == 0 {
			if tok, base = b.refill(); tok == 0 {
				return 0, false
			}
		}
		j, tok = base+bits.TrailingZeros64(tok), tok&(tok-1)
		if b.backslash >= i && !b.escapesOK(i, j) {
			return 0, false
		}
		if tok == 0 {
			if tok, base = b.refill(); tok == 0 {
				return 0, false
			}
		}
		k, tok = base+bits.TrailingZeros64(tok), tok&(tok-1)
		if data[k] != ':' {
			return 0, false
		}
		if tok == 0 {
			if tok, base = b.refill(); tok == 0 {
				if hears(len(stack), j+1-i, depth, lengths) {
					fn.Name(len(stack), data[i:j+1], len(data))
				}
				return 0, false
			}
		}
		v := base + bits.TrailingZeros64(tok)
		tok &= tok - 1
		if hears(len(stack), j+1-i, depth, lengths) {
			fn.Name(len(stack), data[i:j+1], v)
		}
		i = v
		if data[v] != '"' {
			goto value
		}
		// The commonest member, a string, goes from name to name here
		// (its closing quote, then ',' and the next name, or the
		// object's end), without the turn through value and after.
		if tok == 0 {
			if tok, base = b.refill(); tok == 0 {
				return 0, false
			}
		}
		j, tok = base+bits.TrailingZeros64(tok), tok&(tok-1)
		if b.backslash >= i && !b.escapesOK(i, j) {
			return 0, false
		}
		if tok == 0 {
			if tok, base = b.refill(); tok == 0 {
				return 0, false
			}
		}
		k, tok = base+bits.TrailingZeros64(tok), tok&(tok-1)
		switch data[k] {
		case ',':
			if tok == 0 {
				if tok, base = b.refill(); tok == 0 {
					return 0, false
				}
			}
			i, tok = base+bits.TrailingZeros64(tok), tok&(tok-1)
			goto key
		case '}':
			stack = stack[:len(stack)-1]
			end = k + 1
			goto after
		}
		return 0, false
	}
}
