package dopu

import "time"

// Rate is a token bucket: PerMinute tokens are added each minute, up to
// Burst. A zero Rate takes the default; a negative PerMinute disables the
// limit.
type Rate struct {
	PerMinute float64
	Burst     int
}

// Limits bound what a drop-off may be and how many a record may hold. Zero
// fields take the defaults below.
type Limits struct {
	// MaxBytes bounds the body, both as sent and inflated. Default 20 MiB.
	MaxBytes int64
	// MaxEntries bounds Bundle.entry. Default 10 000.
	MaxEntries int
	// MaxDepth bounds the JSON nesting (objects and arrays). Default 64.
	MaxDepth int
	// TTL is how long a drop-off stays pending. Default 30 days.
	TTL time.Duration
	// Retention is how long a drop-off's summary is kept once it is no
	// longer pending (for the inbox's history, the sender's status and
	// de-duplication); then it is deleted. Default 90 days.
	Retention time.Duration
	// PendingPerRecord bounds the pending drop-offs of one record. Default 100.
	PendingPerRecord int
	// PendingBytesPerRecord bounds their total size. Default 256 MiB.
	PendingBytesPerRecord int64
	// SourceRate limits drop-offs per sender IP address (IPv6 per /64).
	// Default 30 per minute, burst 10.
	SourceRate Rate
	// RecordRate limits drop-offs per record. Default 60 per minute, burst 20.
	RecordRate Rate
	// Concurrent bounds the intakes reading and parsing a body at once,
	// so that memory stays near Concurrent × MaxBytes × a small factor
	// however many senders there are; the others wait. Default 4.
	Concurrent int
}

// Defaults.
const (
	DefaultMaxBytes              = 20 << 20
	DefaultMaxEntries            = 10000
	DefaultMaxDepth              = 64
	DefaultTTL                   = 30 * 24 * time.Hour
	DefaultRetention             = 90 * 24 * time.Hour
	DefaultPendingPerRecord      = 100
	DefaultPendingBytesPerRecord = 256 << 20
	DefaultConcurrent            = 4
)

// Default rates.
var (
	DefaultSourceRate = Rate{PerMinute: 30, Burst: 10}
	DefaultRecordRate = Rate{PerMinute: 60, Burst: 20}
)

// withDefaults returns l with zero fields set to the defaults.
func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultMaxEntries
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultMaxDepth
	}
	if l.TTL <= 0 {
		l.TTL = DefaultTTL
	}
	if l.Retention <= 0 {
		l.Retention = DefaultRetention
	}
	if l.PendingPerRecord <= 0 {
		l.PendingPerRecord = DefaultPendingPerRecord
	}
	if l.PendingBytesPerRecord <= 0 {
		l.PendingBytesPerRecord = DefaultPendingBytesPerRecord
	}
	if l.Concurrent <= 0 {
		l.Concurrent = DefaultConcurrent
	}
	if l.SourceRate == (Rate{}) {
		l.SourceRate = DefaultSourceRate
	}
	if l.RecordRate == (Rate{}) {
		l.RecordRate = DefaultRecordRate
	}
	return l
}
