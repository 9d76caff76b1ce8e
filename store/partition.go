package store

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/pfrgateway/caddy-pfr/fhir"
)

// defaultPartitionName is the header value that names the default
// partition, as in HAPI.
const defaultPartitionName = "DEFAULT"

// defaultPartitionKey is the registry key of the default partition.
const defaultPartitionKey = "DEFAULT"

// partitionInfo is one row of the partition registry.
type partitionInfo struct {
	ID          int64  `json:"id"`
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
}

// partitionKey is the registry and bucket key of a numeric partition.
func partitionKey(id int64) string { return strconv.FormatInt(id, 10) }

// partitionBucketName is the root bucket holding one partition's data.
func partitionBucketName(key string) []byte { return []byte("p:" + key) }

// partitionNamePattern keeps names to what HAPI's valueCode allows and URLs
// tolerate (url_prefix mode puts the name in the path).
var partitionNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_\-.]{0,199}$`)

// parsePartitionHeader turns the partition header value into a partition key,
// the way HAPI's RequestHeaderPartitionInterceptor reads it. It does not
// check that the partition exists; openPartition does.
func parsePartitionHeader(header string, values []string) (string, error) {
	if len(values) == 0 || strings.TrimSpace(strings.Join(values, "")) == "" {
		return "", fhir.Errorf(http.StatusBadRequest, fhir.CodeRequired,
			"no partition ID provided in header %s", header)
	}
	v := strings.TrimSpace(strings.Join(values, ","))
	if strings.Contains(v, ",") {
		return "", fhir.Errorf(http.StatusBadRequest, fhir.CodeNotSupported,
			"header %s names several partitions (%q); this server reads and writes exactly one partition per request", header, v)
	}
	if v == defaultPartitionName {
		return defaultPartitionKey, nil
	}
	id, err := strconv.ParseInt(v, 10, 32)
	if err != nil {
		return "", fhir.Errorf(http.StatusBadRequest, fhir.CodeValue,
			"invalid partition ID %q in header %s: expected an integer or %s", v, header, defaultPartitionName)
	}
	return partitionKey(id), nil
}

// openPartition returns the bucket of an existing partition, or HAPI's
// "No partition exists with ID n" as a 404 OperationOutcome.
func openPartition(tx *bolt.Tx, key string) (*bolt.Bucket, error) {
	if key != defaultPartitionKey && tx.Bucket(bucketPartitions).Get([]byte(key)) == nil {
		return nil, fhir.Errorf(http.StatusNotFound, fhir.CodeNotFound, "No partition exists with ID %s", key)
	}
	b := tx.Bucket(partitionBucketName(key))
	if b == nil {
		return nil, fmt.Errorf("partition %s is registered but has no bucket", key)
	}
	return b, nil
}

// createPartition registers a partition and creates its bucket.
func createPartition(tx *bolt.Tx, p partitionInfo) error {
	if p.ID <= 0 || p.ID > math.MaxInt32 {
		return fhir.Errorf(http.StatusBadRequest, fhir.CodeValue, "partition id must be a positive 32-bit integer, got %d", p.ID)
	}
	if !partitionNamePattern.MatchString(p.Name) {
		return fhir.Errorf(http.StatusBadRequest, fhir.CodeValue, "partition name %q is not valid: use letters, digits, '-', '_' or '.'", p.Name)
	}
	if strings.EqualFold(p.Name, defaultPartitionName) || strings.HasPrefix(p.Name, "_") {
		return fhir.Errorf(http.StatusBadRequest, fhir.CodeValue, "partition name %q is reserved", p.Name)
	}
	reg := tx.Bucket(bucketPartitions)
	key := partitionKey(p.ID)
	if reg.Get([]byte(key)) != nil {
		return fhir.Errorf(http.StatusBadRequest, fhir.CodeDuplicate, "Partition ID %d already exists", p.ID)
	}
	err := reg.ForEach(func(_, v []byte) error {
		var other partitionInfo
		if err := json.Unmarshal(v, &other); err != nil {
			return fmt.Errorf("decode partition registry: %w", err)
		}
		if other.Name == p.Name {
			return fhir.Errorf(http.StatusBadRequest, fhir.CodeDuplicate, "Partition name %q is already defined", p.Name)
		}
		return nil
	})
	if err != nil {
		return err
	}
	raw, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encode partition: %w", err)
	}
	if err := reg.Put([]byte(key), raw); err != nil {
		return fmt.Errorf("register partition %d: %w", p.ID, err)
	}
	// A stale bucket cannot exist (delete removes it), but be safe.
	_ = tx.DeleteBucket(partitionBucketName(key))
	if _, err := tx.CreateBucket(partitionBucketName(key)); err != nil {
		return fmt.Errorf("create partition bucket %d: %w", p.ID, err)
	}
	return nil
}

// deletePartition unregisters a partition and drops all its data (the
// caller drops its search snapshots once the transaction committed).
func deletePartition(tx *bolt.Tx, id int64) (partitionInfo, error) {
	var p partitionInfo
	if id == 0 {
		return p, fhir.Errorf(http.StatusBadRequest, fhir.CodeBusinessRule, "Can not delete default partition")
	}
	key := partitionKey(id)
	reg := tx.Bucket(bucketPartitions)
	raw := reg.Get([]byte(key))
	if raw == nil {
		return p, fhir.Errorf(http.StatusNotFound, fhir.CodeNotFound, "No partition exists with ID %d", id)
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return p, fmt.Errorf("decode partition %d: %w", id, err)
	}
	if err := reg.Delete([]byte(key)); err != nil {
		return p, fmt.Errorf("unregister partition %d: %w", id, err)
	}
	if err := tx.DeleteBucket(partitionBucketName(key)); err != nil {
		return p, fmt.Errorf("drop partition %d data: %w", id, err)
	}
	return p, nil
}

// listPartitions returns the registry in id order.
func listPartitions(tx *bolt.Tx) ([]partitionInfo, error) {
	var out []partitionInfo
	err := tx.Bucket(bucketPartitions).ForEach(func(_, v []byte) error {
		var p partitionInfo
		if err := json.Unmarshal(v, &p); err != nil {
			return fmt.Errorf("decode partition registry: %w", err)
		}
		out = append(out, p)
		return nil
	})
	return out, err
}
