package gateway

import (
	"net/url"
	"slices"
	"strings"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/fhir/search"
)

// shapingParams are the parameters that cut the returned resources down.
var shapingParams = []string{"_elements", "_summary"}

// shaping is the _elements or _summary of a read or search that the
// gateway applies itself: the response filter judges whole resources
// (an Observation asked for with _elements=code has no subject left to
// show whose it is, and was dropped), so the upstream is asked for them
// whole and the shape is applied to what is kept. Nil when nothing is to
// be shaped. An invalid value is a 400.
func shaping(in interaction) (func(map[string]any) map[string]any, error) {
	switch in.kind {
	case auth.InteractionRead, auth.InteractionVRead, auth.InteractionSearch:
	default:
		return nil, nil
	}
	return search.Shaping(in.typ, in.query)
}

// dropParams returns rawQuery without the parameters named, keeping the
// others as the client wrote them.
func dropParams(rawQuery string, names ...string) string {
	if rawQuery == "" {
		return ""
	}
	parts := strings.Split(rawQuery, "&")
	kept := parts[:0]
	for _, p := range parts {
		key, _, _ := strings.Cut(p, "=")
		if k, err := url.QueryUnescape(key); err == nil && slices.Contains(names, k) {
			continue
		}
		kept = append(kept, p)
	}
	return strings.Join(kept, "&")
}

// withShaping returns a Bundle link with the client's shaping parameters
// added where it has none, so that following it asks for the same shape
// (the upstream's links carry none: it was asked without them).
func withShaping(query url.Values) func(string) string {
	return func(link string) string {
		u, err := url.Parse(link)
		if err != nil {
			return link
		}
		q := u.Query()
		changed := false
		for _, name := range shapingParams {
			if vs, ok := query[name]; ok && !q.Has(name) {
				q[name] = vs
				changed = true
			}
		}
		if !changed {
			return link
		}
		u.RawQuery = q.Encode()
		return u.String()
	}
}
