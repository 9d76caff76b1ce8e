package testkit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// Response is an HTTP answer held whole: the status, the headers, the raw
// body and, when it is a JSON object, the decoded body.
type Response struct {
	Status int
	Header http.Header
	Raw    []byte
	Body   map[string]any
}

// Send makes one request with client and reads the whole answer. body may
// be nil, a []byte, a string or anything JSON-encodable; a body is sent as
// application/fhir+json unless header says otherwise. token, when set, is
// sent as a bearer token. Transport errors are returned (a request cut by
// a killed server fails this way).
func Send(ctx context.Context, client *http.Client, method, url, token string, body any, header http.Header) (Response, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			return Response{}, err
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return Response{}, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	if rd != nil && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	res, err := client.Do(req)
	if err != nil {
		return Response{}, err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return Response{}, fmt.Errorf("reading the answer of %s %s: %w", method, url, err)
	}
	out := Response{Status: res.StatusCode, Header: res.Header, Raw: raw}
	_ = json.Unmarshal(raw, &out.Body)
	return out, nil
}

// Expect fails the test unless r has the wanted status.
func (r Response) Expect(t testing.TB, status int, what string) Response {
	t.Helper()
	if r.Status != status {
		t.Fatalf("%s: status %d, want %d; body: %.800s", what, r.Status, status, r.Raw)
	}
	return r
}

// ExpectOutcome fails the test unless r is an OperationOutcome with the
// wanted status.
func (r Response) ExpectOutcome(t testing.TB, status int, what string) Response {
	t.Helper()
	r.Expect(t, status, what)
	if r.Body["resourceType"] != "OperationOutcome" {
		t.Fatalf("%s: body is not an OperationOutcome: %.500s", what, r.Raw)
	}
	return r
}

// ExpectInsufficientScope checks a 403 naming the missing SMART scope, in
// the OperationOutcome and in the WWW-Authenticate challenge.
func (r Response) ExpectInsufficientScope(t testing.TB, missing, what string) {
	t.Helper()
	r.ExpectOutcome(t, http.StatusForbidden, what)
	challenge := r.Header.Get("WWW-Authenticate")
	if !strings.HasPrefix(challenge, "Bearer ") || !strings.Contains(challenge, `error="insufficient_scope"`) ||
		!strings.Contains(challenge, `scope="`+missing+`"`) {
		t.Errorf("%s: WWW-Authenticate = %q, want insufficient_scope naming %s", what, challenge, missing)
	}
	if !strings.Contains(string(r.Raw), missing) {
		t.Errorf("%s: OperationOutcome does not name %s: %.500s", what, missing, r.Raw)
	}
}
