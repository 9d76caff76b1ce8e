package gateway

import (
	"net/http"
	"strings"

	"go.uber.org/zap"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/fhir"
)

// authenticate verifies the bearer token of r, if any, for one of audiences.
// It returns nil, nil when no token was sent, and a 401 *fhir.Error carrying
// a WWW-Authenticate challenge when the token is not acceptable.
func (g *Gateway) authenticate(r *http.Request, audiences []string) (*auth.Identity, error) {
	token, present, err := bearerToken(r)
	realm := audiences[0]
	if err != nil {
		return nil, err.WithHeader("WWW-Authenticate", auth.WWWAuthenticate(realm, err))
	}
	if !present {
		return nil, nil
	}
	id, verr := g.cfg.Verifier.Verify(r.Context(), token, audiences)
	if verr != nil {
		g.log.Info("bearer token refused", zap.String("host", r.Host), zap.Error(verr))
		return nil, fhir.Errorf(http.StatusUnauthorized, fhir.CodeLogin, "the bearer token is not valid here: %v", verr).
			WithHeader("WWW-Authenticate", auth.WWWAuthenticate(realm, verr))
	}
	return id, nil
}

// bearerToken extracts the token of an `Authorization: Bearer` header.
func bearerToken(r *http.Request) (token string, present bool, err *fhir.Error) {
	values := r.Header.Values("Authorization")
	if len(values) == 0 {
		return "", false, nil
	}
	if len(values) > 1 {
		return "", true, fhir.Errorf(http.StatusUnauthorized, fhir.CodeLogin, "more than one Authorization header")
	}
	scheme, tok, ok := strings.Cut(strings.TrimSpace(values[0]), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", true, fhir.Errorf(http.StatusUnauthorized, fhir.CodeLogin, "the Authorization header must be 'Bearer <token>'")
	}
	return strings.TrimSpace(tok), true, nil
}

// trackingWriter remembers whether a response has started, so an upstream
// error after the first byte is not answered with a second status line.
type trackingWriter struct {
	http.ResponseWriter
	wroteHeader bool
}

func (t *trackingWriter) WriteHeader(code int) {
	t.wroteHeader = true
	t.ResponseWriter.WriteHeader(code)
}

func (t *trackingWriter) Write(b []byte) (int, error) {
	t.wroteHeader = true
	return t.ResponseWriter.Write(b)
}

// Flush passes flushes through for streamed responses.
func (t *trackingWriter) Flush() {
	if f, ok := t.ResponseWriter.(http.Flusher); ok {
		t.wroteHeader = true
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (t *trackingWriter) Unwrap() http.ResponseWriter { return t.ResponseWriter }
