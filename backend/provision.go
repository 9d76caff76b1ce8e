package backend

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/pfrgateway/caddy-pfr/fhir"
)

// HAPI FHIR's partition management operations.
const (
	opCreatePartition = "$partition-management-create-partition"
	opDeletePartition = "$partition-management-delete-partition"
	opReadPartition   = "$partition-management-read-partition"
	opListPartitions  = "$partition-management-list-partitions"
	// defaultPartition names HAPI's default partition, where the partition
	// management operations live.
	defaultPartition = "DEFAULT"
)

// existsMarkers in a 4xx answer to a create say that the name or the id is
// taken: HAPI FHIR's message codes (PartitionLookupSvcImpl: HAPI-1309 the
// name is already defined, HAPI-2366 the id already exists) and the plain
// phrases other servers (the embedded store) use.
var existsMarkers = []string{"HAPI-1309:", "HAPI-2366:", "already defined", "already exists"}

// codeUnknownID: no partition exists with this id (HAPI FHIR, on delete).
const codeUnknownID = "HAPI-1308:"

// ErrPartitionExists is returned by CheckProvisionResponse when the
// upstream says the partition's name or id is taken. It is not success:
// the name or id may belong to another PFR's partition, so the caller must
// confirm that the upstream partition with the PFR's id has the PFR's name
// before using it, as Provision does.
var ErrPartitionExists = errors.New("backend: partition name or id already taken upstream")

// ProvisionRequests returns the requests that create t's partition on the
// upstream, in order: in header and url_prefix modes one POST of HAPI FHIR's
// $partition-management-create-partition with a Parameters body (id
// valueInteger, name valueCode, description valueString), sent to
// {FHIRPath}/$… with PartitionHeader "DEFAULT" in header mode, and to
// {FHIRPath}/DEFAULT/$… in url_prefix mode. tenant_header and
// per_record_url modes need none (nil).
//
// The requests carry a path-only URL and no Host: they are meant for the
// caller's upstream handler (set URL.Scheme and URL.Host to send them with
// an http.Client). Judge each answer with CheckProvisionResponse; Provision
// does all of it, including confirming a partition that already exists.
func (b *Backend) ProvisionRequests(ctx context.Context, t Target) ([]*http.Request, error) {
	params := []parameter{
		{Name: "id", ValueInteger: &t.PartitionID},
		{Name: "name", ValueCode: t.PartitionName},
		{Name: "description", ValueString: "Personal FHIR Record " + t.RecordID},
	}
	return b.partitionRequests(ctx, t, opCreatePartition, params)
}

// DeleteRequests returns the requests that remove t's partition from the
// upstream: HAPI FHIR's $partition-management-delete-partition (Parameters
// with the id), addressed like ProvisionRequests; nil in tenant_header and
// per_record_url modes. Deleting a HAPI partition does not expunge the
// resources stored in it: that needs HAPI's $expunge to be enabled and is
// left to the operator. Judge each answer with CheckDeleteResponse.
func (b *Backend) DeleteRequests(ctx context.Context, t Target) ([]*http.Request, error) {
	params := []parameter{{Name: "id", ValueInteger: &t.PartitionID}}
	return b.partitionRequests(ctx, t, opDeletePartition, params)
}

func (b *Backend) partitionRequests(ctx context.Context, t Target, op string, params []parameter) ([]*http.Request, error) {
	path, header, ok := b.mode.partitionOp(&b.cfg, op)
	if !ok {
		return nil, nil
	}
	if t.PartitionID < 1 || t.PartitionID > 1<<31-1 {
		return nil, fmt.Errorf("backend: partition id %d out of range 1…%d", t.PartitionID, 1<<31-1)
	}
	if err := checkPartitionName(t.PartitionName); err != nil {
		return nil, err
	}
	body, err := json.Marshal(parameters{ResourceType: "Parameters", Parameter: params})
	if err != nil {
		return nil, fmt.Errorf("backend: encode %s parameters: %w", op, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, path, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("backend: build %s request: %w", op, err)
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	req.Header.Set("Content-Type", fhir.ContentType)
	req.Header.Set("Accept", "application/fhir+json")
	return []*http.Request{req}, nil
}

// parameters is a FHIR Parameters resource with primitive values only.
type parameters struct {
	ResourceType string      `json:"resourceType"`
	Parameter    []parameter `json:"parameter,omitempty"`
}

type parameter struct {
	Name         string      `json:"name"`
	ValueInteger *int64      `json:"valueInteger,omitempty"`
	ValueCode    string      `json:"valueCode,omitempty"`
	ValueString  string      `json:"valueString,omitempty"`
	Part         []parameter `json:"part,omitempty"`
}

// CheckProvisionResponse judges the upstream's answer to a provisioning
// request: nil for a 2xx; ErrPartitionExists for a 409, or a 4xx saying
// the name or id is taken (HAPI-1309, HAPI-2366, "already defined",
// "already exists"), which needs confirming; an error quoting the start of
// the body for anything else.
func CheckProvisionResponse(status int, body []byte) error {
	switch {
	case status >= 200 && status < 300:
		// A 2xx must say what it created: a web server that is not the
		// FHIR server (an unmatched Caddy site answers an empty 200) must
		// not pass for one.
		var answer struct {
			ResourceType string `json:"resourceType"`
		}
		if json.Unmarshal(body, &answer) != nil || answer.ResourceType == "" {
			return fmt.Errorf("backend: partition creation answered %d without a FHIR resource: %s", status, excerpt(body))
		}
		return nil
	case status == http.StatusConflict,
		status >= 400 && status < 500 && containsAny(body, existsMarkers):
		return ErrPartitionExists
	}
	return fmt.Errorf("backend: partition creation answered %d: %s", status, excerpt(body))
}

// CheckDeleteResponse judges the upstream's answer to a delete request: nil
// for a 2xx, for 404 and 410, and for an answer carrying HAPI FHIR's
// unknown-partition code (HAPI-1308, which HAPI sends with a 500 on delete),
// so that deleting is idempotent.
func CheckDeleteResponse(status int, body []byte) error {
	switch {
	case status >= 200 && status < 300, status == http.StatusNotFound, status == http.StatusGone:
		return nil
	case status >= 400 && bytes.Contains(body, []byte(codeUnknownID)):
		return nil
	}
	return fmt.Errorf("backend: partition deletion answered %d: %s", status, excerpt(body))
}

func containsAny(body []byte, markers []string) bool {
	for _, m := range markers {
		if bytes.Contains(body, []byte(m)) {
			return true
		}
	}
	return false
}

// excerpt returns the start of body for an error message.
func excerpt(body []byte) string {
	const n = 300
	s := strings.TrimSpace(string(body))
	if len(s) > n {
		s = s[:n] + "…"
	}
	if s == "" {
		s = "(empty body)"
	}
	return s
}
