package gateway

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// TestOwnSearchesBypassUpstreamCache: the searches the gateway makes for
// itself ask HAPI not to keep them (no-store, loaded at once), so a
// client's next search is not answered from a result taken before a write;
// a full no-store page may not be all, and only then is the search asked
// again page by page with no-cache.
func TestOwnSearchesBypassUpstreamCache(t *testing.T) {
	g := newTestGateway(t)
	entries := func(from, n int) string {
		var b strings.Builder
		for i := from; i < from+n; i++ {
			if b.Len() > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"resource":{"resourceType":"Observation","id":"o%d"},"search":{"mode":"match"}}`, i)
		}
		return b.String()
	}
	type asked struct{ cacheControl, query string }
	for _, c := range []struct {
		name      string
		total     int // matches upstream; a no-store answer holds at most 1000
		wantAsked []string
		wantFound int
	}{
		{"few", 3, []string{"no-store, max-results=1000"}, 3},
		{"a full page may not be all", 1500, []string{"no-store, max-results=1000", "no-cache", "no-cache"}, 1500},
	} {
		var got []asked
		up := UpstreamFunc(func(w http.ResponseWriter, r *http.Request) error {
			cc := r.Header.Get("Cache-Control")
			got = append(got, asked{cc, r.URL.RawQuery})
			w.Header().Set("Content-Type", "application/fhir+json")
			offset := 0
			if o := r.URL.Query().Get("_offset"); o != "" {
				fmt.Sscan(o, &offset)
			}
			n := min(c.total-offset, 1000)
			link := ""
			if cc == "no-cache" && offset+n < c.total {
				next := *r.URL
				q := next.Query()
				q.Set("_offset", fmt.Sprint(offset+n))
				next.RawQuery = q.Encode()
				next.Scheme, next.Host = "http", r.Host
				link = fmt.Sprintf(`,"link":[{"relation":"next","url":%q}]`, next.String())
			}
			fmt.Fprintf(w, `{"resourceType":"Bundle","type":"searchset"%s,"entry":[%s]}`, link, entries(offset, n))
			return nil
		})
		r := httptest.NewRequest(http.MethodGet, "https://john.pfr.localhost/fhir/Observation", nil)
		found, err := g.searchAll(own(r, up, testRecord(), "https://john.pfr.localhost/fhir"), "Observation", url.Values{"code": {"x"}, "_count": {"5"}}, maxCountPages)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if len(found) != c.wantFound {
			t.Errorf("%s: %d found, want %d", c.name, len(found), c.wantFound)
		}
		if len(got) != len(c.wantAsked) {
			t.Fatalf("%s: asked %+v, want Cache-Control %q", c.name, got, c.wantAsked)
		}
		for i, a := range got {
			if a.cacheControl != c.wantAsked[i] {
				t.Errorf("%s: request %d Cache-Control %q, want %q", c.name, i, a.cacheControl, c.wantAsked[i])
			}
			if q, _ := url.ParseQuery(a.query); q.Get("_count") != "1000" || q.Get("code") != "x" {
				t.Errorf("%s: request %d query %q", c.name, i, a.query)
			}
		}
	}
}
