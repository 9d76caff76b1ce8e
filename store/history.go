package store

import (
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/pfrgateway/caddy-pfr/fhir"
)

// History paging limits.
const (
	defaultPageSize = 20
	maxPageSize     = 1000
)

// history answers system (typ ""), type (id "") and instance history,
// newest first, with _count, _since and an offset cursor.
func (q *request) history(typ, id string) error {
	params := q.r.URL.Query()
	count, err := pageSize(params)
	if err != nil {
		return err
	}
	offset, err := nonNegativeInt(params, "_offset")
	if err != nil {
		return err
	}
	var since time.Time
	if s := params.Get("_since"); s != "" {
		since, err = parseInstant(s)
		if err != nil {
			return fhir.Errorf(http.StatusBadRequest, fhir.CodeValue, "invalid _since %q: expected a FHIR instant", s)
		}
	}

	b := q.newBundle("history")
	total := 0
	err = q.h.db.view(q.part, func(p *ptx) error {
		visit := func(rec *record) (bool, error) {
			if !since.IsZero() && rec.LastUpdated.Before(since) {
				return true, nil
			}
			if total >= offset && total < offset+count {
				b.Entry = append(b.Entry, q.historyEntry(rec))
			}
			total++
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
	b.Total = &total
	self := *q.r.URL
	b.Link = append(b.Link, outLink{Relation: "self", URL: q.base + trimBase(q.h.cfg.BasePath, self.Path) + queryString(self.Query())})
	if offset+count < total {
		b.Link = append(b.Link, outLink{Relation: "next", URL: q.pageLink(self, offset+count, count)})
	}
	if offset > 0 {
		prev := offset - count
		if prev < 0 {
			prev = 0
		}
		b.Link = append(b.Link, outLink{Relation: "previous", URL: q.pageLink(self, prev, count)})
	}
	q.writeBundle(http.StatusOK, b)
	return nil
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

// pageLink is u with _offset and _count replaced.
func (q *request) pageLink(u url.URL, offset, count int) string {
	v := u.Query()
	v.Set("_offset", strconv.Itoa(offset))
	v.Set("_count", strconv.Itoa(count))
	return q.base + trimBase(q.h.cfg.BasePath, u.Path) + queryString(v)
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
