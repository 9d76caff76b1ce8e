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
	path, pathErr := parsePath(rest)

	// The CapabilityStatement is not partitioned.
	if pathErr == nil && path.Capabilities {
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
	if pathErr != nil {
		return pathErr
	}
	return req.route(path)
}

// parsePath parses the path below the base with fhir.ParsePath (a trailing
// "/" tolerated) and answers its errors: an unknown type is a 404 (FHIR's
// "resource type not supported"), an invalid id a 400, any other shape a
// 404.
func parsePath(rest string) (fhir.Path, error) {
	p, err := fhir.ParsePath(strings.Trim(rest, "/"))
	switch {
	case errors.Is(err, fhir.ErrUnknownType):
		return p, fhir.Errorf(http.StatusNotFound, fhir.CodeNotSupported, "%v", err)
	case errors.Is(err, fhir.ErrInvalidID):
		return p, fhir.Errorf(http.StatusBadRequest, fhir.CodeValue, "%v", err)
	case err != nil:
		return p, fhir.Errorf(http.StatusNotFound, fhir.CodeNotFound, "no FHIR interaction at %s", rest)
	}
	return p, nil
}

// route dispatches on the parsed path.
func (q *request) route(p fhir.Path) error {
	m := q.r.Method
	typ, id := p.Type, p.ID
	switch {
	case typ == "":
		switch {
		case p.History:
			return q.onlyGet(func() error { return q.history("", "") })
		case p.Operation == "$partition-management-create-partition":
			return q.onlyPost(q.createPartitionOp)
		case p.Operation == "$partition-management-delete-partition":
			return q.onlyPost(q.deletePartitionOp)
		case p.Operation == "$partition-management-list-partitions":
			return q.onlyGetOrPost(q.listPartitionsOp)
		case p.Operation == "$partition-management-read-partition":
			return q.onlyGetOrPost(q.readPartitionOp)
		case p.Operation != "" || p.Search:
			return fhir.Errorf(http.StatusNotFound, fhir.CodeNotFound, "no FHIR interaction at %s", q.r.URL.Path)
		}
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
	case id == "" && p.Search:
		// GET [type]/_search is the same search as GET [type] (the
		// gateway routes both).
		if m == http.MethodGet || m == http.MethodHead {
			return q.search(typ, q.r.URL.Query())
		}
		return q.onlyPost(func() error { return q.searchPost(typ) })
	case id == "" && p.History:
		return q.onlyGet(func() error { return q.history(typ, "") })
	case p.Operation == "$everything":
		if typ != "Patient" {
			return fhir.Errorf(http.StatusBadRequest, fhir.CodeNotSupported, "$everything is only supported on Patient")
		}
		return q.onlyGetOrPost(func() error { return q.everything(id) })
	case id == "" && p.Operation != "":
		return fhir.Errorf(http.StatusBadRequest, fhir.CodeNotSupported, "operation %s is not supported on %s", p.Operation, typ)
	case id == "":
		switch m {
		case http.MethodGet, http.MethodHead:
			return q.search(typ, q.r.URL.Query())
		case http.MethodPost:
			return q.create(typ)
		case http.MethodPut:
			return q.conditionalUpdate(typ)
		case http.MethodDelete:
			return q.conditionalDelete(typ)
		case http.MethodPatch:
			return q.conditionalPatch(typ)
		}
		return methodNotAllowed(q.r, "GET, POST, PUT, PATCH, DELETE")
	case p.Instance():
		switch m {
		case http.MethodGet, http.MethodHead:
			return q.read(typ, id)
		case http.MethodPut:
			return q.update(typ, id)
		case http.MethodDelete:
			return q.delete(typ, id)
		case http.MethodPatch:
			return q.patch(typ, id)
		}
		return methodNotAllowed(q.r, "GET, PUT, PATCH, DELETE")
	case p.History && p.VersionID != "":
		return q.onlyGet(func() error { return q.vread(typ, id, p.VersionID) })
	case p.History:
		return q.onlyGet(func() error { return q.history(typ, id) })
	case p.Compartment != "":
		return q.onlyGet(func() error { return q.compartmentSearch(typ, id, p.Compartment, q.r.URL.Query()) })
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
