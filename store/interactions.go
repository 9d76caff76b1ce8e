package store

import (
	"net/http"
	"strconv"

	"github.com/pfrgateway/caddy-pfr/fhir"
)

// read answers GET Type/id.
func (q *request) read(typ, id string) error {
	var rec *record
	err := q.h.db.view(q.part, func(p *ptx) error {
		var err error
		rec, err = p.live(typ, id)
		return err
	})
	if err != nil {
		return err
	}
	if notModified(q.r, rec) {
		setVersionHeaders(q.w.Header(), rec)
		q.w.WriteHeader(http.StatusNotModified)
		return nil
	}
	q.writeRecord(http.StatusOK, rec)
	return nil
}

// notModified implements If-None-Match on reads.
func notModified(r *http.Request, rec *record) bool {
	inm := r.Header.Get("If-None-Match")
	if inm == "" {
		return false
	}
	v, err := parseIfMatch(inm)
	return err == nil && v == rec.Version
}

// vread answers GET Type/id/_history/vid.
func (q *request) vread(typ, id, vid string) error {
	v, err := strconv.ParseUint(vid, 10, 64)
	if err != nil || v == 0 {
		return fhir.Errorf(http.StatusBadRequest, fhir.CodeValue, "invalid version id %q", vid)
	}
	var rec *record
	err = q.h.db.view(q.part, func(p *ptx) error {
		rec, err = p.version(typ, id, v)
		return err
	})
	if err != nil {
		return err
	}
	if rec.Deleted {
		return fhir.Errorf(http.StatusGone, fhir.CodeDeleted, "Version %d of %s/%s is a deletion", v, typ, id).
			WithHeader("ETag", rec.etag()).WithHeader("Last-Modified", rec.LastUpdated.Format(http.TimeFormat))
	}
	q.writeRecord(http.StatusOK, rec)
	return nil
}

// readResource reads and parses the request body as one resource.
func (q *request) readResource() (resource, error) {
	body, err := readBody(q.w, q.r)
	if err != nil {
		return nil, err
	}
	return parseResource(body)
}

// create answers POST Type.
func (q *request) create(typ string) error {
	res, err := q.readResource()
	if err != nil {
		return err
	}
	if err := checkBodyType(res, typ); err != nil {
		return err
	}
	var out *writeResult
	err = q.h.db.update(q.part, func(p *ptx) error {
		out, err = q.h.create(p, typ, res, q.r.Header.Get("If-None-Exist"))
		return err
	})
	if err != nil {
		return err
	}
	q.writeResult(out, true)
	return nil
}

// update answers PUT Type/id.
func (q *request) update(typ, id string) error {
	res, err := q.readResource()
	if err != nil {
		return err
	}
	var out *writeResult
	err = q.h.db.update(q.part, func(p *ptx) error {
		out, err = update(p, typ, id, res, q.r.Header.Get("If-Match"))
		return err
	})
	if err != nil {
		return err
	}
	q.writeResult(out, true)
	return nil
}

// conditionalUpdate answers PUT Type?criteria.
func (q *request) conditionalUpdate(typ string) error {
	res, err := q.readResource()
	if err != nil {
		return err
	}
	if err := checkBodyType(res, typ); err != nil {
		return err
	}
	var out *writeResult
	err = q.h.db.update(q.part, func(p *ptx) error {
		id, err := q.h.conditionalUpdateID(p, typ, q.r.URL.RawQuery, res)
		if err != nil {
			return err
		}
		res["id"] = id
		out, err = update(p, typ, id, res, q.r.Header.Get("If-Match"))
		return err
	})
	if err != nil {
		return err
	}
	q.writeResult(out, true)
	return nil
}

// delete answers DELETE Type/id.
func (q *request) delete(typ, id string) error {
	var out *writeResult
	err := q.h.db.update(q.part, func(p *ptx) error {
		var err error
		out, err = remove(p, typ, id, q.r.Header.Get("If-Match"))
		return err
	})
	if err != nil {
		return err
	}
	q.writeResult(out, false)
	return nil
}

// conditionalDelete answers DELETE Type?criteria.
func (q *request) conditionalDelete(typ string) error {
	var out *writeResult
	err := q.h.db.update(q.part, func(p *ptx) error {
		var err error
		out, err = q.h.conditionalDelete(p, typ, q.r.URL.RawQuery)
		return err
	})
	if err != nil {
		return err
	}
	q.writeResult(out, false)
	return nil
}
