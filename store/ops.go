package store

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mathrand "math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pfrgateway/caddy-pfr/fhir"
)

// writeResult is what a write interaction did.
type writeResult struct {
	// Status is the HTTP status of the interaction (200, 201).
	Status int
	// Rec is the resulting current version (a tombstone after a delete);
	// nil when a delete found nothing to delete.
	Rec *record
	// Message is the informational diagnostics for Prefer: return=OperationOutcome
	// and for delete responses.
	Message string
}

// uuidString spells b as a UUID: lower-case hex in 8-4-4-4-12 groups.
func uuidString(b [16]byte) string {
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// newID returns a random id (a Bundle's, a paging snapshot's; a created
// resource's is newResourceID): 128 random bits as hex in UUID layout,
// which never collides with client-assigned ids in practice.
func newID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return uuidString(b)
}

// newResourceID returns the id of a resource the server creates: a UUID
// of version 7 (RFC 9562): the time in Unix milliseconds, a 12-bit
// counter and 62 random bits, as lower-case hex in UUID layout. Ids this
// process assigns rise strictly in byte order (within a millisecond the
// counter counts on; a clock that goes back is not followed), which is
// what the store's indexes are ordered by after a key's value: the keys
// a transaction adds to one value's run land side by side at the run's
// end (a few leaves, not one leaf per key), and resources written close
// in time (a sensor's last day) are neighbours in every run, so a search
// for them steps through its lookups instead of seeking each. Other ids
// (Bundles, paging snapshots) stay random (newID).
func newResourceID() string {
	lastResourceID.Lock()
	ms := max(time.Now().UnixMilli(), lastResourceID.ms)
	seq := lastResourceID.seq + 1
	if ms != lastResourceID.ms {
		seq = uint16(mathrand.IntN(1 << 11)) // a random start, room to count
	}
	if seq >= 1<<12 { // the counter is full: on to the next millisecond
		ms, seq = ms+1, uint16(mathrand.IntN(1<<11))
	}
	lastResourceID.ms, lastResourceID.seq = ms, seq
	lastResourceID.Unlock()
	var b [16]byte
	if _, err := rand.Read(b[8:]); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	for i := range 6 {
		b[i] = byte(uint64(ms) >> (40 - 8*i))
	}
	b[6] = 0x70 | byte(seq>>8)
	b[7] = byte(seq)
	b[8] = b[8]&0x3f | 0x80
	return uuidString(b)
}

// lastResourceID is the time and counter of the id newResourceID gave
// last.
var lastResourceID struct {
	sync.Mutex
	ms  int64
	seq uint16
}

// parseIfMatch reads an If-Match value: W/"3", "3" or 3.
func parseIfMatch(v string) (uint64, error) {
	s := strings.TrimSpace(v)
	s = strings.TrimPrefix(s, "W/")
	s = strings.Trim(s, `"`)
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n == 0 {
		return 0, fhir.Errorf(http.StatusBadRequest, fhir.CodeValue, "invalid If-Match %q: expected W/\"<versionId>\"", v)
	}
	return n, nil
}

// checkBodyType checks that the resource posted to typ is a typ.
func checkBodyType(res resource, typ string) error {
	if res.Type() != typ {
		return fhir.Errorf(http.StatusBadRequest, fhir.CodeInvalid,
			"resource type %s in the body does not match %s in the URL", res.Type(), typ).WithExpression("resourceType")
	}
	return nil
}

// createWithID stores res as a new resource typ/id.
func createWithID(p *ptx, typ, id string, res resource) (*writeResult, error) {
	rec, err := p.write(typ, id, res, nil)
	if err != nil {
		return nil, err
	}
	return &writeResult{Status: http.StatusCreated, Rec: rec,
		Message: fmt.Sprintf("Successfully created resource %s/%s/_history/%d", typ, id, rec.Version)}, nil
}

// create implements create and conditional create (If-None-Exist).
func (h *handler) create(p *ptx, typ string, res resource, ifNoneExist string) (*writeResult, error) {
	if ifNoneExist != "" {
		existing, err := h.conditionalMatch(p, typ, ifNoneExist, "If-None-Exist")
		if err != nil {
			return nil, err
		}
		if existing != nil {
			return &writeResult{Status: http.StatusOK, Rec: existing,
				Message: fmt.Sprintf("Resource %s/%s matched If-None-Exist; nothing created", typ, existing.ID)}, nil
		}
	}
	return createWithID(p, typ, newResourceID(), res)
}

// conditionalMatch resolves a conditional create: no match (nil), exactly
// one (its record) or several (412).
func (h *handler) conditionalMatch(p *ptx, typ, query, what string) (*record, error) {
	// Accept "identifier=x" and, as some clients send it, "Patient?identifier=x".
	if _, after, ok := strings.Cut(query, "?"); ok {
		query = after
	}
	params, err := url.ParseQuery(query)
	if err != nil || len(params) == 0 {
		return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeInvalid, "invalid %s query %q", what, query)
	}
	ids, err := h.matchIDs(p, typ, params)
	if err != nil {
		return nil, err
	}
	switch len(ids) {
	case 0:
		return nil, nil
	case 1:
		return p.live(typ, ids[0])
	default:
		return nil, fhir.Errorf(http.StatusPreconditionFailed, fhir.CodeDuplicate,
			"%s %q matches %d %s resources; at most one may match", what, query, len(ids), typ)
	}
}

// update implements update and create-on-update of typ/id.
func update(p *ptx, typ, id string, res resource, ifMatch string) (*writeResult, error) {
	if err := checkBodyType(res, typ); err != nil {
		return nil, err
	}
	switch bodyID := res.ID(); {
	case bodyID == "":
		return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeRequired,
			"the resource to update must contain an id (expected %q)", id).WithExpression(typ + ".id")
	case bodyID != id:
		return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeInvalid,
			"resource id %q in the body does not match id %q in the URL", bodyID, id).WithExpression(typ + ".id")
	}
	prev, err := p.current(typ, id)
	if err != nil {
		return nil, err
	}
	if ifMatch != "" {
		want, err := parseIfMatch(ifMatch)
		if err != nil {
			return nil, err
		}
		if prev == nil || prev.Deleted {
			return nil, fhir.Errorf(http.StatusPreconditionFailed, fhir.CodeConflict,
				"If-Match %s: resource %s/%s does not exist", ifMatch, typ, id)
		}
		if prev.Version != want {
			return nil, fhir.Errorf(http.StatusPreconditionFailed, fhir.CodeConflict,
				"If-Match %s: %s/%s is at version %d", ifMatch, typ, id, prev.Version)
		}
	}
	rec, err := p.write(typ, id, res, prev)
	if err != nil {
		return nil, err
	}
	if prev == nil || prev.Deleted {
		return &writeResult{Status: http.StatusCreated, Rec: rec,
			Message: fmt.Sprintf("Successfully created resource %s/%s/_history/%d", typ, id, rec.Version)}, nil
	}
	return &writeResult{Status: http.StatusOK, Rec: rec,
		Message: fmt.Sprintf("Successfully updated resource %s/%s/_history/%d", typ, id, rec.Version)}, nil
}

// conditionalUpdateID picks the id a conditional update writes: the one
// match, the body's id (or a new one) when nothing matches, 412 when
// several match.
func (h *handler) conditionalUpdateID(p *ptx, typ, query string, res resource) (string, error) {
	params, err := url.ParseQuery(query)
	if err != nil || len(params) == 0 {
		return "", fhir.Errorf(http.StatusBadRequest, fhir.CodeInvalid, "conditional update needs search criteria in the URL (%s?…)", typ)
	}
	ids, err := h.matchIDs(p, typ, params)
	if err != nil {
		return "", err
	}
	switch len(ids) {
	case 0:
		if id := res.ID(); id != "" {
			return id, nil
		}
		return newResourceID(), nil
	case 1:
		if id := res.ID(); id != "" && id != ids[0] {
			return "", fhir.Errorf(http.StatusBadRequest, fhir.CodeInvalid,
				"resource id %q in the body does not match %s/%s found by the conditional update", id, typ, ids[0])
		}
		return ids[0], nil
	default:
		return "", fhir.Errorf(http.StatusPreconditionFailed, fhir.CodeDuplicate,
			"conditional update %s?%s matches %d resources; at most one may match", typ, query, len(ids))
	}
}

// remove implements delete: a tombstone version; deleting what is already
// gone is a no-op success, as in HAPI. ifMatch, when set, must name the
// current version.
func remove(p *ptx, typ, id, ifMatch string) (*writeResult, error) {
	prev, err := p.current(typ, id)
	if err != nil {
		return nil, err
	}
	if ifMatch != "" {
		want, err := parseIfMatch(ifMatch)
		if err != nil {
			return nil, err
		}
		if prev == nil || prev.Deleted || prev.Version != want {
			return nil, fhir.Errorf(http.StatusPreconditionFailed, fhir.CodeConflict,
				"If-Match %s does not match the current version of %s/%s", ifMatch, typ, id)
		}
	}
	if prev == nil {
		return &writeResult{Status: http.StatusOK,
			Message: fmt.Sprintf("Resource %s/%s does not exist; nothing deleted", typ, id)}, nil
	}
	if prev.Deleted {
		return &writeResult{Status: http.StatusOK, Rec: prev,
			Message: fmt.Sprintf("Resource %s/%s was already deleted; nothing deleted", typ, id)}, nil
	}
	rec, err := p.write(typ, id, nil, prev)
	if err != nil {
		return nil, err
	}
	return &writeResult{Status: http.StatusOK, Rec: rec,
		Message: fmt.Sprintf("Successfully deleted %s/%s (version %d)", typ, id, rec.Version)}, nil
}

// conditionalDelete deletes the resources of typ matching query: none is a
// no-op, one is deleted, several is 412 (single-match conditional delete).
func (h *handler) conditionalDelete(p *ptx, typ, query string) (*writeResult, error) {
	params, err := url.ParseQuery(query)
	if err != nil || len(params) == 0 {
		return nil, fhir.Errorf(http.StatusBadRequest, fhir.CodeInvalid, "conditional delete needs search criteria in the URL (%s?…)", typ)
	}
	ids, err := h.matchIDs(p, typ, params)
	if err != nil {
		return nil, err
	}
	switch len(ids) {
	case 0:
		return &writeResult{Status: http.StatusOK,
			Message: fmt.Sprintf("No %s matches %s; nothing deleted", typ, query)}, nil
	case 1:
		return remove(p, typ, ids[0], "")
	default:
		return nil, fhir.Errorf(http.StatusPreconditionFailed, fhir.CodeDuplicate,
			"conditional delete %s?%s matches %d resources; at most one may match", typ, query, len(ids))
	}
}
