package e2e

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/fhir"
)

// TestRealWorldDropOffsHAPI is TestRealWorldDropOffs in front of real HAPI
// FHIR (header partitions, not trusted: the gateway confines its own
// searches and filters their answers).
func TestRealWorldDropOffsHAPI(t *testing.T) {
	h := startHAPI(t, "header")
	// HAPI takes longer than the default 30 s to answer a transaction of
	// 2 382 entries (Synthea's hospital Bundle) on two shared cores.
	e := startGateway(t, realworldDropoff+"\t\tupstream_timeouts {\n\t\t\tresponse_header 5m\n\t\t\tread 6m\n\t\t\tcall 6m\n\t\t}\n"+
		"\t\tpartition header\n\t\tupstream reverse_proxy "+h.addr)
	e.client.Timeout = 10 * time.Minute
	rw := &realWorld{t: t, e: e, hapi: h}
	t.Run("pickup", rw.pickups)
	t.Run("transaction", rw.transactions)
}

// hapiRoundTrip writes sent directly to HAPI (its DEFAULT partition,
// references replaced by a display: they would not resolve there) and
// returns what HAPI gives back; nil when not on HAPI or HAPI refuses it.
func (rw *realWorld) hapiRoundTrip(sent map[string]any) map[string]any {
	if rw.hapi == nil {
		return nil
	}
	raw := mustMarshal(rw.t, sent)
	res := decodeNumbers(rw.t, raw)
	delete(res, "id")
	fhir.EachReference(res, func(obj map[string]any, ref string) {
		if !strings.HasPrefix(ref, "#") {
			delete(obj, "reference")
			obj["display"] = refMarker
		}
	})
	typ, _ := res["resourceType"].(string)
	do := func(method, url string, body []byte) (int, http.Header, []byte) {
		req, _ := http.NewRequest(method, url, bytes.NewReader(body))
		req.Header.Set(partitionHeader, "DEFAULT")
		req.Header.Set("Content-Type", "application/fhir+json")
		out, err := rw.hapi.client.Do(req)
		if err != nil {
			rw.t.Fatalf("HAPI directly: %v", err)
		}
		defer out.Body.Close()
		data, _ := io.ReadAll(out.Body)
		return out.StatusCode, out.Header, data
	}
	code, hdr, _ := do("POST", rw.hapi.base+"/"+typ, mustMarshal(rw.t, res))
	if code != http.StatusCreated {
		return nil
	}
	loc := hdr.Get("Location")
	if i := strings.Index(loc, "/_history/"); i >= 0 {
		loc = loc[:i]
	}
	code, _, data := do("GET", loc, nil)
	if code != http.StatusOK {
		return nil
	}
	return decodeNumbers(rw.t, data)
}
