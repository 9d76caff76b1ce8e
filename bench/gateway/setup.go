package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"github.com/pfrgateway/caddy-pfr/fhir"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/internal/pfrproc"
)

// searchSize is how many Observations the record holds and the page size of
// the search: the searchset is exactly one full page, so the store answers
// it without saving a paging snapshot (a fsynced write that would make the
// search measure the disk rather than the paths in front of the store).
const searchSize = 50

// fixture is the data every target serves: one record, seen by the gateway
// as a slug and by the store as a numeric partition.
type fixture struct {
	token     string   // a dev-issuer bearer token of the record's owner
	partition string   // the record's partition id in the store
	patientID string   // the record's Patient
	readID    string   // the Observation the read requests fetch
	obsIDs    []string // every Observation in the record, sorted
}

// newClient returns a keep-alive client that dials every host to
// 127.0.0.1 (as *.localhost resolves) and does not verify the gateway's
// local-CA certificate. Compression stays off so every target sends the
// same bytes. With a custom dialer and TLS config the transport speaks
// HTTP/1.1 on every path, HTTPS included (no ForceAttemptHTTP2), so (d)
// differs from (c) by TLS alone.
func newClient(concurrency int) *http.Client {
	transport := pfrproc.LocalTransport()
	transport.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // the bench's own local CA; TLS cost is what is measured
	transport.MaxIdleConns = 4 * concurrency
	transport.MaxIdleConnsPerHost = concurrency
	transport.DisableCompression = true
	return pfrproc.LocalClient(30*time.Second, transport)
}

// exchange sends one set-up request and returns the response body, failing
// unless the status is want.
func exchange(ctx context.Context, client *http.Client, want int, method, url string, body []byte, header http.Header) (*http.Response, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: %w", method, url, err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	res, err := client.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: reading the response: %w", method, url, err)
	}
	if res.StatusCode != want {
		return nil, nil, fmt.Errorf("%s %s: status %d, want %d: %.500s", method, url, res.StatusCode, want, raw)
	}
	return res, raw, nil
}

// prepare creates the record through the gateway's management API, finds
// its partition in the store, and writes the Observations through the
// gateway, so all targets serve exactly the same data.
func prepare(ctx context.Context, client *http.Client, p ports, workDir string) (*fixture, error) {
	dev, err := auth.LoadOrCreateDevIssuer(workDir + "/gateway")
	if err != nil {
		return nil, fmt.Errorf("loading the gateway's dev issuer: %w", err)
	}
	token, err := dev.Mint(slug, "openid patient/*.cruds", nil, 6*time.Hour)
	if err != nil {
		return nil, fmt.Errorf("minting a token: %w", err)
	}
	fx := &fixture{token: token}
	bearer := http.Header{"Authorization": {"Bearer " + token}, "Content-Type": {"application/json"}}

	create := `{"slug":"` + slug + `","relationship":"self","patient":{"resourceType":"Patient",` +
		`"name":[{"family":"Bench","given":["Mark"]}],"gender":"female","birthDate":"1980-04-02"}}`
	apex := fmt.Sprintf("http://%s:%d/pfr/v1/records", baseDomain, p.gateway)
	_, raw, err := exchange(ctx, client, http.StatusCreated, http.MethodPost, apex, []byte(create), bearer)
	if err != nil {
		return nil, fmt.Errorf("creating the record: %w", err)
	}
	var rec struct {
		PatientID string `json:"patientId"`
	}
	if err := json.Unmarshal(raw, &rec); err != nil || rec.PatientID == "" {
		return nil, fmt.Errorf("creating the record: no patientId in %.300s (%v)", raw, err)
	}
	fx.patientID = rec.PatientID

	if fx.partition, err = findPartition(ctx, client, p.store, fx.patientID); err != nil {
		return nil, err
	}

	bearer.Set("Content-Type", "application/fhir+json")
	bearer.Set("Prefer", "return=minimal")
	base := fmt.Sprintf("http://%s.%s:%d/fhir", slug, baseDomain, p.gateway)
	for i := range searchSize {
		body := observation(i, fx.patientID)
		res, _, err := exchange(ctx, client, http.StatusCreated, http.MethodPost, base+"/Observation", body, bearer)
		if err != nil {
			return nil, fmt.Errorf("writing Observation %d through the gateway: %w", i, err)
		}
		id, err := createdID(res.Header.Get("Location"), base+"/Observation/")
		if err != nil {
			return nil, fmt.Errorf("writing Observation %d through the gateway: %w", i, err)
		}
		fx.obsIDs = append(fx.obsIDs, id)
	}
	fx.readID = fx.obsIDs[0]
	slices.Sort(fx.obsIDs)
	return fx, nil
}

// createdID returns the id in a Location header, which must lie under base
// (so the gateway rewrote it to the record's own address).
func createdID(location, base string) (string, error) {
	rest, ok := strings.CutPrefix(location, base)
	if !ok {
		return "", fmt.Errorf("location %q is not under %s", location, base)
	}
	id, _, _ := strings.Cut(rest, "/")
	if !fhir.IsID(id) {
		return "", fmt.Errorf("location %q has no valid id", location)
	}
	return id, nil
}

// findPartition finds the partition the gateway provisioned for the record:
// among the store's partitions, the one named pfr-… that holds the record's
// Patient. Exactly one must.
func findPartition(ctx context.Context, client *http.Client, storePort int, patientID string) (string, error) {
	storeBase := fmt.Sprintf("http://127.0.0.1:%d/fhir", storePort)
	_, raw, err := exchange(ctx, client, http.StatusOK, http.MethodGet,
		storeBase+"/$partition-management-list-partitions", nil,
		http.Header{"X-Request-Partition-IDs": {"DEFAULT"}})
	if err != nil {
		return "", fmt.Errorf("listing the store's partitions: %w", err)
	}
	ids, err := recordPartitions(raw)
	if err != nil {
		return "", err
	}
	var found []string
	for _, id := range ids {
		_, _, err := exchange(ctx, client, http.StatusOK, http.MethodGet, storeBase+"/Patient/"+patientID, nil,
			http.Header{"X-Request-Partition-IDs": {id}})
		if err == nil {
			found = append(found, id)
		}
	}
	if len(found) != 1 {
		return "", fmt.Errorf("want exactly one partition holding Patient/%s, found %v among %v", patientID, found, ids)
	}
	return found[0], nil
}

// recordPartitions returns the ids of the partitions named pfr-… in a
// $partition-management-list-partitions answer.
func recordPartitions(raw []byte) ([]string, error) {
	var list struct {
		ResourceType string `json:"resourceType"`
		Parameter    []struct {
			Name string `json:"name"`
			Part []struct {
				Name         string `json:"name"`
				ValueInteger *int64 `json:"valueInteger"`
				ValueCode    string `json:"valueCode"`
			} `json:"part"`
		} `json:"parameter"`
	}
	if err := json.Unmarshal(raw, &list); err != nil || list.ResourceType != "Parameters" {
		return nil, fmt.Errorf("the partition list is not a Parameters resource: %.300s (%v)", raw, err)
	}
	var ids []string
	for _, p := range list.Parameter {
		var id *int64
		var name string
		for _, part := range p.Part {
			switch part.Name {
			case "id":
				id = part.ValueInteger
			case "name":
				name = part.ValueCode
			}
		}
		if p.Name == "partition" && id != nil && strings.HasPrefix(name, "pfr-") {
			ids = append(ids, strconv.FormatInt(*id, 10))
		}
	}
	return ids, nil
}

// vitalSigns are the LOINC codes the generated Observations cycle through,
// shaped like Synthea's vital signs.
var vitalSigns = []struct {
	code, display, unit string
	base, step          float64
}{
	{"8302-2", "Body Height", "cm", 160, 0.37},
	{"29463-7", "Body Weight", "kg", 70, 0.53},
	{"39156-5", "Body Mass Index", "kg/m2", 24, 0.11},
	{"8867-4", "Heart rate", "/min", 70, 1.3},
	{"9279-1", "Respiratory rate", "/min", 14, 0.2},
	{"8310-5", "Body temperature", "Cel", 36.6, 0.03},
	{"2708-6", "Oxygen saturation in Arterial blood", "%", 97, 0.07},
	{"72514-3", "Pain severity - 0-10 verbal numeric rating [Score] - Reported", "{score}", 1, 0.25},
}

// observation returns the i-th generated Observation of patientID: a
// Synthea-like vital sign (about 700 bytes).
func observation(i int, patientID string) []byte {
	v := vitalSigns[i%len(vitalSigns)]
	when := time.Date(2015, 1, 1, 9, 30, 0, 0, time.UTC).AddDate(0, 0, 7*i).Format(time.RFC3339)
	obs := map[string]any{
		"resourceType": "Observation",
		"meta":         map[string]any{"tag": []any{map[string]any{"system": "https://smarthealthit.org/tags", "code": "synthea-5-2019"}}},
		"status":       "final",
		"category": []any{map[string]any{"coding": []any{map[string]any{
			"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs", "display": "vital-signs",
		}}}},
		"code": map[string]any{
			"coding": []any{map[string]any{"system": "http://loinc.org", "code": v.code, "display": v.display}},
			"text":   v.display,
		},
		"subject":           map[string]any{"reference": "Patient/" + patientID},
		"effectiveDateTime": when,
		"issued":            when,
		"valueQuantity": map[string]any{
			"value": v.base + v.step*float64(i), "unit": v.unit, "system": "http://unitsofmeasure.org", "code": v.unit,
		},
	}
	raw, _ := json.Marshal(obs) // a map of plain values always marshals
	return raw
}
