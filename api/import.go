package api

import (
	"net/http"

	"github.com/pfrgateway/caddy-pfr/tenancy"
)

// importRecord resolves the record of an import request: owners and
// managers only.
func (a *API) importRecord(r *http.Request, c *Call) func() (*tenancy.Record, error) {
	return func() (*tenancy.Record, error) {
		return a.managedRecord(r, c, "only owners and managers import into a record")
	}
}

// startImport answers POST /pfr/v1/records/{slug}/import: the pipeline
// stores the upload with an import job (gateway.Gateway.StartImport).
func (a *API) startImport(w http.ResponseWriter, r *http.Request, c *Call) error {
	return a.gw.StartImport(w, r, c.ID, a.importRecord(r, c))
}

// importStatus answers GET /pfr/v1/records/{slug}/import/{job}.
func (a *API) importStatus(w http.ResponseWriter, r *http.Request, c *Call) error {
	return a.gw.ImportStatus(w, r, c.ID, a.importRecord(r, c), r.PathValue("job"))
}
