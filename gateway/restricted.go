package gateway

import (
	"encoding/json"
	"net/http"
	"net/url"

	"go.uber.org/zap"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/backend"
	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/fhir/search"
)

// proxyRestrictedRead serves a read that only a query-restricted scope
// (e.g. patient/Observation.rs?category=laboratory) might allow: it fetches
// the resource, evaluates the restriction on it with the search engine, and
// answers with the resource or a 403.
func (g *Gateway) proxyRestrictedRead(w http.ResponseWriter, rq *request) error {
	in, rec := rq.in, rq.rec
	out, route, err := g.outbound(rq, rawBinary(rq.r, in))
	if err != nil {
		return err
	}
	res, err := call(rq.up, out)
	if err != nil {
		g.log.Warn("upstream failed", zap.String("record", rec.ID), zap.Error(err))
		return upstreamError(err)
	}
	req := auth.Request{Interaction: in.kind, ResourceType: in.typ}
	if res.status == http.StatusOK {
		var resource map[string]any
		if json.Unmarshal(res.body.Bytes(), &resource) != nil || resource["resourceType"] != in.typ {
			return fhir.Errorf(http.StatusBadGateway, fhir.CodeException, "the upstream answered the read with something else than a %s", in.typ)
		}
		if g.iso.filters() && !g.keeper(rq)(resource) {
			return fhir.Errorf(http.StatusNotFound, fhir.CodeNotFound, "no such resource in this record")
		}
		ok, missing := rq.grants.AllowsWith(req, func(restriction url.Values) bool {
			q, err := search.Parse(in.typ, restriction, true)
			return err == nil && q.Match(resource)
		})
		if !ok {
			return insufficientScope(rq.base, missing)
		}
	} else {
		// Errors (404, 410) tell nothing about the content; say them only
		// to a caller who could read the resource if it existed.
		if ok, missing := rq.grants.AllowsWith(req, func(url.Values) bool { return true }); !ok {
			return insufficientScope(rq.base, missing)
		}
	}
	for k, vs := range res.header {
		w.Header()[k] = vs
	}
	w.Header().Del("Content-Length")
	rw := backend.NewResponseRewriter(w, route.UpstreamBases, rq.base)
	rw.WriteHeader(res.status)
	_, _ = rw.Write(res.body.Bytes())
	return rw.Close()
}
