package store

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/pfrgateway/caddy-pfr/fhir"
)

// Config configures NewHandler.
type Config struct {
	// BasePath is the path of the FHIR base. Default "/fhir".
	BasePath string
	// PartitionHeader names the header that carries the partition id.
	// Default "X-Request-Partition-IDs", as in HAPI.
	PartitionHeader string
	// OnInternalError, if set, is called with the cause of every 5xx
	// answer; clients only see a generic OperationOutcome.
	OnInternalError func(r *http.Request, err error)
}

// handler serves the FHIR REST API over one DB.
type handler struct {
	db     *DB
	cfg    Config
	engine searchEngine
}

// NewHandler returns the FHIR HTTP API over db. Many handlers may share one DB.
func NewHandler(db *DB, cfg Config) (http.Handler, error) {
	return newHandler(db, cfg, newSearchEngine())
}

// newHandler is NewHandler with an explicit search engine.
func newHandler(db *DB, cfg Config, engine searchEngine) (*handler, error) {
	if db == nil {
		return nil, errors.New("store handler: nil DB")
	}
	if cfg.BasePath == "" {
		cfg.BasePath = "/fhir"
	}
	if !strings.HasPrefix(cfg.BasePath, "/") {
		return nil, fmt.Errorf("store handler: base path %q must start with /", cfg.BasePath)
	}
	cfg.BasePath = strings.TrimRight(cfg.BasePath, "/")
	if cfg.PartitionHeader == "" {
		cfg.PartitionHeader = "X-Request-Partition-IDs"
	}
	return &handler{db: db, cfg: cfg, engine: engine}, nil
}

// request is one HTTP request being served.
type request struct {
	h    *handler
	w    http.ResponseWriter
	r    *http.Request
	part string // partition key
	base string // absolute FHIR base URL, no trailing slash
	// unreadable collects stored resources left out of the answer.
	unreadable unreadable
}

// ServeHTTP implements http.Handler.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := h.serve(w, r); err != nil {
		if fe := fhir.AsError(err); fe.Status >= http.StatusInternalServerError && h.cfg.OnInternalError != nil {
			h.cfg.OnInternalError(r, err)
		}
		fhir.WriteError(w, err)
	}
}

func (h *handler) serve(w http.ResponseWriter, r *http.Request) error {
	rest, ok := strings.CutPrefix(r.URL.Path, h.cfg.BasePath)
	if !ok || (rest != "" && !strings.HasPrefix(rest, "/")) {
		return fhir.Errorf(http.StatusNotFound, fhir.CodeNotFound, "%s is not under the FHIR base %s", r.URL.Path, h.cfg.BasePath)
	}
	if err := negotiate(r); err != nil {
		return err
	}
	req := &request{h: h, w: w, r: r, base: h.baseURL(r)}
	segs := splitPath(rest)

	// The CapabilityStatement is not partitioned.
	if len(segs) == 1 && segs[0] == "metadata" {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			return methodNotAllowed(r, "GET")
		}
		return req.capabilities()
	}

	part, err := parsePartitionHeader(h.cfg.PartitionHeader, r.Header.Values(h.cfg.PartitionHeader))
	if err != nil {
		return err
	}
	req.part = part
	return req.route(segs)
}

// route dispatches on the path segments after the base.
func (q *request) route(segs []string) error {
	m := q.r.Method
	switch len(segs) {
	case 0:
		switch m {
		case http.MethodPost:
			return q.bundle()
		case http.MethodGet:
			if q.r.URL.Query().Has("_getpages") {
				return q.page()
			}
			return fhir.Errorf(http.StatusBadRequest, fhir.CodeNotSupported, "search across all resource types is not supported: search one type, e.g. %s/Observation?…", q.h.cfg.BasePath)
		}
		return methodNotAllowed(q.r, "GET, POST")
	case 1:
		s := segs[0]
		switch {
		case s == "_history":
			return q.onlyGet(func() error { return q.history("", "") })
		case s == "$partition-management-create-partition":
			return q.onlyPost(q.createPartitionOp)
		case s == "$partition-management-delete-partition":
			return q.onlyPost(q.deletePartitionOp)
		case s == "$partition-management-list-partitions":
			return q.onlyGetOrPost(q.listPartitionsOp)
		case s == "$partition-management-read-partition":
			return q.onlyGetOrPost(q.readPartitionOp)
		}
		typ, err := resourceTypeSegment(s)
		if err != nil {
			return err
		}
		switch m {
		case http.MethodGet, http.MethodHead:
			return q.search(typ, q.r.URL.Query())
		case http.MethodPost:
			return q.create(typ)
		case http.MethodPut:
			return q.conditionalUpdate(typ)
		case http.MethodDelete:
			return q.conditionalDelete(typ)
		}
		return methodNotAllowed(q.r, "GET, POST, PUT, DELETE")
	case 2:
		typ, err := resourceTypeSegment(segs[0])
		if err != nil {
			return err
		}
		switch segs[1] {
		case "_search":
			// GET [type]/_search is the same search as GET [type] (the
			// gateway routes both).
			if m == http.MethodGet || m == http.MethodHead {
				return q.search(typ, q.r.URL.Query())
			}
			return q.onlyPost(func() error { return q.searchPost(typ) })
		case "_history":
			return q.onlyGet(func() error { return q.history(typ, "") })
		case "$everything":
			if typ != "Patient" {
				return fhir.Errorf(http.StatusBadRequest, fhir.CodeNotSupported, "$everything is only supported on Patient")
			}
			return q.onlyGetOrPost(func() error { return q.everything("") })
		}
		if strings.HasPrefix(segs[1], "$") {
			return fhir.Errorf(http.StatusBadRequest, fhir.CodeNotSupported, "operation %s is not supported on %s", segs[1], typ)
		}
		id, err := idSegment(segs[1])
		if err != nil {
			return err
		}
		switch m {
		case http.MethodGet, http.MethodHead:
			return q.read(typ, id)
		case http.MethodPut:
			return q.update(typ, id)
		case http.MethodDelete:
			return q.delete(typ, id)
		}
		return methodNotAllowed(q.r, "GET, PUT, DELETE")
	case 3:
		typ, err := resourceTypeSegment(segs[0])
		if err != nil {
			return err
		}
		id, err := idSegment(segs[1])
		if err != nil {
			return err
		}
		switch segs[2] {
		case "_history":
			return q.onlyGet(func() error { return q.history(typ, id) })
		case "$everything":
			if typ != "Patient" {
				return fhir.Errorf(http.StatusBadRequest, fhir.CodeNotSupported, "$everything is only supported on Patient")
			}
			return q.onlyGetOrPost(func() error { return q.everything(id) })
		}
		if !strings.HasPrefix(segs[2], "$") {
			return q.onlyGet(func() error { return q.compartmentSearch(typ, id, segs[2], q.r.URL.Query()) })
		}
	case 4:
		if segs[2] != "_history" {
			break
		}
		typ, err := resourceTypeSegment(segs[0])
		if err != nil {
			return err
		}
		id, err := idSegment(segs[1])
		if err != nil {
			return err
		}
		return q.onlyGet(func() error { return q.vread(typ, id, segs[3]) })
	}
	return fhir.Errorf(http.StatusNotFound, fhir.CodeNotFound, "no FHIR interaction at %s", q.r.URL.Path)
}

func (q *request) onlyGet(fn func() error) error {
	if q.r.Method != http.MethodGet && q.r.Method != http.MethodHead {
		return methodNotAllowed(q.r, "GET")
	}
	return fn()
}

func (q *request) onlyPost(fn func() error) error {
	if q.r.Method != http.MethodPost {
		return methodNotAllowed(q.r, "POST")
	}
	return fn()
}

func (q *request) onlyGetOrPost(fn func() error) error {
	if q.r.Method != http.MethodGet && q.r.Method != http.MethodHead && q.r.Method != http.MethodPost {
		return methodNotAllowed(q.r, "GET, POST")
	}
	return fn()
}

// methodNotAllowed is the 405 OperationOutcome with its Allow header.
func methodNotAllowed(r *http.Request, allow string) error {
	return fhir.Errorf(http.StatusMethodNotAllowed, fhir.CodeNotSupported, "method %s is not allowed on %s", r.Method, r.URL.Path).
		WithHeader("Allow", allow)
}

// splitPath splits "/a/b/" into ["a","b"].
func splitPath(p string) []string {
	p = strings.Trim(p, "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

// resourceTypeSegment checks a path segment names a resource type.
func resourceTypeSegment(s string) (string, error) {
	if !isResourceType(s) {
		return "", fhir.Errorf(http.StatusNotFound, fhir.CodeNotSupported, "unknown resource type %q", s)
	}
	return s, nil
}

// idSegment checks a path segment is a FHIR id.
func idSegment(s string) (string, error) {
	if !validID(s) {
		return "", fhir.Errorf(http.StatusBadRequest, fhir.CodeValue, "invalid resource id %q: ids match [A-Za-z0-9-.]{1,64}", s)
	}
	return s, nil
}

// baseURL is the absolute FHIR base the client addressed.
func (h *handler) baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if p := r.Header.Get("X-Forwarded-Proto"); p == "http" || p == "https" {
		scheme = p
	}
	return scheme + "://" + r.Host + h.cfg.BasePath
}
