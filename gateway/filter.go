package gateway

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"go.uber.org/zap"

	"github.com/pfrgateway/caddy-pfr/backend"
	"github.com/pfrgateway/caddy-pfr/fhir"
)

// filteringWriter removes, on its way to the client, every resource of a
// FHIR JSON response that does not belong to the record: defense in depth
// against an upstream that ignores partitions. A Bundle (search, history,
// $everything, batch and transaction responses) is filtered entry by entry:
// one of up to maxHeldBundle bytes (a search page, which the response
// rewriter in front of the filter holds whole anyway) is held and filtered
// in place when it ends, on the handler's goroutine, and sent with its
// Content-Length; a larger one streams through a filter on a goroutine of
// its own as it arrives. A single resource (read, vread) is held, bounded,
// and replaced by a 404 when it is foreign.
type filteringWriter struct {
	w      http.ResponseWriter
	keep   func(map[string]any) bool
	log    *zap.Logger
	record string
	single bool // the response is one resource, not a Bundle
	// write: the single resource answers a write (create, update, patch):
	// a 201 is judged too, an empty body (return=minimal) passes, and
	// hide, when set, decides whether the body is shown (the token's
	// scopes) while the status and Location stay.
	write bool
	hide  func(map[string]any) bool
	limit int64 // how much of a single resource may be held
	opts  fhir.FilterOptions
	// shape, when set, cuts a single resource down after it was judged
	// whole (the client's _elements or _summary, see shaping.go).
	shape func(map[string]any) map[string]any
	// raw lets a judged answer that is not FHIR JSON through: the content
	// of a Binary (format.go). Otherwise such an answer is refused with a
	// 502: what the filter cannot read, it cannot check.
	raw bool

	started bool
	pass    bool // not a 200 JSON body: untouched
	// unread: a judged answer in a format the filter cannot read; held
	// back, and refused as soon as it has a body.
	unread  bool
	refused bool
	status  int
	// held is the single resource, held as the resource of a Bundle entry
	// (`{"resource":` before it) so that the fast path, which judges
	// entries, reads it where it is; its memory comes from entryScratch
	// and goes back there when Close is done with it.
	held  *[]byte
	facts fhir.EntryFacts // the held resource's, for the fast path
	// known are facts learnt of knownBody before it was written here (the
	// one pass of verifyAnswer over the upstream's answer): when the held
	// resource is those very bytes (the URL rewriter changed nothing), the
	// fast path judges from them instead of reading the resource again.
	known     *fhir.EntryFacts
	knownBody []byte
	// bundle is the Bundle held so far, until it ends or outgrows
	// maxHeldBundle; then pw and done are the streaming filter's.
	bundle *[]byte
	pw     *io.PipeWriter
	done   chan error
}

// maxHeldBundle is the largest Bundle the filter holds to filter it whole:
// the response rewriter's buffer (backend.DefaultBufferLimit), so that a
// body it held whole is held whole here too, and a larger one streams
// through both.
const maxHeldBundle = backend.DefaultBufferLimit

func (f *filteringWriter) Header() http.Header { return f.w.Header() }

func (f *filteringWriter) WriteHeader(status int) {
	if f.started {
		return
	}
	f.started, f.status = true, status
	ct := strings.ToLower(f.w.Header().Get("Content-Type"))
	judged := status == http.StatusOK || f.write && status == http.StatusCreated
	readable := strings.Contains(ct, "json") && f.w.Header().Get("Content-Encoding") == ""
	if judged && !readable && !f.raw {
		f.unread = true
		return
	}
	if !judged || !readable {
		f.pass = true
		f.w.WriteHeader(status)
		return
	}
	f.w.Header().Del("Content-Length")
	// A single resource, and a Bundle until it outgrows maxHeldBundle, is
	// held: the status goes out with the judged body (Close), or when the
	// Bundle starts streaming.
}

// stream starts the streaming filter for a Bundle too large to hold,
// handing it what was held so far.
func (f *filteringWriter) stream() error {
	f.w.WriteHeader(f.status)
	pr, pw := io.Pipe()
	f.pw, f.done = pw, make(chan error, 1)
	go func() {
		removed, err := fhir.FilterBundle(pr, f.w, f.keep, f.opts)
		pr.CloseWithError(err) // unblocks the writer if the filter stopped early
		if removed > 0 {
			f.log.Warn("security: removed resources of another person, or outside the token's scopes, from an upstream response",
				zap.String("record", f.record), zap.Int("removed", removed))
		}
		f.done <- err
	}()
	if f.bundle == nil {
		return nil
	}
	var err error
	if held := *f.bundle; len(held) > 0 {
		_, err = f.pw.Write(held) // read whole by the filter when it returns
	}
	f.releaseBundle()
	return err
}

func (f *filteringWriter) Write(b []byte) (int, error) {
	if !f.started {
		f.WriteHeader(http.StatusOK)
	}
	switch {
	case f.pass:
		return f.w.Write(b)
	case f.unread:
		if len(b) > 0 && !f.refused {
			f.refused = true
			f.refuseUnread()
		}
		return len(b), nil // dropped: never shown unchecked
	case f.single:
		if f.held == nil {
			f.held = entryScratch.Get().(*[]byte)
			*f.held = append((*f.held)[:0], entryHead...)
		}
		if int64(len(f.resource())+len(b)) > f.limit {
			return 0, fmt.Errorf("resource larger than %d bytes cannot be checked", f.limit)
		}
		*f.held = append(*f.held, b...)
		return len(b), nil
	case f.pw != nil:
		return f.pw.Write(b)
	}
	if f.bundle == nil {
		f.bundle = bundleScratch.Get().(*[]byte)
		*f.bundle = (*f.bundle)[:0]
	}
	if len(*f.bundle)+len(b) <= maxHeldBundle {
		*f.bundle = append(*f.bundle, b...)
		return len(b), nil
	}
	if err := f.stream(); err != nil {
		return 0, err
	}
	return f.pw.Write(b)
}

// Flush passes through only for untouched bodies: the filter writes whole
// entries as it goes.
func (f *filteringWriter) Flush() {
	if fl, ok := f.w.(http.Flusher); ok && f.pass {
		fl.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (f *filteringWriter) Unwrap() http.ResponseWriter { return f.w }

// Close ends the body: it waits for the Bundle filter, or judges and
// writes the held resource.
func (f *filteringWriter) Close() error {
	switch {
	case !f.started || f.pass || f.refused:
		return nil
	case f.unread:
		f.w.WriteHeader(f.status) // no body: nothing to check
		return nil
	case !f.single && f.pw != nil:
		_ = f.pw.Close()
		return <-f.done
	case !f.single:
		return f.filterHeld()
	}
	defer f.release()
	held := f.resource()
	if f.opts.Quick != nil && f.shape == nil && f.held != nil {
		keep, decided := false, false
		if f.known != nil && bytes.Equal(held, f.knownBody) {
			keep, decided = f.opts.Quick(f.known)
		} else {
			// The fast path judges entries: the resource is held as one.
			entry := append(*f.held, '}')
			*f.held = entry[:len(entry)-1]
			if n, err := fhir.ScanEntry(entry, &f.facts); err == nil && n == len(entry) {
				keep, decided = f.opts.Quick(&f.facts)
			}
		}
		if decided && keep {
			f.w.WriteHeader(f.status)
			_, err := f.w.Write(held)
			return err
		}
	}
	if f.write && len(bytes.TrimSpace(held)) == 0 {
		f.w.WriteHeader(f.status) // return=minimal: nothing to judge
		return nil
	}
	res, err := fhir.DecodeResource(held)
	if err != nil || !f.keep(res) {
		f.log.Warn("security: refused a resource of another person (or unreadable) from the upstream",
			zap.String("record", f.record), zap.Error(err))
		// Where it is would tell as much as what it is.
		for _, h := range []string{"Location", "Content-Location", "ETag", "Last-Modified"} {
			f.w.Header().Del(h)
		}
		fhir.WriteError(f.w, fhir.Errorf(http.StatusNotFound, fhir.CodeNotFound, "no such resource in this record"))
		return nil
	}
	if f.hide != nil && !f.hide(res) {
		f.w.Header().Set("Content-Length", "0")
		f.w.WriteHeader(f.status)
		return nil
	}
	body := held
	if f.shape != nil {
		if body, err = fhir.Marshal(f.shape(res)); err != nil {
			return err
		}
	}
	f.w.WriteHeader(f.status)
	_, err = f.w.Write(body)
	return err
}

// filterHeld filters the Bundle held whole and sends it, with its length.
// On error nothing was sent: the caller aborts the answer.
func (f *filteringWriter) filterHeld() error {
	defer f.releaseBundle()
	var body []byte
	if f.bundle != nil {
		body = *f.bundle
	}
	outp := bundleScratch.Get().(*[]byte)
	out := bytes.NewBuffer((*outp)[:0])
	out.Grow(len(body)) // the kept entries fit in the body's size
	defer func() {
		if b := out.Bytes(); cap(b) <= maxHeldBundle+maxHeldBundle/4 {
			*outp = b[:0]
			bundleScratch.Put(outp)
		}
	}()
	removed, err := fhir.FilterBundleBytes(body, out, f.keep, f.opts)
	if removed > 0 {
		f.log.Warn("security: removed resources of another person, or outside the token's scopes, from an upstream response",
			zap.String("record", f.record), zap.Int("removed", removed))
	}
	if err != nil {
		return err
	}
	f.w.Header().Set("Content-Length", strconv.Itoa(out.Len()))
	f.w.WriteHeader(f.status)
	_, err = f.w.Write(out.Bytes())
	return err
}

// releaseBundle gives the held Bundle's memory back (unless it grew past
// what is ever held).
func (f *filteringWriter) releaseBundle() {
	if f.bundle != nil && cap(*f.bundle) <= maxHeldBundle+maxHeldBundle/4 {
		*f.bundle = (*f.bundle)[:0]
		bundleScratch.Put(f.bundle)
	}
	f.bundle = nil
}

// bundleScratch keeps the memory of held Bundles and of their filtered
// copies between answers.
var bundleScratch = sync.Pool{New: func() any { return new([]byte) }}

// entryHead is what comes before the held resource in filteringWriter.held.
const entryHead = `{"resource":`

// resource is the single resource held so far (nil before its first byte).
func (f *filteringWriter) resource() []byte {
	if f.held == nil {
		return nil
	}
	return (*f.held)[len(entryHead):]
}

// release gives the held resource's memory back (unless it grew very
// large), once what was held has been written or refused.
func (f *filteringWriter) release() {
	if f.held != nil && cap(*f.held) <= 1<<20 {
		*f.held = (*f.held)[:0]
		entryScratch.Put(f.held)
	}
	f.held = nil
}

// entryScratch keeps the memory in which a single resource is held, made a
// Bundle entry for the fast path, between answers.
var entryScratch = sync.Pool{New: func() any { return new([]byte) }}

// refuseUnread answers a 502 instead of a body the filter cannot read (not
// FHIR JSON, or content-coded): passing it on would show the client what
// nobody checked.
func (f *filteringWriter) refuseUnread() {
	ct := f.w.Header().Get("Content-Type")
	f.log.Warn("security: refused an upstream answer the response filter cannot read",
		zap.String("record", f.record), zap.String("content_type", ct),
		zap.String("content_encoding", f.w.Header().Get("Content-Encoding")))
	for _, h := range []string{"Location", "Content-Location", "ETag", "Last-Modified", "Content-Encoding", "Content-Length"} {
		f.w.Header().Del(h)
	}
	fhir.WriteError(f.w, fhir.Errorf(http.StatusBadGateway, fhir.CodeException,
		"the upstream answered in a format the gateway cannot check (Content-Type %q); it answers FHIR JSON only", ct))
}
