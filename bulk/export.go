package bulk

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"hash"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/internal/durable"
)

// Source reads below a record's FHIR base for a job. The gateway's
// implementation sends each read through its own pipeline in the job
// owner's name: the record's partition, the ownership filter and the
// token's scopes apply to every resource, on every upstream.
type Source interface {
	// Get answers GET pathQuery, the part of a URL below job.Base with its
	// query ("/Observation?_count=250", or what a next link names). An
	// answer other than 200 is an error whose status fhir.AsError reads.
	Get(ctx context.Context, job *Job, pathQuery string) ([]byte, error)
}

// instantLayout writes FHIR instants at the millisecond, the precision of
// meta.lastUpdated on the embedded store and on HAPI.
const instantLayout = "2006-01-02T15:04:05.000Z07:00"

// FormatInstant renders t as a FHIR instant in UTC, to the millisecond.
func FormatInstant(t time.Time) string { return t.UTC().Format(instantLayout) }

// ParseInstant reads a FHIR instant (or dateTime with a time zone).
func ParseInstant(s string) (time.Time, error) {
	return time.Parse(time.RFC3339Nano, s)
}

// page is the part of a Bundle the exporter reads; resources stay raw, so
// they are written byte for byte as the pipeline answered them.
type page struct {
	Link []struct {
		Relation string `json:"relation"`
		URL      string `json:"url"`
	} `json:"link"`
	Entry []struct {
		FullURL  string          `json:"fullUrl"`
		Resource json.RawMessage `json:"resource"`
		Search   *struct {
			Mode string `json:"mode"`
		} `json:"search"`
		Request *struct {
			Method string `json:"method"`
			URL    string `json:"url"`
		} `json:"request"`
		Response *struct {
			LastModified string `json:"lastModified"`
		} `json:"response"`
	} `json:"entry"`
}

// head is what the exporter reads of a resource.
type head struct {
	ResourceType string `json:"resourceType"`
	ID           string `json:"id"`
	Meta         struct {
		LastUpdated string `json:"lastUpdated"`
	} `json:"meta"`
}

// exporter runs one job's reads.
type exporter struct {
	src      Source
	job      *Job
	dir      string
	pageSize int
	retries  int
	backoff  time.Duration
	// progress is told how many resources of the current type are written.
	progress func(n int)
}

// fatalError ends a job: the caller lost access, or the upstream kept
// failing.
type fatalError struct{ fe *fhir.Error }

func (e fatalError) Error() string { return e.fe.Error() }

// get reads pathQuery, retrying transient failures (429, 502, 503, 504)
// with a growing pause. A refusal of the caller (401, 403) and a lasting
// failure are fatal to the job; other refusals (400, 404, 422…) are
// returned as *fhir.Error for the type's error entry.
func (e *exporter) get(ctx context.Context, pathQuery string) ([]byte, error) {
	wait := e.backoff
	for attempt := 0; ; attempt++ {
		body, err := e.src.Get(ctx, e.job, pathQuery)
		if err == nil {
			return body, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		fe := fhir.AsError(err)
		switch fe.Status {
		case http.StatusUnauthorized, http.StatusForbidden:
			return nil, fatalError{fe}
		case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout,
			http.StatusInternalServerError:
			if attempt >= e.retries {
				return nil, fatalError{fe}
			}
		default:
			return nil, fe
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		wait *= 2
	}
}

// walk reads a search or history from pathQuery to its last page, calling
// fn for every page.
func (e *exporter) walk(ctx context.Context, pathQuery string, fn func(*page) error) error {
	for pathQuery != "" {
		body, err := e.get(ctx, pathQuery)
		if err != nil {
			return err
		}
		var p page
		if err := json.Unmarshal(body, &p); err != nil {
			return fatalError{fhir.Errorf(http.StatusBadGateway, fhir.CodeException, "an unreadable page at %s", pathQuery).WithCause(err)}
		}
		if err := fn(&p); err != nil {
			return err
		}
		next := ""
		for _, l := range p.Link {
			if l.Relation == "next" {
				next = l.URL
			}
		}
		if next == "" {
			return nil
		}
		rest, ok := strings.CutPrefix(next, e.job.Base)
		if !ok || rest != "" && rest[0] != '/' && rest[0] != '?' {
			return fatalError{fhir.Errorf(http.StatusBadGateway, fhir.CodeException, "a next link outside the record: %s", next)}
		}
		if rest == "" || rest[0] == '?' {
			rest = "/" + rest
		}
		if rest == pathQuery {
			return fatalError{fhir.Errorf(http.StatusBadGateway, fhir.CodeException, "a page links to itself as next: %s", next)}
		}
		pathQuery = rest
	}
	return nil
}

// typeFile writes one type's NDJSON file: into a .part file, renamed when
// the type is complete and synced.
type typeFile struct {
	f     *os.File
	w     *bufio.Writer
	h     hash.Hash
	count int
	bytes int64
	path  string
}

func (e *exporter) createFile(typ string) (*typeFile, error) {
	path := filepath.Join(e.dir, typ+".ndjson")
	f, err := os.OpenFile(path+".part", os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	return &typeFile{f: f, w: bufio.NewWriterSize(f, 64<<10), h: sha256.New(), path: path}, nil
}

func (t *typeFile) add(raw json.RawMessage) error {
	var line bytes.Buffer
	// Compact keeps every literal as it is (numbers byte for byte).
	if err := json.Compact(&line, raw); err != nil {
		return err
	}
	line.WriteByte('\n')
	t.h.Write(line.Bytes())
	n, err := t.w.Write(line.Bytes())
	t.bytes += int64(n)
	t.count++
	return err
}

// finish syncs and publishes the file (or removes it when empty).
func (t *typeFile) finish() (string, error) {
	if err := t.w.Flush(); err != nil {
		t.f.Close()
		return "", err
	}
	if t.count == 0 {
		t.f.Close()
		return "", os.Remove(t.f.Name())
	}
	if err := t.f.Sync(); err != nil {
		t.f.Close()
		return "", err
	}
	if err := t.f.Close(); err != nil {
		return "", err
	}
	if err := os.Rename(t.f.Name(), t.path); err != nil {
		return "", err
	}
	return hex.EncodeToString(t.h.Sum(nil)), durable.SyncDir(filepath.Dir(t.path))
}

func (t *typeFile) abandon() {
	t.f.Close()
	os.Remove(t.f.Name())
}

// exportType writes the type's resources as they were at the job's
// transaction time T:
//
//  1. the search _lastUpdated=le{T}, page by page: a match still as it was
//     at T is written; one changed since (an upstream may serve a page's
//     current versions) is replaced by its version as of T;
//  2. what changed after T and was not seen in 1 (updated or deleted
//     before its page was read): found in the type's history since T (or,
//     on an upstream without type history, by the search
//     _lastUpdated=gt{T}, which names updates but not deletions), each
//     written as its version as of T when it had one.
//
// A set of the ids decided keeps every resource once, whatever the
// upstream's paging does under concurrent writes.
func (e *exporter) exportType(ctx context.Context, typ string) (TypeResult, error) {
	res := TypeResult{Type: typ}
	out, err := e.createFile(typ)
	if err != nil {
		return res, err
	}
	ok := false
	defer func() {
		if !ok {
			out.abandon()
		}
	}()
	T := e.job.TransactionTime
	seen := map[string]struct{}{}
	emit := func(raw json.RawMessage, lastUpdated time.Time) error {
		if e.job.Since != nil && !lastUpdated.After(*e.job.Since) {
			return nil
		}
		if err := out.add(raw); err != nil {
			return err
		}
		if e.progress != nil {
			e.progress(out.count)
		}
		return nil
	}
	// decide writes the version as of T of a resource seen changed.
	decide := func(id string) error {
		if _, done := seen[id]; done || !validID(id) {
			return nil
		}
		seen[id] = struct{}{}
		raw, lu, err := e.asOf(ctx, typ, id)
		if err != nil || raw == nil {
			return err
		}
		return emit(raw, lu)
	}

	q := url.Values{"_count": {strconv.Itoa(e.pageSize)}}
	q.Add("_lastUpdated", "le"+FormatInstant(T))
	if e.job.Since != nil {
		q.Add("_lastUpdated", "gt"+FormatInstant(*e.job.Since))
	}
	err = e.walk(ctx, "/"+typ+"?"+q.Encode(), func(p *page) error {
		for _, en := range p.Entry {
			if en.Resource == nil || en.Search != nil && en.Search.Mode != "" && en.Search.Mode != "match" {
				continue
			}
			var h head
			if json.Unmarshal(en.Resource, &h) != nil || h.ResourceType != typ || !validID(h.ID) {
				continue
			}
			if _, done := seen[h.ID]; done {
				continue
			}
			lu, perr := ParseInstant(h.Meta.LastUpdated)
			if perr == nil && !lu.After(T) {
				seen[h.ID] = struct{}{}
				if err := emit(en.Resource, lu); err != nil {
					return err
				}
				continue
			}
			if err := decide(h.ID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return e.typeFailed(res, err)
	}

	// Changed after T: the type's history since T names updates and
	// deletions; where an upstream has no type history, the search
	// _lastUpdated=gt{T} still names the updates.
	hq := url.Values{"_since": {FormatInstant(T)}, "_count": {strconv.Itoa(e.pageSize)}}
	err = e.walk(ctx, "/"+typ+"/_history?"+hq.Encode(), func(p *page) error {
		for _, en := range p.Entry {
			if err := decide(entryID(typ, en.Resource, en.FullURL, en.Request)); err != nil {
				return err
			}
		}
		return nil
	})
	var fe *fhir.Error
	if err != nil && !errors.As(err, &fe) {
		return e.typeFailed(res, err)
	}
	if err != nil {
		// No type history here: the search _lastUpdated=gt{T} still
		// names what was updated after T (not what was deleted).
		if err := e.changedSince(ctx, typ, decide); err != nil {
			return e.typeFailed(res, err)
		}
	}
	sum, err := out.finish()
	if err != nil {
		return res, err
	}
	ok = true
	res.Count, res.SHA256, res.Bytes = out.count, sum, out.bytes
	if out.count > 0 {
		res.File = typ + ".ndjson"
	}
	return res, nil
}

// changedSince calls decide with the id of every resource of typ updated
// after the transaction time, from the search _lastUpdated=gt{T}.
func (e *exporter) changedSince(ctx context.Context, typ string, decide func(id string) error) error {
	T := e.job.TransactionTime
	gq := url.Values{"_count": {strconv.Itoa(e.pageSize)}, "_lastUpdated": {"gt" + FormatInstant(T)}}
	return e.walk(ctx, "/"+typ+"?"+gq.Encode(), func(p *page) error {
		for _, en := range p.Entry {
			if en.Search != nil && en.Search.Mode != "" && en.Search.Mode != "match" {
				continue
			}
			if err := decide(entryID(typ, en.Resource, en.FullURL, nil)); err != nil {
				return err
			}
		}
		return nil
	})
}

// typeFailed turns a refusal of the type's reads into an entry of the
// error file (the type is left out); anything else stops the job.
func (e *exporter) typeFailed(res TypeResult, err error) (TypeResult, error) {
	var fe *fhir.Error
	if errors.As(err, &fe) {
		out := fe.Outcome()
		for i := range out.Issue {
			out.Issue[i].Diagnostics = res.Type + ": " + out.Issue[i].Diagnostics
		}
		line, jerr := json.Marshal(out)
		if jerr != nil {
			return res, jerr
		}
		e.job.ErrorLines = append(e.job.ErrorLines, line)
		return res, nil
	}
	return res, err
}

// asOf returns the version of typ/id that was current at the transaction
// time, or nil when there was none (created later, or deleted by then),
// from the resource's history (newest first).
func (e *exporter) asOf(ctx context.Context, typ, id string) (json.RawMessage, time.Time, error) {
	T := e.job.TransactionTime
	var found json.RawMessage
	var foundAt time.Time
	decided := errors.New("decided")
	q := url.Values{"_count": {strconv.Itoa(e.pageSize)}}
	err := e.walk(ctx, "/"+typ+"/"+id+"/_history?"+q.Encode(), func(p *page) error {
		for _, en := range p.Entry {
			var h head
			var at string
			if en.Resource != nil {
				if json.Unmarshal(en.Resource, &h) != nil || h.ResourceType != typ || h.ID != id {
					continue
				}
				at = h.Meta.LastUpdated
			} else if en.Response != nil {
				at = en.Response.LastModified
			}
			t, err := ParseInstant(at)
			if err != nil || t.After(T) {
				continue
			}
			if en.Resource == nil {
				if en.Request != nil && en.Request.Method == http.MethodDelete {
					return decided // deleted by then
				}
				continue
			}
			found, foundAt = en.Resource, t
			return decided
		}
		return nil
	})
	if err != nil && err != decided {
		var fe *fhir.Error
		if errors.As(err, &fe) && (fe.Status == http.StatusNotFound || fe.Status == http.StatusGone) {
			return nil, time.Time{}, nil
		}
		return nil, time.Time{}, err
	}
	return found, foundAt, nil
}

// entryID is the id of the resource a search or history entry is about:
// from the resource, else its request URL (Type/id…) or full URL.
func entryID(typ string, raw json.RawMessage, fullURL string, req *struct {
	Method string `json:"method"`
	URL    string `json:"url"`
}) string {
	if raw != nil {
		var h head
		if json.Unmarshal(raw, &h) == nil && h.ResourceType == typ {
			return h.ID
		}
		return ""
	}
	for _, u := range []string{reqURL(req), fullURL} {
		if i := strings.Index(u, typ+"/"); i >= 0 && (i == 0 || u[i-1] == '/') {
			id, _, _ := strings.Cut(u[i+len(typ)+1:], "/")
			id, _, _ = strings.Cut(id, "?")
			return id
		}
	}
	return ""
}

func reqURL(req *struct {
	Method string `json:"method"`
	URL    string `json:"url"`
}) string {
	if req == nil {
		return ""
	}
	return req.URL
}

func validID(id string) bool { return fhir.IsID(id) }
