package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// hapiPartition is one partition as HAPI FHIR lists it.
type hapiPartition struct {
	id   int64
	name string
}

// partitions asks HAPI directly (not through the gateway) for its
// partitions named pfr-…, keyed by name.
func (h *hapiServer) partitions(t *testing.T, mode string) map[string]hapiPartition {
	t.Helper()
	var body struct {
		Parameter []struct {
			Name string `json:"name"`
			Part []struct {
				Name         string `json:"name"`
				ValueInteger int64  `json:"valueInteger"`
				ValueCode    string `json:"valueCode"`
				ValueString  string `json:"valueString"`
			} `json:"part"`
		} `json:"parameter"`
	}
	raw := h.direct(t, mode, "DEFAULT", "/$partition-management-list-partitions")
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatalf("HAPI's partition list: %v: %.500s", err, raw)
	}
	out := map[string]hapiPartition{}
	for _, p := range body.Parameter {
		var part hapiPartition
		for _, f := range p.Part {
			switch f.Name {
			case "id":
				part.id = f.ValueInteger
			case "name":
				part.name = f.ValueCode + f.ValueString
			}
		}
		if strings.HasPrefix(part.name, "pfr-") {
			out[part.name] = part
		}
	}
	return out
}

// direct GETs path from HAPI itself in partition (a name in url mode, an
// id or DEFAULT in header mode) and returns the body of a 200.
func (h *hapiServer) direct(t *testing.T, mode, partition, path string) []byte {
	t.Helper()
	url := h.base + path
	if mode == "url" {
		url = h.base + "/" + partition + path
	}
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if mode == "header" {
		req.Header.Set(partitionHeader, partition)
	}
	res, err := h.client.Do(req)
	if err != nil {
		t.Fatalf("HAPI directly: %v", err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK {
		t.Fatalf("HAPI directly: GET %s: %d %.500s", url, res.StatusCode, raw)
	}
	return raw
}

// partitionKey is how a partition is named to HAPI in mode.
func (p hapiPartition) key(mode string) string {
	if mode == "url" {
		return p.name
	}
	return strconv.FormatInt(p.id, 10)
}
