package store

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/pfrgateway/caddy-pfr/fhir"
)

// History paging limits.
const (
	defaultPageSize = 20
	maxPageSize     = 1000
)

// history answers system (typ ""), type (id "") and instance history,
// newest first, with _count and _since. Like a search, a history longer
// than one page is pinned in a snapshot so its pages stay stable while
// resources are written.
func (q *request) history(typ, id string) error {
	params := q.r.URL.Query()
	count, err := pageSize(params)
	if err != nil {
		return err
	}
	count = max(count, 1)
	var since time.Time
	if s := params.Get("_since"); s != "" {
		since, err = parseInstant(s)
		if err != nil {
			return fhir.Errorf(http.StatusBadRequest, fhir.CodeValue, "invalid _since %q: expected a FHIR instant", s)
		}
	}

	b := q.newBundle("history")
	var refs []string
	err = q.h.db.view(q.part, func(p *ptx) error {
		visit := func(rec *record) (bool, error) {
			if !since.IsZero() && rec.LastUpdated.Before(since) {
				return true, nil
			}
			if len(refs) < count {
				b.Entry = append(b.Entry, q.historyEntry(rec))
			}
			refs = append(refs, rec.Type+"/"+rec.ID+"/"+rec.versionID())
			return true, nil
		}
		if id != "" {
			if rec, err := p.current(typ, id); err != nil {
				return err
			} else if rec == nil {
				return fhir.Errorf(http.StatusNotFound, fhir.CodeNotFound, "Resource %s/%s is not known", typ, id)
			}
			return p.versions(typ, id, visit)
		}
		return p.sequence(typ, visit)
	})
	if err != nil {
		return err
	}
	total := len(refs)
	b.Total = &total
	b.Link = append(b.Link, outLink{Relation: "self", URL: q.base + trimBase(q.h.cfg.BasePath, q.r.URL.Path) + queryString(params)})
	if total > count {
		searchID, err := q.h.db.saveSnapshot(&searchSnapshot{Partition: q.part, Kind: snapshotHistory, Refs: packRefs(refs)})
		if err != nil {
			return err
		}
		b.Link = append(b.Link, outLink{Relation: "next", URL: q.snapshotLink(searchID, snapshotHistory, count, count)})
	}
	q.writeBundle(http.StatusOK, b)
	return nil
}

// historyPage fills b with the versions refs ("Type/id/version") name.
func (q *request) historyPage(b *outBundle, refs []string) error {
	return q.h.db.view(q.part, func(p *ptx) error {
		for _, ref := range refs {
			parts := strings.Split(ref, "/")
			if len(parts) != 3 {
				return fmt.Errorf("corrupt history snapshot entry %q", ref)
			}
			v, err := strconv.ParseUint(parts[2], 10, 64)
			if err != nil {
				return fmt.Errorf("corrupt history snapshot entry %q", ref)
			}
			rec, err := p.version(parts[0], parts[1], v)
			if err != nil {
				return err
			}
			b.Entry = append(b.Entry, q.historyEntry(rec))
		}
		return nil
	})
}

// historyEntry renders one version as a history Bundle entry.
func (q *request) historyEntry(rec *record) outEntry {
	e := outEntry{FullURL: q.resourceURL(rec.Type, rec.ID)}
	resp := &outResponse{Etag: rec.etag(), LastModified: instant(rec.LastUpdated)}
	switch {
	case rec.Deleted:
		e.Request = &outRequest{Method: http.MethodDelete, URL: rec.Type + "/" + rec.ID}
		resp.Status = statusLine(http.StatusOK)
	case rec.Version == 1:
		e.Resource = rec.Body
		e.Request = &outRequest{Method: http.MethodPost, URL: rec.Type}
		resp.Status = statusLine(http.StatusCreated)
		resp.Location = q.versionURL(rec)
	default:
		e.Resource = rec.Body
		e.Request = &outRequest{Method: http.MethodPut, URL: rec.Type + "/" + rec.ID}
		resp.Status = statusLine(http.StatusOK)
		resp.Location = q.versionURL(rec)
	}
	e.Response = resp
	return e
}

// trimBase returns path relative to the FHIR base, with its leading slash.
func trimBase(base, path string) string {
	if len(path) >= len(base) {
		return path[len(base):]
	}
	return path
}

// queryString renders "?a=b" or "".
func queryString(v url.Values) string {
	if len(v) == 0 {
		return ""
	}
	return "?" + v.Encode()
}

// pageSize reads _count: default 20, at most 1000.
func pageSize(params url.Values) (int, error) {
	if !params.Has("_count") {
		return defaultPageSize, nil
	}
	n, err := strconv.Atoi(params.Get("_count"))
	if err != nil || n < 0 {
		return 0, fhir.Errorf(http.StatusBadRequest, fhir.CodeValue, "invalid _count %q: expected a non-negative integer", params.Get("_count"))
	}
	return min(n, maxPageSize), nil
}

// nonNegativeInt reads an optional non-negative integer parameter.
func nonNegativeInt(params url.Values, name string) (int, error) {
	if !params.Has(name) {
		return 0, nil
	}
	n, err := strconv.Atoi(params.Get(name))
	if err != nil || n < 0 {
		return 0, fhir.Errorf(http.StatusBadRequest, fhir.CodeValue, "invalid %s %q: expected a non-negative integer", name, params.Get(name))
	}
	return n, nil
}

// parseInstant parses a FHIR instant or dateTime with a time zone, or a date.
func parseInstant(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04Z07:00", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fhir.Errorf(http.StatusBadRequest, fhir.CodeValue, "invalid instant %q", s)
}
