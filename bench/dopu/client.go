package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/pfrproc"
)

// newClient returns a keep-alive client that dials every host to
// 127.0.0.1 (as *.localhost resolves), so Host names the record. A 2 MB
// drop-off over loopback takes well under the timeout even when slow.
func newClient(concurrency int) *http.Client {
	transport := pfrproc.LocalTransport()
	transport.MaxIdleConns = 2 * concurrency
	transport.MaxIdleConnsPerHost = concurrency
	transport.DisableCompression = true
	return pfrproc.LocalClient(2*time.Minute, transport)
}

// gateway addresses the bench gateway.
type gateway struct {
	client *http.Client
	port   int
	token  string // the records' owner's dev-issuer bearer token
	// cpu returns Caddy's CPU time so far (0 when unknown): the
	// difference over a phase is what Caddy spent on it, however busy
	// the machine is.
	cpu func() time.Duration
}

// cpuTime is Caddy's CPU time so far, or 0 when unknown.
func (g *gateway) cpuTime() time.Duration {
	if g.cpu == nil {
		return 0
	}
	return g.cpu()
}

// apex returns the URL of path on the apex (management API).
func (g *gateway) apex(path string) string {
	return fmt.Sprintf("http://%s:%d%s", baseDomain, g.port, path)
}

// fhirBase returns a record's FHIR base URL.
func (g *gateway) fhirBase(slug string) string {
	return fmt.Sprintf("http://%s.%s:%d/fhir", slug, baseDomain, g.port)
}

// answer is a response read whole.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// do sends one request and reads the whole answer. With bearer set it
// carries the owner's token; a drop-off carries none.
func (g *gateway) do(ctx context.Context, method, url string, body []byte, contentType string, bearer bool) (*answer, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, url, err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/fhir+json")
	if bearer {
		req.Header.Set("Authorization", "Bearer "+g.token)
	}
	res, err := g.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: reading the answer: %w", method, url, err)
	}
	return &answer{status: res.StatusCode, header: res.Header, body: raw}, nil
}

// expect sends one request and fails unless the answer has status want.
func (g *gateway) expect(ctx context.Context, want int, method, url string, body []byte, contentType string, bearer bool) (*answer, error) {
	a, err := g.do(ctx, method, url, body, contentType, bearer)
	if err != nil {
		return nil, err
	}
	if a.status != want {
		return nil, fmt.Errorf("%s %s: status %d, want %d: %.500s", method, url, a.status, want, a.body)
	}
	return a, nil
}

// createRecord creates the record slug for patient, owned by the token's
// subject, and returns the record's Patient id.
func (g *gateway) createRecord(ctx context.Context, slug string, patient map[string]any) (string, error) {
	body, err := json.Marshal(map[string]any{"slug": slug, "relationship": "self", "patient": patient})
	if err != nil {
		return "", fmt.Errorf("encoding record %s: %w", slug, err)
	}
	a, err := g.expect(ctx, http.StatusCreated, http.MethodPost, g.apex("/pfr/v1/records"), body, "application/json", true)
	if err != nil {
		return "", fmt.Errorf("creating record %s: %w", slug, err)
	}
	var rec struct {
		PatientID string `json:"patientId"`
	}
	if err := json.Unmarshal(a.body, &rec); err != nil || rec.PatientID == "" {
		return "", fmt.Errorf("creating record %s: no patientId in %.300s (%v)", slug, a.body, err)
	}
	return rec.PatientID, nil
}
