package store

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/pfrgateway/caddy-pfr/fhir"
)

// outBundle is a Bundle this server answers with. Resources are kept as raw
// JSON so stored bytes go out unchanged.
type outBundle struct {
	ResourceType string     `json:"resourceType"`
	ID           string     `json:"id,omitempty"`
	Meta         *outMeta   `json:"meta,omitempty"`
	Type         string     `json:"type"`
	Total        *int       `json:"total,omitempty"`
	Link         []outLink  `json:"link,omitempty"`
	Entry        []outEntry `json:"entry,omitempty"`
}

type outMeta struct {
	LastUpdated string `json:"lastUpdated,omitempty"`
}

type outLink struct {
	Relation string `json:"relation"`
	URL      string `json:"url"`
}

type outEntry struct {
	FullURL  string          `json:"fullUrl,omitempty"`
	Resource json.RawMessage `json:"resource,omitempty"`
	Search   *outSearch      `json:"search,omitempty"`
	Request  *outRequest     `json:"request,omitempty"`
	Response *outResponse    `json:"response,omitempty"`
}

type outSearch struct {
	Mode string `json:"mode"`
}

type outRequest struct {
	Method string `json:"method"`
	URL    string `json:"url"`
}

type outResponse struct {
	Status       string          `json:"status"`
	Location     string          `json:"location,omitempty"`
	Etag         string          `json:"etag,omitempty"`
	LastModified string          `json:"lastModified,omitempty"`
	Outcome      json.RawMessage `json:"outcome,omitempty"`
}

// newBundle starts a Bundle of type typ with a fresh id.
func (q *request) newBundle(typ string) *outBundle {
	return &outBundle{ResourceType: "Bundle", ID: newID(), Type: typ,
		Meta: &outMeta{LastUpdated: instant(q.h.db.clock())}}
}

// resourceURL is the absolute URL of a resource.
func (q *request) resourceURL(typ, id string) string { return q.base + "/" + typ + "/" + id }

// statusLine renders "201 Created" as Bundle.entry.response.status.
func statusLine(code int) string { return strconv.Itoa(code) + " " + http.StatusText(code) }

// outcomeJSON renders an OperationOutcome for entry.response.outcome.
func outcomeJSON(oo *fhir.OperationOutcome) json.RawMessage {
	raw, _ := json.Marshal(oo)
	return raw
}

// writeBundle answers with a Bundle.
func (q *request) writeBundle(status int, b *outBundle) {
	fhir.WriteJSON(q.w, status, b)
}
