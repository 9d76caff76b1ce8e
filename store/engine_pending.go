package store

import (
	"net/http"
	"net/url"

	"github.com/pfrgateway/caddy-pfr/fhir"
)

// pendingEngine answers every search with 501 until package store/search is
// wired in (engine_search.go replaces this file).
type pendingEngine struct{}

func newSearchEngine() searchEngine { return pendingEngine{} }

func (pendingEngine) plan(string, url.Values, bool) (*searchPlan, error) {
	return nil, fhir.Errorf(http.StatusNotImplemented, fhir.CodeNotSupported, "search is not available yet")
}
func (pendingEngine) params(string) []searchParamInfo { return nil }
func (pendingEngine) includes(string) []string        { return nil }
func (pendingEngine) revIncludes(string) []string     { return nil }
