package fhir

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	// Quick, when set, judges an entry from its raw JSON first (see
	// Owner.QuickBelongs); only entries it leaves undecided are decoded
	// and given to keep.
	Quick func(entry []byte) (keep, decided bool)
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
func FilterBundle(r io.Reader, w io.Writer, keep func(res map[string]any) bool, opts FilterOptions) (removed int, err error) {
	rec := &recordingReader{r: r, recording: true}
	dec := json.NewDecoder(rec)
	dec.UseNumber()
	passThrough := func() (int, error) {
		if _, err := w.Write(rec.buf.Bytes()); err != nil {
			return 0, fmt.Errorf("filter searchset: %w", err)
		}
		if _, err := io.Copy(w, r); err != nil {
			return 0, fmt.Errorf("filter searchset: %w", err)
		}
		return 0, nil
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return passThrough()
	}
	var firstKey string
	var firstValue json.RawMessage
	if dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return 0, fmt.Errorf("filter searchset: %w", err)
		}
		firstKey, _ = tok.(string)
		if firstKey == "resourceType" {
			if err := dec.Decode(&firstValue); err != nil {
				return 0, fmt.Errorf("filter searchset: resourceType: %w", err)
			}
			if string(firstValue) != `"Bundle"` {
				return passThrough()
			}
		}
	}
	rec.stopRecording()
	f := &searchsetFilter{dec: dec, out: bufio.NewWriter(w), keep: keep, opts: opts}
	if err := f.copyObject(firstKey, firstValue); err != nil {
		return f.removed, fmt.Errorf("filter searchset: %w", err)
	}
	// Whatever follows the object (a final newline) is copied as it is.
	if _, err := io.Copy(f.out, io.MultiReader(dec.Buffered(), r)); err != nil {
		return f.removed, fmt.Errorf("filter searchset: %w", err)
	}
	if err := f.out.Flush(); err != nil {
		return f.removed, fmt.Errorf("filter searchset: %w", err)
	}
	return f.removed, nil
}

// searchsetFilter is the state of FilterSearchset inside a Bundle.
type searchsetFilter struct {
	dec     *json.Decoder
	out     *bufio.Writer
	keep    func(res map[string]any) bool
	opts    FilterOptions
	removed int
}

// copyObject copies the rest of the top-level object, whose opening brace
// and (when firstKey is not empty) first key were read; firstValue is the
// first member's value when it was read too.
func (f *searchsetFilter) copyObject(firstKey string, firstValue json.RawMessage) error {
	f.out.WriteByte('{')
	key, n := firstKey, 0
	for key != "" {
		if key == "total" && f.opts.DropTotal && !(n == 0 && firstValue != nil) {
			if err := f.skipValue(); err != nil {
				return fmt.Errorf("member %q: %w", key, err)
			}
			key = ""
			if f.dec.More() {
				tok, err := f.dec.Token()
				if err != nil {
					return err
				}
				key, _ = tok.(string)
			}
			continue
		}
		if n > 0 {
			f.out.WriteByte(',')
		}
		if err := f.writeKey(key); err != nil {
			return err
		}
		var err error
		switch {
		case n == 0 && firstValue != nil:
			_, err = f.out.Write(firstValue)
		case key == "entry":
			err = f.copyEntries()
		case key == "link" && f.opts.Link != nil:
			err = f.copyLinks()
		default:
			err = f.copyValue()
		}
		if err != nil {
			return fmt.Errorf("member %q: %w", key, err)
		}
		n++
		key = ""
		if f.dec.More() {
			tok, err := f.dec.Token()
			if err != nil {
				return err
			}
			key, _ = tok.(string)
		}
	}
	if tok, err := f.dec.Token(); err != nil || tok != json.Delim('}') {
		return fmt.Errorf("unterminated object: %v", err)
	}
	return f.out.WriteByte('}')
}

// copyEntries copies the entry array, one entry at a time, leaving out
// those whose resource keep refuses.
func (f *searchsetFilter) copyEntries() error {
	tok, err := f.dec.Token()
	if err != nil {
		return err
	}
	if _, isDelim := tok.(json.Delim); isDelim && tok != json.Delim('[') {
		return fmt.Errorf("entry must be an array")
	}
	if tok != json.Delim('[') {
		// A scalar such as null: copy it as it is.
		return f.writeToken(tok)
	}
	f.out.WriteByte('[')
	written := 0
	for i := 0; f.dec.More(); i++ {
		var raw json.RawMessage
		if err := f.dec.Decode(&raw); err != nil {
			return fmt.Errorf("entry %d: %w", i, err)
		}
		if f.opts.Quick != nil {
			if keep, decided := f.opts.Quick(raw); decided {
				if !keep {
					f.removed++
					continue
				}
				if raw, err = f.shape(raw); err != nil {
					return fmt.Errorf("entry %d: %w", i, err)
				}
				if written > 0 {
					f.out.WriteByte(',')
				}
				if _, err := f.out.Write(raw); err != nil {
					return err
				}
				written++
				continue
			}
		}
		var e struct {
			Resource map[string]any `json:"resource"`
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if err := dec.Decode(&e); err != nil {
			return fmt.Errorf("entry %d: %w", i, err)
		}
		if f.opts.Nested && isResultBundle(e.Resource) {
			var err error
			if raw, err = f.filterNested(raw); err != nil {
				return fmt.Errorf("entry %d: %w", i, err)
			}
			if written > 0 {
				f.out.WriteByte(',')
			}
			if _, err := f.out.Write(raw); err != nil {
				return err
			}
			written++
			continue
		}
		if e.Resource != nil && !f.keep(e.Resource) || e.Resource == nil && f.opts.DropResourceless {
			f.removed++
			continue
		}
		if raw, err = f.shape(raw); err != nil {
			return fmt.Errorf("entry %d: %w", i, err)
		}
		if written > 0 {
			f.out.WriteByte(',')
		}
		if _, err := f.out.Write(raw); err != nil {
			return err
		}
		written++
	}
	if tok, err := f.dec.Token(); err != nil || tok != json.Delim(']') {
		return fmt.Errorf("unterminated entry array: %v", err)
	}
	return f.out.WriteByte(']')
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
	var links []map[string]any
	if err := f.dec.Decode(&links); err != nil {
		return err
	}
	for _, l := range links {
		if u, ok := l["url"].(string); ok {
			l["url"] = f.opts.Link(u)
		}
	}
	raw, err := Marshal(links)
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

// skipValue reads past the next value.
func (f *searchsetFilter) skipValue() error {
	var raw json.RawMessage
	return f.dec.Decode(&raw)
}

// copyValue copies the next value as it is.
func (f *searchsetFilter) copyValue() error {
	var raw json.RawMessage
	if err := f.dec.Decode(&raw); err != nil {
		return err
	}
	_, err := f.out.Write(raw)
	return err
}

// writeKey writes a member name followed by a colon.
func (f *searchsetFilter) writeKey(key string) error {
	if err := f.writeToken(key); err != nil {
		return err
	}
	return f.out.WriteByte(':')
}

// writeToken writes a scalar JSON token without HTML escaping.
func (f *searchsetFilter) writeToken(tok json.Token) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(tok); err != nil {
		return err
	}
	_, err := f.out.Write(bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
	return err
}

// recordingReader keeps a copy of what it reads until stopRecording, so
// that a body found not to be a Bundle can be written out exactly.
type recordingReader struct {
	r         io.Reader
	buf       bytes.Buffer
	recording bool
}

func (rr *recordingReader) Read(p []byte) (int, error) {
	n, err := rr.r.Read(p)
	if rr.recording {
		rr.buf.Write(p[:n])
	}
	if errors.Is(err, io.EOF) {
		return n, io.EOF
	}
	return n, err
}

func (rr *recordingReader) stopRecording() {
	rr.recording = false
	rr.buf = bytes.Buffer{}
}
