package audit

import (
	"encoding/json"
	"time"

	"github.com/pfrgateway/caddy-pfr/fhir/fhirjson"
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
	buf = fhirjson.AppendString(buf, e.Action)
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
	return fhirjson.AppendString(buf, value)
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
