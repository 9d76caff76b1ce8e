package gateway

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/pfrgateway/caddy-pfr/backend"
)

func TestCheckFormat(t *testing.T) {
	cases := []struct {
		target, accept string
		want           int // 0: accepted
	}{
		{"/Observation", "", 0},
		{"/Observation", "application/fhir+json", 0},
		{"/Observation", "application/json", 0},
		{"/Observation", "application/json+fhir;q=0.9", 0},
		{"/Observation", "*/*", 0},
		{"/Observation", "text/html, application/xhtml+xml, */*;q=0.8", 0},
		{"/Observation", "application/fhir+xml, application/fhir+json;q=0.5", 0},
		{"/Observation", "application/fhir+xml", 406},
		{"/Observation", "application/xml+fhir", 406},
		{"/Observation", "application/xml", 406},
		{"/Observation", "text/turtle", 406},
		{"/Observation", "application/fhir+xml, application/fhir+json;q=0", 406},
		// One plain media type: the fast path answers as mime.ParseMediaType would.
		{"/Observation", " APPLICATION/FHIR+JSON ", 0},
		{"/Observation", "text/json", 0},
		{"/Observation", "application/*", 0},
		{"/Observation", "json", 0},
		{"/Observation", "json/", 406},
		{"/Observation", "application/fhir+json;q=0", 406},
		{"/Observation?_format=json", "", 0},
		{"/Observation?_format=application/fhir%2Bjson", "", 0},
		{"/Observation?_format=xml", "", 406},
		{"/Observation?_format=application/fhir%2Bxml", "application/fhir+json", 406},
		{"/Observation?_format=ttl", "", 406},
		{"/Patient/p1?_format=xml", "", 406},
		// A Binary's own content: its media type, not a FHIR format.
		{"/Binary/b1", "application/pdf", 0},
		{"/Binary/b1", "image/png, image/*", 0},
		{"/Binary/b1", "application/fhir+xml", 406},
		{"/Binary/b1?_format=xml", "application/pdf", 406},
		// Elsewhere a content type is no FHIR format.
		{"/Observation/o1", "application/pdf", 406},
	}
	for _, c := range cases {
		u, _ := url.Parse(c.target)
		in, err := classify(http.MethodGet, u.Path, u.Query())
		if err != nil {
			t.Fatalf("%s: %v", c.target, err)
		}
		r := httptest.NewRequest(http.MethodGet, "https://john.pfr.example/fhir"+c.target, nil)
		if c.accept != "" {
			r.Header.Set("Accept", c.accept)
		}
		err = checkFormat(r, in)
		switch {
		case c.want == 0 && err != nil:
			t.Errorf("%s Accept %q: refused: %v", c.target, c.accept, err)
		case c.want != 0 && (err == nil || !strings.Contains(err.Error(), "JSON only")):
			t.Errorf("%s Accept %q: want %d, got %v", c.target, c.accept, c.want, err)
		}
	}
}

func TestAskJSON(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "http://up/fhir/Observation?code=a%2Cb&_format=xml&%5Fformat=ttl&_count=5", nil)
	r.Header.Set("Accept", "application/fhir+xml")
	askJSON(r, false)
	if got := r.URL.RawQuery; got != "code=a%2Cb&_count=5" {
		t.Errorf("query: %q", got)
	}
	if got := r.Header.Get("Accept"); got != "application/fhir+json" {
		t.Errorf("Accept: %q", got)
	}
	raw := httptest.NewRequest(http.MethodGet, "http://up/fhir/Binary/b1", nil)
	raw.Header.Set("Accept", "application/pdf")
	askJSON(raw, true)
	if got := raw.Header.Get("Accept"); got != "application/pdf" {
		t.Errorf("a Binary's content read: Accept %q", got)
	}
}

// TestFilterRefusesWhatItCannotRead: an upstream answer the response
// filter cannot read (XML, a content coding) is never shown unchecked.
func TestFilterRefusesWhatItCannotRead(t *testing.T) {
	const secret = "<Bundle><entry><resource><Observation><id value=\"bob-1\"/></Observation></resource></entry></Bundle>"
	type answer struct {
		status   int
		ct, ce   string
		body     string
		single   bool
		write    bool
		raw      bool
		want     int
		wantBody string // a substring the client gets
	}
	cases := map[string]answer{
		"XML search":              {status: 200, ct: "application/fhir+xml", body: secret, want: 502, wantBody: "cannot check"},
		"XML read":                {status: 200, ct: "application/fhir+xml", body: secret, single: true, want: 502, wantBody: "cannot check"},
		"no content type":         {status: 200, body: `{"resourceType":"Bundle"}`, want: 502},
		"gzip-coded JSON":         {status: 200, ct: "application/fhir+json", ce: "gzip", body: "\x1f\x8b\x08", want: 502},
		"XML answer to a create":  {status: 201, ct: "application/fhir+xml", body: secret, single: true, write: true, want: 502},
		"empty 201 (minimal)":     {status: 201, single: true, write: true, want: 201},
		"a Binary's content":      {status: 200, ct: "application/pdf", body: "%PDF-1.7", single: true, raw: true, want: 200, wantBody: "%PDF"},
		"an error page passes on": {status: 404, ct: "text/html", body: "<html>gone</html>", want: 404},
	}
	for name, c := range cases {
		rec := httptest.NewRecorder()
		f := &filteringWriter{w: rec, log: zap.NewNop(), record: "rec1", limit: 1 << 20, single: c.single, write: c.write, raw: c.raw,
			keep: func(map[string]any) bool { return true }}
		rw := backend.NewResponseRewriter(f, []string{"http://up/fhir"}, "https://john.pfr.example/fhir")
		if c.ct != "" {
			rw.Header().Set("Content-Type", c.ct)
		}
		if c.ce != "" {
			rw.Header().Set("Content-Encoding", c.ce)
		}
		rw.Header().Set("Location", "http://up/fhir/Observation/bob-1")
		rw.WriteHeader(c.status)
		_, _ = rw.Write([]byte(c.body))
		if err := rw.Close(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := f.Close(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if rec.Code != c.want {
			t.Errorf("%s: status %d, want %d (%s)", name, rec.Code, c.want, rec.Body.String())
		}
		if c.want == 502 {
			if strings.Contains(rec.Body.String(), "bob-1") || rec.Header().Get("Location") != "" {
				t.Errorf("%s: the unchecked answer leaked: %q %v", name, rec.Body.String(), rec.Header())
			}
			var oo map[string]any
			if json.Unmarshal(rec.Body.Bytes(), &oo) != nil || oo["resourceType"] != "OperationOutcome" {
				t.Errorf("%s: not an OperationOutcome: %s", name, rec.Body.String())
			}
		}
		if c.wantBody != "" && !strings.Contains(rec.Body.String(), c.wantBody) {
			t.Errorf("%s: body %q lacks %q", name, rec.Body.String(), c.wantBody)
		}
	}
}

func TestCapabilitiesNameJSONOnly(t *testing.T) {
	upstream := `{"resourceType":"CapabilityStatement","status":"active","format":["application/fhir+xml","xml","application/fhir+json","json"]}`
	var cs struct{ Format []string }
	if err := json.Unmarshal(adaptCapabilities([]byte(upstream), nil, "https://john.pfr.example/fhir"), &cs); err != nil {
		t.Fatal(err)
	}
	if strings.Join(cs.Format, ",") != "application/fhir+json,json" {
		t.Errorf("format: %v", cs.Format)
	}
}
