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

// confirmPartition reads the partition with t's id and checks its name.
func (b *Backend) confirmPartition(ctx context.Context, up Upstream, t Target) error {
	reqs, err := b.partitionRequests(ctx, t, opReadPartition,
		[]parameter{{Name: "id", ValueInteger: &t.PartitionID}})
	if err != nil {
		return err
	}
	for _, req := range reqs {
		status, body, err := send(up, req)
		if err != nil {
			return fmt.Errorf("read partition %d: %w", t.PartitionID, err)
		}
		if status < 200 || status >= 300 {
			return fmt.Errorf("partition name %q exists upstream but partition id %d does not (%d: %s)",
				t.PartitionName, t.PartitionID, status, excerpt(body))
		}
		var got parameters
		if err := json.Unmarshal(body, &got); err != nil {
			return fmt.Errorf("read partition %d: decode answer: %w", t.PartitionID, err)
		}
		name, id := "", int64(0)
		for _, p := range got.Parameter {
			switch p.Name {
			case "name":
				name = p.ValueCode + p.ValueString
			case "id":
				if p.ValueInteger != nil {
					id = *p.ValueInteger
				}
			}
		}
		if name != t.PartitionName || id != t.PartitionID {
			return fmt.Errorf("partition id %d upstream is named %q, want %q: refusing to share it",
				t.PartitionID, name, t.PartitionName)
		}
	}
	return nil
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
