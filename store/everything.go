package store

import (
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"

	"github.com/pfrgateway/caddy-pfr/fhir"
)

// everything answers Patient/{id}/$everything (id "" for Patient/$everything):
// the patients, every resource in their compartments, and the resources
// those reference, paged like a search.
func (q *request) everything(id string) error {
	count, err := pageSize(q.r.URL.Query())
	if err != nil {
		return err
	}
	var refs []string
	err = q.h.db.view(q.part, func(p *ptx) error {
		var patients []string
		if id != "" {
			if _, err := p.live("Patient", id); err != nil {
				return err
			}
			patients = []string{id}
		} else if err := p.scanCurrent("Patient", func(pid string, _ []byte) error {
			patients = append(patients, pid)
			return nil
		}); err != nil {
			return err
		}
		refs, err = q.h.compartment(p, patients, &q.unreadable)
		return err
	})
	if err != nil {
		return err
	}

	total := len(refs)
	b := q.newBundle("searchset")
	b.Total = &total
	b.Link = []outLink{{Relation: "self", URL: q.base + trimBase(q.h.cfg.BasePath, q.r.URL.Path) + queryString(q.r.URL.Query())}}
	if total > count {
		searchID, err := q.h.db.saveSnapshot(&searchSnapshot{Partition: q.part, Kind: snapshotSearch, Refs: packRefs(refs)})
		if err != nil {
			return err
		}
		b.Link = append(b.Link, outLink{Relation: "next", URL: q.snapshotLink(searchID, snapshotSearch, count, count)})
	}
	if err := q.fillPage(b, refs[:min(count, total)], nil); err != nil {
		return err
	}
	q.writeBundle(http.StatusOK, b)
	return nil
}

// compartment returns the patients, the resources in their compartments
// (by the official CompartmentDefinition's parameters) and what those
// reference, as "Type/id" in a stable order: patients first, then by type
// and id.
func (h *handler) compartment(p *ptx, patients []string, skip *unreadable) ([]string, error) {
	seen := map[string]bool{}
	var members []string
	add := func(ref string) {
		if !seen[ref] {
			seen[ref] = true
			members = append(members, ref)
		}
	}
	for _, pid := range patients {
		add("Patient/" + pid)
	}
	types := p.types()
	sort.Strings(types)
	for _, typ := range types {
		params := patientCompartmentParams[typ]
		if typ == "Patient" {
			continue // Patient.link is about other patients, not content
		}
		var ids []string
		for _, param := range params {
			for _, pid := range patients {
				plan, err := h.engine.plan(typ, url.Values{param: {"Patient/" + pid}}, false)
				if err != nil {
					return nil, err
				}
				if len(plan.unknown) > 0 {
					break // a parameter the engine cannot evaluate
				}
				found, err := run(p, typ, plan, skip)
				if err != nil {
					return nil, err
				}
				ids = append(ids, found.bareAll()...)
			}
		}
		slices.Sort(ids)
		ids = slices.Compact(ids)
		for _, id := range ids {
			add(typ + "/" + id)
		}
	}

	// What the compartment references, and what those reference, to any
	// depth within the partition (as HAPI does): a Practitioner reached
	// only through a PractitionerRole, an Organization only through
	// partOf. Patients reached this way are not followed: another
	// person's record is not this one's $everything.
	var referenced []string
	queue := slices.Clone(members)
	for len(queue) > 0 {
		ref := queue[0]
		queue = queue[1:]
		typ, id, _ := strings.Cut(ref, "/")
		rec, err := p.current(typ, id)
		if err != nil {
			return nil, err
		}
		if rec == nil || rec.Deleted {
			continue
		}
		res, err := decodeForSearch(rec.Body)
		if err != nil {
			skip.add(ref, err)
			continue
		}
		_ = rewriteReferences(res, func(target string) (string, error) {
			t, tid, ok := strings.Cut(target, "/")
			if ok && fhir.IsResourceType(t) && t != "Patient" && fhir.IsID(tid) && !seen[target] {
				if cur, err := p.current(t, tid); err == nil && cur != nil && !cur.Deleted {
					seen[target] = true
					referenced = append(referenced, target)
					queue = append(queue, target)
				}
			}
			return target, nil
		})
	}
	sort.Strings(referenced)
	return append(members, referenced...), nil
}
