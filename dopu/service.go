package dopu

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"go.etcd.io/bbolt"
	"go.uber.org/zap"

	"github.com/pfrgateway/caddy-pfr/egress"
	"github.com/pfrgateway/caddy-pfr/fhir"
)

// quotaRetryAfter is the Retry-After of a quota refusal: the quota frees
// only when the person acts or drop-offs expire, so there is no exact time.
const quotaRetryAfter = time.Hour

// Options configure a Service. Every field is optional.
type Options struct {
	// Now returns the current time. Default time.Now.
	Now func() time.Time
	// Logger receives delivery failures and expiry counts. Default no-op.
	Logger *zap.Logger
	// Egress is the destination policy of webhooks: checked on the URL
	// before each delivery and, through the default HTTPClient, on every
	// address dialled. Default: the zero egress.Policy (public addresses
	// over https only).
	Egress *egress.Policy
	// HTTPClient delivers webhooks. Default: Egress.Client with a 10 s
	// timeout (no redirects followed, no proxy, the policy at connect
	// time). A client given here must enforce the policy itself.
	HTTPClient *http.Client
	// MaxAttempts is how many failed deliveries make an alert dead: kept
	// for the owner to see in the inbox (alert.state "dead", with the last
	// error), never attempted again. A destination the policy refuses is
	// dead at once. Default 12 (about 8 hours with the default backoff).
	MaxAttempts int
	// Webhook returns where a record's alerts go. An empty URL means the
	// record has none; an error is retried later. Nil means no record has
	// a webhook. It is called from several goroutines at once.
	Webhook func(ctx context.Context, recordID string) (WebhookTarget, error)
	// PollInterval is how often Run looks for alerts due. Default 5 s.
	PollInterval time.Duration
	// ExpiryInterval is how often Run expires drop-offs. Default 1 min.
	ExpiryInterval time.Duration
	// RetryBase is the first retry delay of a failed delivery; it doubles
	// with each attempt up to RetryCap. Defaults 30 s and 1 h.
	RetryBase, RetryCap time.Duration
	// LeaseTTL is how long a pick-up holds its drop-off before another may
	// take over (after a crash between BeginPickup and Commit). Default 10 min.
	LeaseTTL time.Duration
	// AlertLease is how long a delivery attempt holds its alert: no other
	// node (or loop) attempts it meanwhile, and if the holder dies the
	// alert is due again when it runs out. Keep it well above the webhook
	// client's timeout. Default 2 min.
	AlertLease time.Duration
}

func (o Options) withDefaults() Options {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Egress == nil {
		o.Egress = new(egress.Policy)
	}
	if o.HTTPClient == nil {
		o.HTTPClient = o.Egress.Client(10 * time.Second)
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 12
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 5 * time.Second
	}
	if o.ExpiryInterval <= 0 {
		o.ExpiryInterval = time.Minute
	}
	if o.RetryBase <= 0 {
		o.RetryBase = 30 * time.Second
	}
	if o.RetryCap <= 0 {
		o.RetryCap = time.Hour
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 10 * time.Minute
	}
	if o.AlertLease <= 0 {
		o.AlertLease = 2 * time.Minute
	}
	return o
}

// Service is DOPU: intake, inbox, pick-up, rejection, expiry and alerts.
// It is safe for concurrent use.
type Service struct {
	store  Store
	limits Limits
	opts   Options

	sources *limiter
	records *limiter
	// parsing holds a token per intake reading or parsing a body.
	parsing chan struct{}
	// wake tells Run that a new alert is waiting.
	wake chan struct{}
	// exclusive: no other process uses the store (bbolt), so leases other
	// processes took are from dead ones.
	exclusive bool
}

// New returns a Service storing its data in db, a bbolt database shared
// with other packages (buckets "dopu/…").
func New(db *bbolt.DB, limits Limits, opts Options) (*Service, error) {
	store, err := NewBoltStore(db)
	if err != nil {
		return nil, err
	}
	svc := NewWithStore(store, limits, opts)
	// Only this process can have the bbolt file open: leases of any other
	// process are from one that died (see leaseHeld).
	svc.exclusive = true
	return svc, nil
}

// NewWithStore returns a Service on any Store.
func NewWithStore(store Store, limits Limits, opts Options) *Service {
	limits = limits.withDefaults()
	return &Service{
		store:   store,
		limits:  limits,
		opts:    opts.withDefaults(),
		sources: newLimiter(limits.SourceRate, maxBuckets),
		records: newLimiter(limits.RecordRate, maxBuckets),
		parsing: make(chan struct{}, limits.Concurrent),
		wake:    make(chan struct{}, 1),
	}
}

// Limits returns the limits in force, defaults filled in.
func (s *Service) Limits() Limits { return s.limits }

func (s *Service) now() time.Time { return s.opts.Now().UTC() }

// newID returns 128 random bits, base64url without padding.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// digest identifies a body dropped off for a record.
func digest(recordID string, body []byte) string {
	h := sha256.New()
	h.Write([]byte(recordID))
	h.Write([]byte{0})
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

func throttled(retryAfter time.Duration, format string, args ...any) error {
	secs := int64((retryAfter + time.Second - 1) / time.Second)
	return fhir.Errorf(http.StatusTooManyRequests, fhir.CodeThrottled, format, args...).
		WithHeader("Retry-After", strconv.FormatInt(max(secs, 1), 10))
}

// Intake validates a Bundle dropped off for recordID and stores it, with
// its alert, durably before returning. contentType and contentEncoding are
// the request's headers. Refusals are *fhir.Error (see the package
// documentation for each); other errors are the store's. The same body
// dropped off again for the same record returns the first receipt.
func (s *Service) Intake(ctx context.Context, recordID, contentType, contentEncoding string, body io.Reader, from Sender) (*Receipt, error) {
	if recordID == "" || strings.ContainsRune(recordID, 0) {
		return nil, fmt.Errorf("dopu: intake: invalid record id %q", recordID)
	}
	if err := checkContentType(contentType); err != nil {
		return nil, err
	}
	gzipped, err := checkEncoding(contentEncoding)
	if err != nil {
		return nil, err
	}
	// Rate limits come before reading: a flood must not cost parsing.
	now := s.now()
	if ok, wait := s.sources.allow(sourceKey(from.IP), now); !ok {
		return nil, throttled(wait, "too many drop-offs from this address; retry later")
	}
	if ok, wait := s.records.allow(recordID, now); !ok {
		return nil, throttled(wait, "too many drop-offs for this record; retry later")
	}
	from = from.truncated()
	id := newID()
	in, err := s.readAndParse(ctx, recordID, id, body, gzipped)
	if err != nil {
		return nil, err
	}
	// The store copies the body when it commits; the buffer is reused.
	defer in.release()
	data, facts := in.data, in.facts

	d := &DropOff{
		Summary: Summary{
			ID: id, RecordID: recordID, Received: now, Sender: from,
			Size: int64(len(data)), BundleType: facts.Type, ResourceCounts: facts.ResourceCounts,
			Subject: facts.Subject, Status: StatusPending, Expires: now.Add(s.limits.TTL), Changed: now,
			AboutNoOne: facts.AboutNoOne, BundleIdentifier: facts.BundleIdentifier,
		},
		Digest:            in.digest,
		IdentifiersDigest: facts.IdentifiersDigest,
	}
	var receipt *Receipt
	err = s.store.Update(ctx, func(tx Tx) error {
		prev, err := tx.ByDigest(d.Digest)
		if err == nil {
			receipt = &Receipt{ID: prev.ID, Status: effectiveStatus(prev, now), Received: prev.Received, Duplicate: true}
			return nil
		}
		if !errors.Is(err, ErrNotFound) {
			return err
		}
		count, size, err := tx.Usage(recordID)
		if err != nil {
			return err
		}
		if count+1 > s.limits.PendingPerRecord || size+d.Size > s.limits.PendingBytesPerRecord {
			return throttled(quotaRetryAfter, "this record holds too many pending drop-offs; retry later")
		}
		if err := tx.Create(d, data); err != nil {
			return err
		}
		receipt = &Receipt{ID: d.ID, Status: StatusPending, Received: now}
		return tx.PutAlert(&Alert{DropOffID: d.ID, RecordID: recordID, NextAttempt: now})
	})
	if in.staged != nil {
		// The staged file goes unless the drop-off refers to it, or may:
		// a failed commit is not known not to have reached the disk, and
		// the store removes unreferenced files when it opens.
		var fe *fhir.Error
		in.staged(err == nil && !receipt.Duplicate || err != nil && !errors.As(err, &fe))
	}
	if err != nil {
		var fe *fhir.Error
		if errors.As(err, &fe) {
			return nil, err
		}
		return nil, fmt.Errorf("dopu: storing drop-off for %s: %w", recordID, err)
	}
	if !receipt.Duplicate {
		s.notify()
	}
	return receipt, nil
}

// intakeBody is a drop-off's body read and checked.
type intakeBody struct {
	data    []byte // in a pooled buffer: call release when done with it
	release func()
	facts   *bundleFacts
	digest  string // digest(recordID, data)
	// staged, when not nil, must be called once the drop-off is stored or
	// not (see bodyStager).
	staged func(kept bool)
}

// readAndParse reads and validates a body for drop-off id of recordID, at
// most Limits.Concurrent at a time. While the body is checked, its digest
// is computed and a store that keeps large bodies apart (bodyStager)
// writes and syncs it, on the other cores.
func (s *Service) readAndParse(ctx context.Context, recordID, id string, body io.Reader, gzipped bool) (*intakeBody, error) {
	select {
	case s.parsing <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("dopu: waiting to read a drop-off: %w", ctx.Err())
	}
	defer func() { <-s.parsing }()
	data, release, err := readBody(body, gzipped, s.limits.MaxBytes)
	if err != nil {
		return nil, err
	}
	in := &intakeBody{data: data, release: release}
	var stagedErr error
	var wait sync.WaitGroup
	if st, ok := s.store.(bodyStager); ok {
		wait.Go(func() { in.staged, stagedErr = st.stageBody(id, data) })
	}
	wait.Go(func() { in.digest = digest(recordID, data) })
	in.facts, err = parseBundle(data, s.limits)
	wait.Wait()
	if err == nil {
		err = stagedErr
	}
	if err != nil {
		if in.staged != nil {
			in.staged(false)
		}
		release()
		return nil, err
	}
	return in, nil
}

// Bounds on what a drop-off keeps of its sender's words.
const (
	maxSenderField = 256
	maxUserAgent   = 512
	maxReason      = 1024
)

// truncated bounds the sender's fields: they come from request headers and
// tokens and end up in summaries and alerts.
func (s Sender) truncated() Sender {
	return Sender{
		IP: truncate(s.IP, maxSenderField), UserAgent: truncate(s.UserAgent, maxUserAgent),
		Issuer: truncate(s.Issuer, maxSenderField), Subject: truncate(s.Subject, maxSenderField),
		ClientID: truncate(s.ClientID, maxSenderField),
	}
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// notify wakes Run without blocking.
func (s *Service) notify() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// effectiveStatus is expired for a pending drop-off past its expiry that
// the expiry loop has not reached yet, unless a pick-up holds it (that
// pick-up may still complete).
func effectiveStatus(d *DropOff, now time.Time) Status {
	leased := d.Lease != "" && now.Before(d.LeaseExpires)
	if d.Status == StatusPending && !now.Before(d.Expires) && !leased {
		return StatusExpired
	}
	return d.Status
}

// Status returns a drop-off's status for the sender holding its receipt,
// and nothing else. Unknown receipts give ErrNotFound.
func (s *Service) Status(ctx context.Context, receiptID string) (Status, error) {
	st, _, err := s.StatusWithReason(ctx, receiptID)
	return st, err
}

// StatusWithReason returns a drop-off's status and the reason the sender
// may see (Summary.SenderReason): what a partial pick-up left out, what
// the person chose to tell the sender when rejecting; never the person's
// own reason. Unknown receipts give ErrNotFound.
func (s *Service) StatusWithReason(ctx context.Context, receiptID string) (Status, string, error) {
	var st Status
	var reason string
	err := s.store.View(ctx, func(tx Tx) error {
		d, err := tx.Get(receiptID)
		if err != nil {
			return err
		}
		st = effectiveStatus(d, s.now())
		if st != StatusPending && st != StatusExpired {
			reason = d.SenderReason
		}
		return nil
	})
	if err != nil {
		return "", "", fmt.Errorf("dopu: status: %w", err)
	}
	return st, reason, nil
}

// summary returns d's summary as the inbox shows it, with the state of
// its alert while one is in the outbox.
func (s *Service) summary(tx Tx, d *DropOff) (Summary, error) {
	sum := d.Summary
	sum.Status = effectiveStatus(d, s.now())
	a, err := tx.Alert(d.ID)
	switch {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		return sum, err
	default:
		st := &AlertState{State: AlertPending, Attempts: a.Attempts, LastError: a.LastError}
		if a.Dead {
			st.State = AlertDead
		} else if a.Attempts > 0 {
			st.NextAttempt = a.NextAttempt
		}
		sum.Alert = st
	}
	return sum, nil
}

// List returns the record's drop-offs, newest first, in every status.
func (s *Service) List(ctx context.Context, recordID string) ([]Summary, error) {
	var out []Summary
	err := s.store.View(ctx, func(tx Tx) error {
		list, err := tx.List(recordID)
		if err != nil {
			return err
		}
		out = make([]Summary, len(list))
		for i := range list {
			if out[i], err = s.summary(tx, &list[i]); err != nil {
				return err
			}
			if out[i].Status == StatusPending {
				out[i].LikelyDuplicateOf = duplicateOf(&list[i], list)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("dopu: listing drop-offs of %s: %w", recordID, err)
	}
	return out, nil
}

// duplicateOf returns the id of a drop-off of list already picked up that d
// likely repeats: the same Bundle.identifier, or, when d has none, the
// same set of resource identifiers; "" if none.
func duplicateOf(d *DropOff, list []DropOff) string {
	for i := range list {
		o := &list[i]
		if o.ID == d.ID || (o.Status != StatusPickedUp && o.Status != StatusPickedUpPartially) {
			continue
		}
		switch {
		case d.BundleIdentifier != "":
			if o.BundleIdentifier == d.BundleIdentifier {
				return o.ID
			}
		case d.IdentifiersDigest != "" && o.IdentifiersDigest == d.IdentifiersDigest:
			return o.ID
		}
	}
	return ""
}

// Get returns a drop-off of the record and its Bundle. The Bundle is nil
// once the drop-off is no longer pending. A drop-off of another record
// gives ErrNotFound.
func (s *Service) Get(ctx context.Context, recordID, id string) (*Summary, []byte, error) {
	var sum Summary
	var body []byte
	read := func(tx Tx) error {
		d, err := tx.Get(id)
		if err != nil {
			return err
		}
		if d.RecordID != recordID {
			return ErrNotFound
		}
		if sum, err = s.summary(tx, d); err != nil {
			return err
		}
		if d.Status == StatusPending {
			body, err = tx.Body(id)
		}
		return err
	}
	err := s.store.View(ctx, read)
	if errors.Is(err, ErrNoBody) {
		// A body kept as a file goes once the transaction that takes its
		// drop-off out of pending has committed, which may be after this
		// snapshot was taken: a newer one shows the drop-off as it is now.
		body = nil
		err = s.store.View(ctx, read)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("dopu: reading drop-off %s: %w", id, err)
	}
	return &sum, body, nil
}

// Reject marks a pending drop-off rejected with the person's reason and
// deletes its Bundle. ErrNotPending if it is no longer pending,
// ErrPickupInProgress while a pick-up holds it.
func (s *Service) Reject(ctx context.Context, recordID, id, reason string) error {
	return s.RejectTelling(ctx, recordID, id, reason, "")
}

// RejectTelling is Reject with a reason for the sender (senderReason,
// shown with the status; the person's own reason never is).
func (s *Service) RejectTelling(ctx context.Context, recordID, id, reason, senderReason string) error {
	now := s.now()
	err := s.store.Update(ctx, func(tx Tx) error {
		d, err := tx.Get(id)
		if err != nil {
			return err
		}
		if d.RecordID != recordID {
			return ErrNotFound
		}
		if effectiveStatus(d, now) != StatusPending {
			return ErrNotPending
		}
		if s.leaseHeld(d, now) {
			return ErrPickupInProgress
		}
		d.Status, d.Reason, d.Changed = StatusRejected, truncate(reason, maxReason), now
		d.SenderReason = truncate(senderReason, maxReason)
		d.Lease, d.LeaseExpires = "", time.Time{}
		if err := tx.Put(d); err != nil {
			return err
		}
		return tx.DeleteAlert(id)
	})
	if err != nil {
		return fmt.Errorf("dopu: rejecting drop-off %s: %w", id, err)
	}
	return nil
}

// expiryBatch bounds the drop-offs expired in one transaction.
const expiryBatch = 256

// Expire marks pending drop-offs past their TTL expired, deletes their
// Bundles and alerts, and returns how many it expired. A drop-off held by
// a live pick-up lease waits for the lease to end.
func (s *Service) Expire(ctx context.Context) (int, error) {
	total := 0
	for {
		now := s.now()
		n, more := 0, false
		err := s.store.Update(ctx, func(tx Tx) error {
			due, err := tx.Expiring(now, expiryBatch)
			if err != nil {
				return err
			}
			more = len(due) == expiryBatch
			for i := range due {
				d := &due[i]
				if s.leaseHeld(d, now) {
					continue
				}
				d.Status, d.Changed = StatusExpired, now
				d.Lease, d.LeaseExpires = "", time.Time{}
				if err := tx.Put(d); err != nil {
					return err
				}
				if err := tx.DeleteAlert(d.ID); err != nil {
					return err
				}
				n++
			}
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("dopu: expiring drop-offs: %w", err)
		}
		total += n
		if !more || n == 0 {
			return total, nil
		}
	}
}

func mustRandom(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand never fails
	return b
}

// Purge deletes the drop-offs that left pending more than
// Limits.Retention ago, summary and all, and returns how many. Their
// receipts then answer ErrNotFound, and their bodies may be dropped off
// again.
func (s *Service) Purge(ctx context.Context) (int, error) {
	total := 0
	for {
		n := 0
		err := s.store.Update(ctx, func(tx Tx) error {
			old, err := tx.Finished(s.now().Add(-s.limits.Retention), expiryBatch)
			if err != nil {
				return err
			}
			for _, d := range old {
				if err := tx.Delete(d.ID); err != nil {
					return err
				}
			}
			n = len(old)
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("dopu: purging drop-offs: %w", err)
		}
		total += n
		if n < expiryBatch {
			return total, nil
		}
	}
}

// DeleteRecord deletes every drop-off of a record, pending ones with their
// Bundles, and their alerts: call it when the record itself is deleted. It
// returns how many it deleted.
func (s *Service) DeleteRecord(ctx context.Context, recordID string) (int, error) {
	now := s.now()
	n := 0
	err := s.store.Update(ctx, func(tx Tx) error {
		list, err := tx.List(recordID)
		if err != nil {
			return err
		}
		for i := range list {
			d := &list[i]
			if d.Status == StatusPending {
				// Finish it first: the store deletes only finished ones.
				d.Status, d.Reason, d.Changed = StatusRejected, "record deleted", now
				d.Lease, d.LeaseExpires = "", time.Time{}
				if err := tx.Put(d); err != nil {
					return err
				}
			}
			if err := tx.Delete(d.ID); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("dopu: deleting the drop-offs of %s: %w", recordID, err)
	}
	return n, nil
}
