package store

import (
	"fmt"
	"net/http"

	"github.com/pfrgateway/caddy-pfr/fhir"
)

// transaction processes a transaction Bundle all-or-nothing in one bbolt
// transaction, in FHIR's order: DELETE, POST, PUT and PATCH, GET. The
// response lists the entries in request order.
func (q *request) transaction(in *inBundle) error {
	entries := make([]*entry, len(in.Entry))
	for i, raw := range in.Entry {
		e, err := q.parseEntry(i, raw)
		if err != nil {
			return err
		}
		entries[i] = e
	}
	if err := checkDuplicateTargets(entries); err != nil {
		return err
	}
	err := q.h.db.update(q.part, func(p *ptx) error { return q.h.applyTransaction(q, p, entries) })
	if err != nil {
		return err
	}
	b := q.newBundle("transaction-response")
	for _, e := range entries {
		b.Entry = append(b.Entry, q.responseEntry(e))
	}
	q.writeBundle(http.StatusOK, b)
	return nil
}

// checkDuplicateTargets refuses two entries that write the same resource or
// share a fullUrl: their outcome would depend on processing order.
func checkDuplicateTargets(entries []*entry) error {
	targets := map[string]int{}
	fullURLs := map[string]int{}
	for _, e := range entries {
		if e.fullURL != "" && e.method != http.MethodGet {
			if j, dup := fullURLs[e.fullURL]; dup {
				return fhir.Errorf(http.StatusBadRequest, fhir.CodeDuplicate,
					"Bundle.entry[%d] and Bundle.entry[%d] have the same fullUrl %q", j, e.index, e.fullURL)
			}
			fullURLs[e.fullURL] = e.index
		}
		if e.id == "" || e.method == http.MethodGet {
			continue
		}
		key := e.typ + "/" + e.id
		if j, dup := targets[key]; dup {
			return fhir.Errorf(http.StatusBadRequest, fhir.CodeDuplicate,
				"Bundle.entry[%d] and Bundle.entry[%d] both write %s", j, e.index, key)
		}
		targets[key] = e.index
	}
	return nil
}

// applyTransaction does the work of a transaction inside p. Any error rolls
// everything back.
func (h *handler) applyTransaction(q *request, p *ptx, entries []*entry) error {
	byMethod := func(m string) []*entry {
		var out []*entry
		for _, e := range entries {
			if e.method == m {
				out = append(out, e)
			}
		}
		return out
	}
	deletes, posts, puts, gets := byMethod(http.MethodDelete), byMethod(http.MethodPost), byMethod(http.MethodPut), byMethod(http.MethodGet)
	patches := byMethod(http.MethodPatch)

	for _, e := range deletes {
		var err error
		if e.id != "" {
			e.result, err = remove(p, e.typ, e.id, e.ifMatch)
		} else {
			e.result, err = h.conditionalDelete(p, e.typ, e.query)
		}
		if err != nil {
			return entryError(e, err)
		}
	}

	// Decide every identity before writing anything, so that placeholders
	// can point forwards and backwards.
	ids := map[string]string{}
	for _, e := range posts {
		if e.ifNoneExist != "" {
			existing, err := h.conditionalMatch(p, e.typ, e.ifNoneExist, "ifNoneExist")
			if err != nil {
				return entryError(e, err)
			}
			if existing != nil {
				e.id = existing.ID
				e.result = &writeResult{Status: http.StatusOK, Rec: existing,
					Message: fmt.Sprintf("Resource %s/%s matched ifNoneExist; nothing created", e.typ, existing.ID)}
			}
		}
		if e.id == "" {
			e.id = newResourceID()
		}
		if e.fullURL != "" {
			ids[e.fullURL] = e.typ + "/" + e.id
		}
	}
	for _, e := range puts {
		if e.id == "" {
			id, err := h.conditionalUpdateID(p, e.typ, e.query, e.res)
			if err != nil {
				return entryError(e, err)
			}
			e.id = id
			e.res["id"] = id
		}
		if e.fullURL != "" {
			ids[e.fullURL] = e.typ + "/" + e.id
		}
	}

	for _, e := range patches {
		if e.fullURL != "" && e.id != "" {
			ids[e.fullURL] = e.typ + "/" + e.id
		}
		if e.id != "" {
			continue
		}
		id, err := h.conditionalPatchID(p, e.typ, e.query)
		if err != nil {
			return entryError(e, err)
		}
		e.id = id
		// Its target is known only now: no other entry may write it.
		for _, o := range entries {
			if o != e && o.method != http.MethodGet && o.typ == e.typ && o.id == id {
				return fhir.Errorf(http.StatusBadRequest, fhir.CodeDuplicate,
					"Bundle.entry[%d] and Bundle.entry[%d] both write %s/%s", o.index, e.index, e.typ, id)
			}
		}
		if e.fullURL != "" {
			ids[e.fullURL] = e.typ + "/" + e.id
		}
	}

	for _, e := range posts {
		if e.result != nil {
			continue // matched ifNoneExist
		}
		if err := h.resolveReferences(p, e.res, ids); err != nil {
			return entryError(e, err)
		}
		var err error
		if e.result, err = createWithID(p, e.typ, e.id, e.res); err != nil {
			return entryError(e, err)
		}
	}
	for _, e := range puts {
		if err := h.resolveReferences(p, e.res, ids); err != nil {
			return entryError(e, err)
		}
		var err error
		if e.result, err = update(p, e.typ, e.id, e.res, e.ifMatch); err != nil {
			return entryError(e, err)
		}
	}
	for _, e := range patches {
		var err error
		if e.result, err = h.patchResource(p, e.typ, e.id, e.patch, e.ifMatch, ids); err != nil {
			return entryError(e, err)
		}
	}
	for _, e := range gets {
		var err error
		if e.get, err = h.get(q, p, e); err != nil {
			return entryError(e, err)
		}
	}
	return nil
}

// batch processes each entry of a batch Bundle on its own: one entry's
// failure becomes its response.outcome and does not affect the others.
func (q *request) batch(in *inBundle) error {
	b := q.newBundle("batch-response")
	for i, raw := range in.Entry {
		e, err := q.parseEntry(i, raw)
		if err == nil {
			err = q.batchEntry(e)
		}
		if err != nil {
			if fe := fhir.AsError(err); fe.Status == http.StatusInternalServerError {
				return err
			}
			b.Entry = append(b.Entry, errorEntry(err))
			continue
		}
		b.Entry = append(b.Entry, q.responseEntry(e))
	}
	q.writeBundle(http.StatusOK, b)
	return nil
}

// batchEntry processes one batch entry in its own transaction.
func (q *request) batchEntry(e *entry) error {
	h := q.h
	if e.method == http.MethodGet {
		return h.db.view(q.part, func(p *ptx) error {
			var err error
			e.get, err = h.get(q, p, e)
			return err
		})
	}
	return h.db.update(q.part, func(p *ptx) error {
		var err error
		switch e.method {
		case http.MethodDelete:
			if e.id != "" {
				e.result, err = remove(p, e.typ, e.id, e.ifMatch)
			} else {
				e.result, err = h.conditionalDelete(p, e.typ, e.query)
			}
			return err
		case http.MethodPost:
			// Batch entries are independent: no placeholders to share.
			if err := h.resolveReferences(p, e.res, nil); err != nil {
				return err
			}
			e.result, err = h.create(p, e.typ, e.res, e.ifNoneExist)
			return err
		case http.MethodPatch:
			if e.id == "" {
				if e.id, err = h.conditionalPatchID(p, e.typ, e.query); err != nil {
					return err
				}
			}
			e.result, err = h.patchResource(p, e.typ, e.id, e.patch, e.ifMatch, nil)
			return err
		default: // PUT
			if e.id == "" {
				if e.id, err = h.conditionalUpdateID(p, e.typ, e.query, e.res); err != nil {
					return err
				}
				e.res["id"] = e.id
			}
			if err := h.resolveReferences(p, e.res, nil); err != nil {
				return err
			}
			e.result, err = update(p, e.typ, e.id, e.res, e.ifMatch)
			return err
		}
	})
}
