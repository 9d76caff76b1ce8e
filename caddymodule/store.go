package caddymodule

import (
	"fmt"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/store"
)

func init() {
	caddy.RegisterModule(Store{})
	httpcaddyfile.RegisterHandlerDirective("pfr_store", parseStoreCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("pfr_store", httpcaddyfile.Before, "reverse_proxy")
}

// Store is the embedded FHIR R4 server on bbolt: the default upstream of the
// gateway, partitioned the way HAPI FHIR partitions by request header.
//
// It answers every request it gets and never calls the next handler.
type Store struct {
	// Path of the bbolt database file. Default: `pfr-store.db` in Caddy's
	// data directory.
	Path string `json:"path,omitempty"`

	// Name of the request header that carries the numeric partition id, as
	// HAPI's RequestHeaderPartitionInterceptor reads it. Default:
	// `X-Request-Partition-IDs`.
	PartitionHeader string `json:"partition_header,omitempty"`

	// Path under which the FHIR API is served. Default: `/fhir`.
	BasePath string `json:"base_path,omitempty"`

	handler http.Handler
	poolKey string
}

// CaddyModule returns the Caddy module information.
func (Store) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.pfr_store",
		New: func() caddy.Module { return new(Store) },
	}
}

// Provision opens (or shares) the database and builds the FHIR handler.
func (s *Store) Provision(ctx caddy.Context) error {
	if s.Path == "" {
		s.Path = caddy.AppDataDir() + "/pfr-store.db"
	}
	logger := ctx.Logger()
	db, key, err := openStore(s.Path, func(format string, args ...any) { logger.Info(fmt.Sprintf(format, args...)) })
	if err != nil {
		return err
	}
	s.poolKey = key
	h, err := store.NewHandler(db, store.Config{
		BasePath: s.BasePath, PartitionHeader: s.PartitionHeader,
		OnInternalError: func(r *http.Request, err error) {
			if path, full := fhir.StorageFull(err); full {
				if path == "" {
					path = key
				}
				logger.Error("FHIR store: disk full, nothing written", zap.String("path", path),
					zap.String("method", r.Method), zap.String("uri", r.RequestURI), zap.Error(err))
				return
			}
			logger.Error("FHIR store error", zap.String("method", r.Method), zap.String("uri", r.RequestURI), zap.Error(err))
		},
	})
	if err != nil {
		return fmt.Errorf("pfr_store: %w", err)
	}
	s.handler = h
	logger.Info("embedded FHIR store ready", zap.String("path", key))
	return nil
}

// Cleanup releases the database; the last user closes it.
func (s *Store) Cleanup() error {
	return releaseStore(s.poolKey)
}

// ServeHTTP serves the FHIR API. The store is terminal: next is never called.
func (s *Store) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	s.handler.ServeHTTP(w, r)
	return nil
}

// UnmarshalCaddyfile sets up the store from Caddyfile tokens:
//
//	pfr_store {
//	    path             <file>
//	    partition_header <name>
//	    base_path        <path>
//	}
//
// The file is not taken as an argument: as the first argument of a
// directive, an absolute path would be read as a path matcher.
func (s *Store) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.Errf("pfr_store takes no arguments; set the database file with a 'path' line in its block")
	}
	for d.NextBlock(0) {
		var target *string
		switch d.Val() {
		case "path":
			target = &s.Path
		case "partition_header":
			target = &s.PartitionHeader
		case "base_path":
			target = &s.BasePath
		default:
			return d.Errf("unrecognized pfr_store option '%s'", d.Val())
		}
		if !d.NextArg() {
			return d.ArgErr()
		}
		*target = d.Val()
		if d.NextArg() {
			return d.ArgErr()
		}
	}
	return nil
}

func parseStoreCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	s := new(Store)
	err := s.UnmarshalCaddyfile(h.Dispenser)
	return s, err
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Store)(nil)
	_ caddy.CleanerUpper          = (*Store)(nil)
	_ caddyhttp.MiddlewareHandler = (*Store)(nil)
	_ caddyfile.Unmarshaler       = (*Store)(nil)
)
