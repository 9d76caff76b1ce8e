package fhir

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/pfrgateway/caddy-pfr/fhir/fhirjson"
)

// FilterSearchset copies a FHIR JSON body from r to w, dropping the Bundle
// entries whose resource keep returns false for, and returns how many it
// dropped. It decodes one entry at a time, so that a searchset of many
// megabytes is never held whole: memory stays in the order of the largest
// entry.
//
// A body that is not a JSON object, or whose first member is a
// resourceType other than "Bundle", passes through byte for byte (a single
// resource is the caller's to check, with Owner.Belongs). In a Bundle the
// kept entries and every other member are copied byte for byte; only the
// whitespace between top-level members and between entries may change.
// Entries without a resource (such as a batch-response entry with only a
// response) are kept. Bundle.total is left as the upstream said: it counts
// matches, and the gateway logs every dropped entry as a security event
// rather than hiding that it happened. A top-level "entry" member seen
// before a resourceType is filtered: only a Bundle has entries holding
// resources.
//
// On error part of the body may already be written: the caller must abort
// the response rather than end it as if complete.
func FilterSearchset(r io.Reader, w io.Writer, keep func(res map[string]any) bool) (removed int, err error) {
	return FilterBundle(r, w, keep, FilterOptions{})
}

// FilterOptions tighten FilterBundle for an upstream that may mix people's
// data, where even what passes around the resources tells something.
type FilterOptions struct {
	// DropTotal leaves Bundle.total out: it counts matches of everyone.
	DropTotal bool
	// DropResourceless leaves out entries without a resource (such as a
	// history entry of a deletion), which cannot be told apart by owner.
	DropResourceless bool
	// Quick, when set, judges an entry first from what the scan that cut
	// it out of the stream learnt of it (ScanEntry; see Owner.JudgeEntry):
	// only entries it leaves undecided are decoded and given to keep.
	Quick func(entry *EntryFacts) (keep, decided bool)
	// Nested, when set, judges the entries of a searchset or history
	// Bundle found as an entry's resource (the answer to a search inside a
	// batch or transaction) one by one with keep, instead of the Bundle as
	// a whole, and removes those keep refuses. Such an entry is re-encoded
	// (member order may change; values, numbers included, stay as sent).
	Nested bool
	// Shape, when set, is applied to the resource of every match entry
	// kept (search.mode match or none; included resources stay whole),
	// which is then re-encoded: the _elements or _summary a client asked
	// for, applied after the whole resource was judged.
	Shape func(res map[string]any) map[string]any
	// Link, when set, rewrites the url of every Bundle.link (so that the
	// next page asks for the same shaping).
	Link func(url string) string
}

// FilterBundle is FilterSearchset with options.
//
// It cuts the body into values with fhirjson.ScanValue, a byte loop that
// checks the syntax as encoding/json does and builds nothing; with Quick,
// entries are cut with ScanEntry, which also reads in that same pass what
// Quick judges (the resource's type, its references): an entry is read
// once. Only an entry Quick leaves undecided is decoded.
func FilterBundle(r io.Reader, w io.Writer, keep func(res map[string]any) bool, opts FilterOptions) (removed int, err error) {
	in := &jsonStream{r: r, hold: true}
	defer in.release()
	out := outBuffers.Get().(*bufio.Writer)
	out.Reset(w)
	defer func() {
		out.Reset(nil) // nothing of w's is kept; unflushed bytes of a failed body are dropped
		outBuffers.Put(out)
	}()
	removed, err = filterBundle(in, w, out, keep, opts)
	if err != nil {
		return removed, err
	}
	if err := out.Flush(); err != nil {
		return removed, fmt.Errorf("filter searchset: %w", err)
	}
	return removed, nil
}

// FilterBundleBytes is FilterBundle on a body held whole, for an answer
// that is held anyway (it fits the gateway's buffer): body is read in
// place, never copied into a stream buffer nor changed, and the kept
// bytes are appended to out directly, so that the caller knows the
// filtered body's length before it sends anything. No goroutine, no pipe.
func FilterBundleBytes(body []byte, out *bytes.Buffer, keep func(res map[string]any) bool, opts FilterOptions) (removed int, err error) {
	in := &jsonStream{r: eofReader{}, buf: body, eof: io.EOF, hold: true, borrowed: true}
	return filterBundle(in, out, out, keep, opts)
}

// eofReader is an exhausted reader: the stream of a body held whole.
type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

// byteSink is where a filtered body goes: a bufio.Writer in front of the
// client (FilterBundle) or the buffer of a held one (FilterBundleBytes).
type byteSink interface {
	io.Writer
	io.ByteWriter
}

// filterBundle filters the stream in to out; a body that is not a Bundle
// is passed through to w (which out writes to, or is) as it is.
func filterBundle(in *jsonStream, w io.Writer, out byteSink, keep func(res map[string]any) bool, opts FilterOptions) (removed int, err error) {
	passThrough := func() (int, error) {
		if _, err := w.Write(in.buf); err != nil {
			return 0, fmt.Errorf("filter searchset: %w", err)
		}
		if _, err := io.Copy(w, in.r); err != nil {
			return 0, fmt.Errorf("filter searchset: %w", err)
		}
		return 0, nil
	}
	if c, err := in.peek(); err != nil || c != '{' {
		return passThrough()
	}
	in.pos++
	var firstKey, firstValue []byte
	c, err := in.peek()
	if err != nil {
		return 0, fmt.Errorf("filter searchset: %w", err)
	}
	if c != '}' {
		if firstKey, err = in.key(); err != nil {
			return 0, fmt.Errorf("filter searchset: %w", err)
		}
		if string(firstKey) == `"resourceType"` {
			if firstValue, err = in.value(); err != nil {
				return 0, fmt.Errorf("filter searchset: resourceType: %w", err)
			}
			if string(firstValue) != `"Bundle"` {
				return passThrough()
			}
		}
	}
	f := &searchsetFilter{in: in, out: out, keep: keep, opts: opts}
	f.out.WriteByte('{')
	if firstKey != nil {
		// Written before the stream may move: the head's bytes are
		// still in the buffer.
		if err := f.member(firstKey, firstValue, 0); err != nil {
			return f.removed, fmt.Errorf("filter searchset: %w", err)
		}
	}
	in.hold = false
	if err := f.copyObject(firstKey != nil); err != nil {
		return f.removed, fmt.Errorf("filter searchset: %w", err)
	}
	// Whatever follows the object (a final newline) is copied as it is.
	if _, err := f.out.Write(in.buf[in.pos:]); err != nil {
		return f.removed, fmt.Errorf("filter searchset: %w", err)
	}
	if _, err := io.Copy(f.out, in.r); err != nil {
		return f.removed, fmt.Errorf("filter searchset: %w", err)
	}
	return f.removed, nil
}

// searchsetFilter is the state of FilterSearchset inside a Bundle.
type searchsetFilter struct {
	in      *jsonStream
	out     byteSink
	keep    func(res map[string]any) bool
	opts    FilterOptions
	removed int
	written int // members written so far
	facts   EntryFacts
}

// copyObject copies the rest of the top-level object, whose opening brace
// and, when started, first member were read.
func (f *searchsetFilter) copyObject(started bool) error {
	for {
		c, err := f.in.peek()
		if err != nil {
			return fmt.Errorf("unterminated object: %w", err)
		}
		if started {
			if c == '}' {
				f.in.pos++
				return f.out.WriteByte('}')
			}
			if c != ',' {
				return fmt.Errorf("invalid character %q after a member", rune(c))
			}
			f.in.pos++
		} else if c == '}' {
			f.in.pos++
			return f.out.WriteByte('}')
		}
		started = true
		key, err := f.in.key()
		if err != nil {
			return err
		}
		if err := f.member(key, nil, f.written); err != nil {
			return err
		}
	}
}

// member copies one member of the top-level object; key is its name as
// sent (quotes included). value is its value when already read.
func (f *searchsetFilter) member(key, value []byte, n int) error {
	name, err := memberName(key)
	if err != nil {
		return err
	}
	if name == "total" && f.opts.DropTotal && value == nil {
		_, err := f.in.value()
		return err
	}
	if n > 0 {
		f.out.WriteByte(',')
	}
	f.out.Write(key)
	f.out.WriteByte(':')
	switch {
	case value != nil:
		_, err = f.out.Write(value)
	case name == "entry":
		err = f.copyEntries()
	case name == "link" && f.opts.Link != nil:
		err = f.copyLinks()
	default:
		err = f.copyValue()
	}
	if err != nil {
		return fmt.Errorf("member %q: %w", name, err)
	}
	f.written++
	return nil
}

// memberName unquotes a member name as sent.
func memberName(key []byte) (string, error) {
	if bytes.IndexByte(key, '\\') < 0 {
		return string(key[1 : len(key)-1]), nil
	}
	var name string
	if err := json.Unmarshal(key, &name); err != nil {
		return "", err
	}
	return name, nil
}

// copyEntries copies the entry array, one entry at a time, leaving out
// those whose resource keep refuses.
func (f *searchsetFilter) copyEntries() error {
	c, err := f.in.peek()
	if err != nil {
		return err
	}
	if c == '{' {
		return fmt.Errorf("entry must be an array")
	}
	if c != '[' {
		// A scalar such as null: copy it as it is.
		return f.copyValue()
	}
	f.in.pos++
	f.out.WriteByte('[')
	written := 0
	scanEntry := func(data []byte) (int, error) { return ScanEntry(data, &f.facts) }
	for i := 0; ; i++ {
		c, err := f.in.peek()
		if err != nil {
			return fmt.Errorf("unterminated entry array: %w", err)
		}
		if i > 0 {
			if c == ']' {
				break
			}
			if c != ',' {
				return fmt.Errorf("entry %d: invalid character %q after an entry", i-1, rune(c))
			}
			f.in.pos++
		} else if c == ']' {
			break
		}
		var raw []byte
		if f.opts.Quick != nil {
			raw, err = f.in.scan(scanEntry)
		} else {
			raw, err = f.in.value()
		}
		if err != nil {
			return fmt.Errorf("entry %d: %w", i, err)
		}
		kept, err := f.judge(raw)
		if err != nil {
			return fmt.Errorf("entry %d: %w", i, err)
		}
		if kept == nil {
			continue
		}
		if written > 0 {
			f.out.WriteByte(',')
		}
		if _, err := f.out.Write(kept); err != nil {
			return err
		}
		written++
	}
	f.in.pos++ // ']'
	return f.out.WriteByte(']')
}

// judge returns what of the entry raw is shown: raw itself, raw shaped or
// with its nested result Bundle filtered, or nil when it is left out.
func (f *searchsetFilter) judge(raw []byte) ([]byte, error) {
	if f.opts.Quick != nil {
		if keep, decided := f.opts.Quick(&f.facts); decided {
			if !keep {
				f.removed++
				return nil, nil
			}
			return f.shape(raw)
		}
	}
	var e struct {
		Resource map[string]any `json:"resource"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&e); err != nil {
		return nil, err
	}
	if f.opts.Nested && isResultBundle(e.Resource) {
		return f.filterNested(raw)
	}
	if e.Resource != nil && !f.keep(e.Resource) || e.Resource == nil && f.opts.DropResourceless {
		f.removed++
		return nil, nil
	}
	return f.shape(raw)
}

// shape returns the entry raw with opts.Shape applied to its resource when
// it is a match (raw itself otherwise, or without Shape).
func (f *searchsetFilter) shape(raw json.RawMessage) (json.RawMessage, error) {
	if f.opts.Shape == nil {
		return raw, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var entry map[string]any
	if err := dec.Decode(&entry); err != nil {
		return nil, err
	}
	res, _ := entry["resource"].(map[string]any)
	search, _ := entry["search"].(map[string]any)
	if mode, _ := search["mode"].(string); res == nil || mode != "" && mode != "match" {
		return raw, nil
	}
	entry["resource"] = f.opts.Shape(res)
	return Marshal(entry)
}

// copyLinks copies the link array with opts.Link applied to each url.
func (f *searchsetFilter) copyLinks() error {
	raw, err := f.in.value()
	if err != nil {
		return err
	}
	var links []map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&links); err != nil {
		return err
	}
	for _, l := range links {
		if u, ok := l["url"].(string); ok {
			l["url"] = f.opts.Link(u)
		}
	}
	raw, err = Marshal(links)
	if err != nil {
		return err
	}
	_, err = f.out.Write(raw)
	return err
}

// Marshal encodes v as JSON without HTML escaping (a narrative's "<div>"
// stays as it was sent) and without a final newline; numbers decoded as
// json.Number are written exactly as they were read.
func Marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// isResultBundle reports whether res is a Bundle answering a search or a
// history (searchset, history): a container of results, not a resource
// someone stored.
func isResultBundle(res map[string]any) bool {
	if res["resourceType"] != "Bundle" {
		return false
	}
	t, _ := res["type"].(string)
	return t == "searchset" || t == "history"
}

// filterNested returns the entry raw with the entries of its resource (a
// result Bundle) that keep refuses removed; raw itself when none is.
func (f *searchsetFilter) filterNested(raw json.RawMessage) (json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var entry map[string]any
	if err := dec.Decode(&entry); err != nil {
		return nil, err
	}
	res, _ := entry["resource"].(map[string]any)
	inner, _ := res["entry"].([]any)
	kept := make([]any, 0, len(inner))
	for _, ie := range inner {
		m, _ := ie.(map[string]any)
		r, _ := m["resource"].(map[string]any)
		if r != nil && !f.keep(r) || r == nil && f.opts.DropResourceless {
			f.removed++
			continue
		}
		kept = append(kept, ie)
	}
	if len(kept) == len(inner) {
		return raw, nil
	}
	res["entry"] = kept
	if f.opts.DropTotal {
		delete(res, "total")
	}
	return Marshal(entry)
}

// copyValue copies the next value as it is.
func (f *searchsetFilter) copyValue() error {
	raw, err := f.in.value()
	if err != nil {
		return err
	}
	_, err = f.out.Write(raw)
	return err
}

// jsonStream cuts JSON read from r into values (fhirjson.ScanValue) in a
// buffer that grows to the largest value and is kept for the next body
// (streamBuffers).
type jsonStream struct {
	r   io.Reader
	buf []byte // read and not yet dropped; buf[pos:] is unread
	pos int
	eof error // the reader's error once it returned one
	// hold keeps every byte read, from the first, in buf: a body found
	// not to be a Bundle is written out exactly.
	hold bool
	// borrowed: buf is the caller's body, held whole (FilterBundleBytes):
	// never compacted (fill stops at eof first) nor pooled.
	borrowed bool
}

// outBuffers keep FilterBundle's output buffers between bodies.
var outBuffers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 32<<10) }}

// streamBuffers keeps the streams' buffers between bodies.
var streamBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 32<<10); return &b }}

// release gives the buffer back (unless it grew very large).
func (s *jsonStream) release() {
	if s.buf != nil && !s.borrowed && cap(s.buf) <= 1<<20 {
		b := s.buf[:0]
		streamBuffers.Put(&b)
	}
	s.buf = nil
}

// fill reads more: at least as much again as is unread (so that a value
// scanned again from its start after each fill costs at most twice its
// length), or up to the end. It reports whether anything was read.
func (s *jsonStream) fill() bool {
	if s.eof != nil {
		return false
	}
	if s.buf == nil {
		s.buf = (*streamBuffers.Get().(*[]byte))[:0]
	}
	if !s.hold && s.pos > 0 {
		n := copy(s.buf, s.buf[s.pos:])
		s.buf, s.pos = s.buf[:n], 0
	}
	unread := len(s.buf) - s.pos
	want := len(s.buf) + max(unread, 4096)
	if want > cap(s.buf) {
		grown := make([]byte, len(s.buf), max(want, 2*cap(s.buf)))
		copy(grown, s.buf)
		s.buf = grown
	}
	got := false
	for len(s.buf) < want && s.eof == nil {
		n, err := s.r.Read(s.buf[len(s.buf):cap(s.buf)])
		s.buf = s.buf[:len(s.buf)+n]
		got = got || n > 0
		if err != nil {
			s.eof = err
		}
	}
	return got
}

// err is the error of a value cut short.
func (s *jsonStream) err() error {
	if s.eof == nil || errors.Is(s.eof, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return s.eof
}

// peek returns the next byte that is not whitespace, without consuming it.
func (s *jsonStream) peek() (byte, error) {
	for {
		s.pos = fhirjson.SkipSpace(s.buf, s.pos)
		if s.pos < len(s.buf) {
			return s.buf[s.pos], nil
		}
		if !s.fill() {
			return 0, s.err()
		}
	}
}

// value returns the next value's bytes (without the whitespace before
// it), valid until the next call.
func (s *jsonStream) value() ([]byte, error) { return s.scan(fhirjson.ScanValue) }

// scan is value with the scanner given: fhirjson.ScanValue, or one with
// its contract that learns something on the way (ScanEntry). A value cut
// by the end of what was read so far is scanned again from its start once
// more is read.
func (s *jsonStream) scan(scanner func([]byte) (int, error)) ([]byte, error) {
	if _, err := s.peek(); err != nil {
		return nil, err
	}
	for {
		n, err := scanner(s.buf[s.pos:])
		if err == nil {
			v := s.buf[s.pos : s.pos+n]
			s.pos += n
			return v, nil
		}
		if !errors.Is(err, fhirjson.ErrIncomplete) {
			return nil, err
		}
		if !s.fill() {
			return nil, s.err()
		}
	}
}

// key reads a member name and its colon; it returns the name as sent,
// quotes included.
func (s *jsonStream) key() ([]byte, error) {
	c, err := s.peek()
	if err != nil {
		return nil, err
	}
	if c != '"' {
		return nil, fmt.Errorf("invalid character %q where a member name belongs", rune(c))
	}
	k, err := s.value()
	if err != nil {
		return nil, err
	}
	// A copy: looking for the colon may move the buffer (a top-level
	// Bundle has a handful of members).
	k = bytes.Clone(k)
	if c, err = s.peek(); err != nil {
		return nil, err
	}
	if c != ':' {
		return nil, fmt.Errorf("invalid character %q after a member name", rune(c))
	}
	s.pos++
	return k, nil
}
