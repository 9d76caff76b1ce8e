package audit

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"
	"go.uber.org/zap"
)

// Defaults for Options.
const (
	DefaultFlushInterval = time.Second
	DefaultMaxPerRecord  = 10000
	DefaultRetention     = 365 * 24 * time.Hour
	DefaultQueueSize     = 10000
)

// ErrInvalidRecordID is wrapped by the errors of Bundle and DeleteRecord
// for a record id that cannot be in the log: empty, longer than 255 bytes,
// or holding a NUL byte.
var ErrInvalidRecordID = errors.New("invalid record id")

// dropWarningInterval is how often, at most, a full queue is logged.
const dropWarningInterval = time.Minute

// Options configure a Log. Zero values mean the defaults.
type Options struct {
	// Logger receives warnings (dropped events) and write errors; nil
	// means zap.NewNop().
	Logger *zap.Logger
	// Now returns the current time; nil means time.Now. Tests move it
	// instead of sleeping.
	Now func() time.Time
	// FlushInterval is the least time between two batches Run writes;
	// default 1s.
	FlushInterval time.Duration
	// MaxPerRecord is how many events a record keeps; the oldest go
	// first. Default 10000.
	MaxPerRecord int
	// Retention is how long an event is kept; default 365 days.
	Retention time.Duration
	// QueueSize is how many events wait to be written; Record drops
	// events beyond it. Default 10000.
	QueueSize int
}

// Log is the access log of every record. Record is safe for concurrent
// use, and so are the other methods. The database stays the caller's: Log
// never closes it.
type Log struct {
	store         Store
	logger        *zap.Logger
	now           func() time.Time
	flushInterval time.Duration
	maxPerRecord  uint64
	retention     time.Duration

	queue   chan Event
	dropped atomic.Uint64

	warnMu   sync.Mutex
	lastWarn time.Time

	// Test hooks: tick replaces Run's ticker; written learns each batch's
	// size after it is committed.
	tick    <-chan time.Time
	written func(n int)
}

// New returns a Log on db (a BoltStore), creating its buckets if needed.
// db must be open for writing. Call Run to have queued events written.
func New(db *bbolt.DB, opts Options) (*Log, error) {
	store, err := NewBoltStore(db)
	if err != nil {
		return nil, err
	}
	return NewWithStore(store, opts)
}

// NewWithStore returns a Log on any Store.
func NewWithStore(store Store, opts Options) (*Log, error) {
	if store == nil {
		return nil, errors.New("audit: nil store")
	}
	if opts.FlushInterval < 0 || opts.MaxPerRecord < 0 || opts.Retention < 0 || opts.QueueSize < 0 {
		return nil, errors.New("audit: negative option")
	}
	l := &Log{
		store:         store,
		logger:        opts.Logger,
		now:           opts.Now,
		flushInterval: opts.FlushInterval,
		maxPerRecord:  uint64(opts.MaxPerRecord),
		retention:     opts.Retention,
	}
	if l.logger == nil {
		l.logger = zap.NewNop()
	}
	if l.now == nil {
		l.now = time.Now
	}
	if l.flushInterval == 0 {
		l.flushInterval = DefaultFlushInterval
	}
	if l.maxPerRecord == 0 {
		l.maxPerRecord = DefaultMaxPerRecord
	}
	if l.retention == 0 {
		l.retention = DefaultRetention
	}
	if opts.QueueSize == 0 {
		opts.QueueSize = DefaultQueueSize
	}
	l.queue = make(chan Event, opts.QueueSize)
	return l, nil
}

// Record queues e to be written. It never blocks: when the queue is full,
// or e has no usable RecordID, the event is dropped, counted (Dropped) and
// a warning is logged at most once a minute.
func (l *Log) Record(e Event) {
	if !validRecordID(e.RecordID) {
		l.drop("event without a valid record id")
		return
	}
	select {
	case l.queue <- normalize(e, l.now()):
	default:
		l.drop("audit queue full")
	}
}

// Dropped returns how many events were lost since New: dropped by Record
// or lost in a failed write.
func (l *Log) Dropped() uint64 { return l.dropped.Load() }

// drop counts one lost event and warns, rate-limited.
func (l *Log) drop(why string) {
	total := l.dropped.Add(1)
	now := l.now()
	l.warnMu.Lock()
	warn := l.lastWarn.IsZero() || now.Sub(l.lastWarn) >= dropWarningInterval
	if warn {
		l.lastWarn = now
	}
	l.warnMu.Unlock()
	if warn {
		l.logger.Warn("dropping audit events", zap.String("reason", why), zap.Uint64("dropped_total", total))
	}
}
