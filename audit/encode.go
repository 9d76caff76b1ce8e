package audit

import (
	"encoding/json"
	"time"
	"unicode/utf8"
)

// appendStored appends e as stored (storedEvent's JSON: its short names,
// empty fields left out) to buf, without reflection: the log's writer
// encodes every event the gateway records. Strings are escaped as JSON
// requires (quote, backslash, control characters; invalid UTF-8 as
// U+FFFD, as encoding/json); json.Unmarshal into a storedEvent reads back
// exactly what json.Marshal(storedAs(e)) would have stored
// (TestAppendStoredAsMarshal). A time outside what JSON holds (years
// 0–9999) is encoding/json's error, as before.
func appendStored(buf []byte, e Event) ([]byte, error) {
	if y := e.Time.Year(); y < 0 || y > 9999 {
		data, err := json.Marshal(storedAs(e))
		return append(buf, data...), err
	}
	buf = append(buf, `{"t":"`...)
	buf = e.Time.AppendFormat(buf, time.RFC3339Nano)
	buf = append(buf, '"')
	buf = appendField(buf, "iss", e.Issuer)
	buf = appendField(buf, "sub", e.Subject)
	buf = appendField(buf, "cid", e.ClientID)
	buf = appendField(buf, "ip", e.SourceIP)
	buf = append(buf, `,"a":`...)
	buf = appendJSONString(buf, e.Action)
	buf = appendField(buf, "i", e.Interaction)
	buf = appendField(buf, "tgt", e.Target)
	if e.Status != 0 {
		buf = append(buf, `,"s":`...)
		buf = appendInt(buf, e.Status)
	}
	buf = appendField(buf, "d", e.Detail)
	return append(buf, '}'), nil
}

// appendField appends `,"name":"value"` unless value is empty (omitempty).
func appendField(buf []byte, name, value string) []byte {
	if value == "" {
		return buf
	}
	buf = append(buf, ',', '"')
	buf = append(buf, name...)
	buf = append(buf, '"', ':')
	return appendJSONString(buf, value)
}

// appendInt appends n in decimal.
func appendInt(buf []byte, n int) []byte {
	if n < 0 {
		buf = append(buf, '-')
		u := uint64(-(n + 1)) + 1 // the most negative int too
		return appendUint(buf, u)
	}
	return appendUint(buf, uint64(n))
}

func appendUint(buf []byte, u uint64) []byte {
	var d [20]byte
	i := len(d)
	for {
		i--
		d[i] = byte('0' + u%10)
		u /= 10
		if u == 0 {
			break
		}
	}
	return append(buf, d[i:]...)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string.
func appendJSONString(buf []byte, s string) []byte {
	buf = append(buf, '"')
	start := 0
	for i := 0; i < len(s); {
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
