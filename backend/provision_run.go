package backend

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// Upstream is the caller's upstream handler (in Caddy: reverse_proxy or the
// embedded store), through which Provision and Deprovision send their
// requests. The gateway's own upstream interface has the same method set.
type Upstream interface {
	ServeHTTP(w http.ResponseWriter, r *http.Request) error
}

// Provision creates t's partition through up and returns nil once the
// upstream holds a partition with t's id and name: newly created, or
// already there (confirmed with HAPI FHIR's
// $partition-management-read-partition, so that a name or id that belongs
// to another partition is an error, never silently shared). It does nothing
// in modes that need no partition.
func (b *Backend) Provision(ctx context.Context, up Upstream, t Target) error {
	reqs, err := b.ProvisionRequests(ctx, t)
	if err != nil {
		return err
	}
	for _, req := range reqs {
		status, body, err := send(up, req)
		if err != nil {
			return fmt.Errorf("backend: create partition %s: %w", t.PartitionName, err)
		}
		err = CheckProvisionResponse(status, body)
		if errors.Is(err, ErrPartitionExists) {
			err = b.confirmPartition(ctx, up, t)
		}
		if err != nil {
			return fmt.Errorf("backend: create partition %s: %w", t.PartitionName, err)
		}
	}
	return nil
}

// Deprovision removes t's partition through up; a partition already gone
// counts as removed. See DeleteRequests for what it does not remove.
func (b *Backend) Deprovision(ctx context.Context, up Upstream, t Target) error {
	reqs, err := b.DeleteRequests(ctx, t)
	if err != nil {
		return err
	}
	for _, req := range reqs {
		status, body, err := send(up, req)
		if err == nil {
			err = CheckDeleteResponse(status, body)
		}
		if err != nil {
			return fmt.Errorf("backend: delete partition %s: %w", t.PartitionName, err)
		}
	}
	return nil
}

// confirmPartition checks that the upstream partition with t's id is
// named t.PartitionName. It asks HAPI FHIR's
// $partition-management-read-partition, and when that is not answered (a
// server without it, such as the embedded store),
// $partition-management-list-partitions.
func (b *Backend) confirmPartition(ctx context.Context, up Upstream, t Target) error {
	name, found, err := b.readPartition(ctx, up, t)
	if err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("the name %q or the id %d belongs to another partition upstream: refusing to share it",
			t.PartitionName, t.PartitionID)
	}
	if name != t.PartitionName {
		return fmt.Errorf("partition id %d upstream is named %q, not %q: refusing to share it",
			t.PartitionID, name, t.PartitionName)
	}
	return nil
}

// readPartition returns the name of the upstream partition with t's id.
func (b *Backend) readPartition(ctx context.Context, up Upstream, t Target) (name string, found bool, err error) {
	idParam := []parameter{{Name: "id", ValueInteger: &t.PartitionID}}
	status, body, err := b.sendOp(ctx, up, t, opReadPartition, idParam)
	if err != nil {
		return "", false, err
	}
	if status >= 200 && status < 300 {
		var got parameters
		if err := json.Unmarshal(body, &got); err != nil {
			return "", false, fmt.Errorf("read partition %d: decode answer: %w", t.PartitionID, err)
		}
		id, name := partitionFields(got.Parameter)
		return name, id == t.PartitionID, nil
	}
	status, body, err = b.sendOp(ctx, up, t, opListPartitions, nil)
	if err != nil {
		return "", false, err
	}
	if status < 200 || status >= 300 {
		return "", false, fmt.Errorf("cannot read partition %d upstream: list answered %d: %s", t.PartitionID, status, excerpt(body))
	}
	var list parameters
	if err := json.Unmarshal(body, &list); err != nil {
		return "", false, fmt.Errorf("list partitions: decode answer: %w", err)
	}
	for _, p := range list.Parameter {
		if id, name := partitionFields(p.Part); id == t.PartitionID {
			return name, true, nil
		}
	}
	return "", false, nil
}

// sendOp sends one partition management operation and returns its answer.
func (b *Backend) sendOp(ctx context.Context, up Upstream, t Target, op string, params []parameter) (int, []byte, error) {
	reqs, err := b.partitionRequests(ctx, t, op, params)
	if err != nil {
		return 0, nil, fmt.Errorf("build %s: %w", op, err)
	}
	if len(reqs) == 0 {
		return 0, nil, fmt.Errorf("%s: not used in %s mode", op, b.cfg.Mode)
	}
	status, body, err := send(up, reqs[0])
	if err != nil {
		return 0, nil, fmt.Errorf("%s: %w", op, err)
	}
	return status, body, nil
}

// partitionFields picks the id and the name out of a partition's
// parameters.
func partitionFields(params []parameter) (id int64, name string) {
	for _, p := range params {
		switch p.Name {
		case "id":
			if p.ValueInteger != nil {
				id = *p.ValueInteger
			}
		case "name":
			name = p.ValueCode + p.ValueString
		}
	}
	return id, name
}

// maxAnswer bounds how much of a management answer is kept.
const maxAnswer = 64 << 10

// send passes req to up and captures the status and (the start of) the body.
func send(up Upstream, req *http.Request) (int, []byte, error) {
	rec := &captureWriter{header: http.Header{}}
	if err := up.ServeHTTP(rec, req); err != nil {
		return 0, nil, err
	}
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	return rec.status, rec.body.Bytes(), nil
}

// captureWriter is a minimal ResponseWriter that keeps the status and up to
// maxAnswer bytes of the body.
type captureWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (c *captureWriter) Header() http.Header { return c.header }

func (c *captureWriter) WriteHeader(status int) {
	if c.status == 0 && status >= 200 {
		c.status = status
	}
}

func (c *captureWriter) Write(p []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	if room := maxAnswer - c.body.Len(); room > 0 {
		c.body.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
