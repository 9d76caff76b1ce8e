package gateway

import "net/http"

// CORS on a record's host: browser apps (a SMART app on its own origin)
// call the FHIR API, the SMART configuration and the CapabilityStatement
// across origins. Access needs a bearer token, never a cookie, so any
// origin may call: the answer is only readable with the token the app
// itself sent.
const (
	corsMethods = "GET, HEAD, POST, PUT, PATCH, DELETE"
	corsHeaders = "Authorization, Content-Type, Accept, Prefer, If-Match, If-None-Match, If-None-Exist, If-Modified-Since, X-Request-Id"
	corsExpose  = "Location, Content-Location, ETag, Last-Modified, WWW-Authenticate, X-Request-Id"
)

// cors adds the CORS headers to a cross-origin request and answers its
// preflight; it reports whether the request was answered.
func cors(w http.ResponseWriter, r *http.Request) bool {
	if r.Header.Get("Origin") == "" {
		return false
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Expose-Headers", corsExpose)
	if r.Method != http.MethodOptions || r.Header.Get("Access-Control-Request-Method") == "" {
		return false
	}
	h.Set("Access-Control-Allow-Methods", corsMethods)
	h.Set("Access-Control-Allow-Headers", corsHeaders)
	h.Set("Access-Control-Max-Age", "600")
	w.WriteHeader(http.StatusNoContent)
	return true
}
