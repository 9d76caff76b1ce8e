package dopu

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// SignatureHeader carries a webhook's signature:
//
//	X-PFR-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
const SignatureHeader = "X-PFR-Signature"

// IdempotencyKeyHeader carries the drop-off's id: the same on every
// delivery of its alert, whichever node sends it, so a receiver that
// remembers the keys it has handled can ignore a repeat (a node that died
// after the receiver answered but before it recorded the delivery, or a
// delivery slower than the lease).
const IdempotencyKeyHeader = "Idempotency-Key"

// WebhookTarget is where a record's alerts go: URL and HMAC secret, and
// the record's slug for the payload.
type WebhookTarget struct {
	URL, Secret, Slug string
}

// AlertPayload is the JSON body of a webhook: who the drop-off is for,
// when it came and what it holds in counts, never clinical content.
type AlertPayload struct {
	Record   string       `json:"record"`
	Slug     string       `json:"slug,omitempty"`
	DropOff  string       `json:"dropoff"`
	Received time.Time    `json:"received"`
	Expires  time.Time    `json:"expires"`
	Summary  AlertSummary `json:"summary"`
}

// AlertSummary is the summary in an AlertPayload.
type AlertSummary struct {
	BundleType     string         `json:"bundleType"`
	ResourceCounts map[string]int `json:"resourceCounts"`
	Size           int64          `json:"size"`
	Sender         Sender         `json:"sender"`
}

// Sign returns the SignatureHeader value for body sent at t.
func Sign(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(signature(secret, ts, body))
}

func signature(secret, ts string, body []byte) []byte {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return mac.Sum(nil)
}

// Errors of VerifySignature.
var (
	ErrSignatureMissing = errors.New("webhook signature missing or malformed")
	ErrSignatureInvalid = errors.New("webhook signature does not match")
	ErrSignatureExpired = errors.New("webhook signature timestamp outside the tolerance")
)

// VerifySignature checks a SignatureHeader value for body as a receiver
// should: some v1 value must be the HMAC of "<t>.<body>" (compared in
// constant time), and t within tolerance of now, which stops replays of
// old deliveries. Several v1 values are allowed (a secret being rotated).
func VerifySignature(header string, body []byte, secret string, now time.Time, tolerance time.Duration) error {
	var ts string
	var candidates [][]byte
	for _, part := range strings.Split(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch k {
		case "t":
			ts = v
		case "v1":
			if sig, err := hex.DecodeString(v); err == nil {
				candidates = append(candidates, sig)
			}
		}
	}
	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(candidates) == 0 {
		return ErrSignatureMissing
	}
	want := signature(secret, ts, body)
	matched := false
	for _, c := range candidates {
		if hmac.Equal(c, want) {
			matched = true
		}
	}
	if !matched {
		return ErrSignatureInvalid
	}
	if age := now.Sub(time.Unix(unix, 0)); age > tolerance || age < -tolerance {
		return fmt.Errorf("%w: signed %s ago", ErrSignatureExpired, age.Round(time.Second))
	}
	return nil
}
