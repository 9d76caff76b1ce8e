package store

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"sync"

	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/fhir/fhirjson"
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

// writeBundle answers with a Bundle, written from a pooled buffer: a
// search page is tens of kilobytes, allocated (and cleared) anew for
// every search before, the largest allocation of an embedded gateway's
// search. The ResponseWriter, an io.Writer, keeps nothing of it.
func (q *request) writeBundle(status int, b *outBundle) {
	pooled := bundleBuffers.Get().(*[]byte)
	buf := b.appendJSON(slices.Grow((*pooled)[:0], b.sizeHint()))
	fhir.WriteBody(q.w, status, buf)
	if cap(buf) <= maxPooledBundle {
		*pooled = buf[:0]
		bundleBuffers.Put(pooled)
	}
}

// bundleBuffers keep writeBundle's buffers between answers.
var bundleBuffers = sync.Pool{New: func() any { return new([]byte) }}

// maxPooledBundle is the largest buffer kept (a page of a few hundred
// resources); a larger answer (an $everything, a long history) gets its
// own.
const maxPooledBundle = 1 << 20

// sizeHint is about the length of b's JSON: its resources' and a little
// for the rest of each entry.
func (b *outBundle) sizeHint() int {
	n := 256 + 128*len(b.Link)
	for i := range b.Entry {
		n += len(b.Entry[i].Resource) + len(b.Entry[i].FullURL) + 64
	}
	return n
}

// appendJSON appends b's JSON to buf: what encoding/json writes for the
// struct's tags, except that each resource's raw JSON is copied as it is.
// encoding/json re-validates and compacts every json.RawMessage and
// escapes "<", ">" and "&" in it: most of the cost of a search page, and
// a narrative's "<div>" would not go out as it was stored. What the store
// holds was checked when it was written (fhirjson.Check); an entry's
// resource built by the store is encoding/json's own output.
func (b *outBundle) appendJSON(buf []byte) []byte {
	buf = append(buf, `{"resourceType":`...)
	buf = fhirjson.AppendString(buf, b.ResourceType)
	if b.ID != "" {
		buf = append(buf, `,"id":`...)
		buf = fhirjson.AppendString(buf, b.ID)
	}
	if b.Meta != nil {
		buf = append(buf, `,"meta":{`...)
		if b.Meta.LastUpdated != "" {
			buf = append(buf, `"lastUpdated":`...)
			buf = fhirjson.AppendString(buf, b.Meta.LastUpdated)
		}
		buf = append(buf, '}')
	}
	buf = append(buf, `,"type":`...)
	buf = fhirjson.AppendString(buf, b.Type)
	if b.Total != nil {
		buf = append(buf, `,"total":`...)
		buf = strconv.AppendInt(buf, int64(*b.Total), 10)
	}
	if len(b.Link) > 0 {
		buf = append(buf, `,"link":[`...)
		for i, l := range b.Link {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = append(buf, `{"relation":`...)
			buf = fhirjson.AppendString(buf, l.Relation)
			buf = append(buf, `,"url":`...)
			buf = fhirjson.AppendString(buf, l.URL)
			buf = append(buf, '}')
		}
		buf = append(buf, ']')
	}
	if len(b.Entry) > 0 {
		buf = append(buf, `,"entry":[`...)
		for i := range b.Entry {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = b.Entry[i].appendJSON(buf)
		}
		buf = append(buf, ']')
	}
	return append(buf, '}')
}

// appendJSON appends e's JSON to buf, as outBundle.appendJSON does.
func (e *outEntry) appendJSON(buf []byte) []byte {
	buf = append(buf, '{')
	sep := func() {
		if buf[len(buf)-1] != '{' {
			buf = append(buf, ',')
		}
	}
	if e.FullURL != "" {
		buf = append(buf, `"fullUrl":`...)
		buf = fhirjson.AppendString(buf, e.FullURL)
	}
	if len(e.Resource) > 0 {
		sep()
		buf = append(buf, `"resource":`...)
		buf = append(buf, e.Resource...)
	}
	if e.Search != nil {
		sep()
		buf = append(buf, `"search":{"mode":`...)
		buf = fhirjson.AppendString(buf, e.Search.Mode)
		buf = append(buf, '}')
	}
	if e.Request != nil {
		sep()
		buf = append(buf, `"request":{"method":`...)
		buf = fhirjson.AppendString(buf, e.Request.Method)
		buf = append(buf, `,"url":`...)
		buf = fhirjson.AppendString(buf, e.Request.URL)
		buf = append(buf, '}')
	}
	if r := e.Response; r != nil {
		sep()
		buf = append(buf, `"response":{"status":`...)
		buf = fhirjson.AppendString(buf, r.Status)
		for _, m := range [...]struct{ name, value string }{
			{`,"location":`, r.Location}, {`,"etag":`, r.Etag}, {`,"lastModified":`, r.LastModified},
		} {
			if m.value != "" {
				buf = append(buf, m.name...)
				buf = fhirjson.AppendString(buf, m.value)
			}
		}
		if len(r.Outcome) > 0 {
			buf = append(buf, `,"outcome":`...)
			buf = append(buf, r.Outcome...)
		}
		buf = append(buf, '}')
	}
	return append(buf, '}')
}
