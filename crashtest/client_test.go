package crashtest

import (
	"context"
	"net/http"
	"strings"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// response is a gateway answer: status, headers, raw and decoded body.
type response = testkit.Response

// send makes one request; body may be nil, []byte or anything
// JSON-encodable. Transport errors are returned: requests cut by a SIGKILL
// fail this way.
func (g *gatewayProcess) send(ctx context.Context, method, url, token string, body any) (response, error) {
	return testkit.Send(ctx, g.client, method, url, token, body, nil)
}

// sendWith is send with extra request headers.
func (g *gatewayProcess) sendWith(ctx context.Context, method, url, token string, body any, header http.Header) (response, error) {
	return testkit.Send(ctx, g.client, method, url, token, body, header)
}

// do is send for requests that must get an answer: the test fails
// otherwise.
func (g *gatewayProcess) do(method, url, token string, body any) response {
	g.t.Helper()
	res, err := g.send(context.Background(), method, url, token, body)
	if err != nil {
		g.t.Fatalf("%s %s: %v", method, url, err)
	}
	return res
}

// createRecord creates a record owned by token's subject for patient and
// returns the record's Patient id.
func (g *gatewayProcess) createRecord(token, slug string, patient map[string]any) string {
	g.t.Helper()
	res := g.do("POST", g.apex("/pfr/v1/records"), token, map[string]any{"slug": slug, "relationship": "self", "patient": patient})
	res.Expect(g.t, http.StatusCreated, "create record "+slug)
	id, _ := res.Body["patientId"].(string)
	if id == "" {
		g.t.Fatalf("create record %s: no patientId in %s", slug, res.Raw)
	}
	return id
}

// receiptStatus is the sender's view of a receipt: pending, picked-up,
// rejected or expired.
func (g *gatewayProcess) receiptStatus(receipt string) string {
	g.t.Helper()
	res := g.do("GET", g.apex("/pfr/v1/receipts/"+receipt), "", nil).Expect(g.t, http.StatusOK, "receipt "+receipt)
	params, _ := res.Body["parameter"].([]any)
	for _, p := range params {
		if m, _ := p.(map[string]any); m["name"] == "status" {
			s, _ := m["valueCode"].(string)
			return s
		}
	}
	g.t.Fatalf("receipt %s: no status in %s", receipt, res.Raw)
	return ""
}

// inbox lists the record's drop-offs by id.
func (g *gatewayProcess) inbox(token, slug string) map[string]map[string]any {
	g.t.Helper()
	res := g.do("GET", g.apex("/pfr/v1/records/"+slug+"/dropoffs"), token, nil).Expect(g.t, http.StatusOK, "inbox of "+slug)
	items, _ := res.Body["dropoffs"].([]any)
	out := make(map[string]map[string]any, len(items))
	for _, it := range items {
		m, _ := it.(map[string]any)
		id, _ := m["id"].(string)
		if _, dup := out[id]; dup || id == "" {
			g.t.Errorf("inbox of %s lists drop-off %q twice or without id", slug, id)
		}
		out[id] = m
	}
	return out
}

// outcomeText is the diagnostics of an OperationOutcome answer.
func outcomeText(r response) string {
	var parts []string
	issues, _ := r.Body["issue"].([]any)
	for _, i := range issues {
		m, _ := i.(map[string]any)
		if d, ok := m["diagnostics"].(string); ok {
			parts = append(parts, d)
		}
	}
	return strings.Join(parts, "; ")
}

// dropOffReceipt drops raw off for the record without a token and returns
// the receipt.
func (g *gatewayProcess) dropOffReceipt(slug string, raw []byte) string {
	g.t.Helper()
	res := g.do("POST", g.recordURL(slug, ""), "", raw).Expect(g.t, http.StatusAccepted, "drop off for "+slug)
	id := res.Header.Get("X-Pfr-Receipt")
	if id == "" {
		g.t.Fatalf("drop off for %s: no receipt header", slug)
	}
	return id
}
