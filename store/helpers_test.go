package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// testServer is a store served on 127.0.0.1 for one test.
type testServer struct {
	t   *testing.T
	db  *DB
	srv *httptest.Server
}

// newTestServer opens a fresh store file and serves it.
func newTestServer(t *testing.T) *testServer {
	t.Helper()
	db, err := Open(filepath.Join(t.TempDir(), "store.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewHandler(db, Config{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.Close()
		_ = db.Close()
	})
	return &testServer{t: t, db: db, srv: srv}
}

// response is a finished HTTP exchange.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body.
func (r *response) JSON(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("response is not JSON (%d): %v: %s", r.Status, err, r.Body)
	}
	return m
}

// do sends a request. body may be nil, a string, []byte or any JSON value.
// partition "" sends no partition header.
func (s *testServer) do(method, path, partition string, body any, headers ...string) *response {
	s.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			s.t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, s.srv.URL+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	if partition != "" {
		req.Header.Set("X-Request-Partition-IDs", partition)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] == "" {
			req.Header.Del(headers[i])
			continue
		}
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := s.srv.Client().Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	return &response{Status: resp.StatusCode, Header: resp.Header, Body: raw}
}

// must is do that fails the test unless the status is want.
func (s *testServer) must(want int, method, path, partition string, body any, headers ...string) *response {
	s.t.Helper()
	r := s.do(method, path, partition, body, headers...)
	if r.Status != want {
		s.t.Fatalf("%s %s: status %d, want %d: %s", method, path, r.Status, want, r.Body)
	}
	return r
}

// createPartition creates partition id with a name derived from it.
func (s *testServer) createPartition(id int) {
	s.t.Helper()
	s.must(http.StatusOK, http.MethodPost, "/fhir/$partition-management-create-partition", "DEFAULT", partitionParams(id, fmt.Sprintf("part-%d", id)))
}

// partitionParams is the Parameters body of create-partition.
func partitionParams(id int, name string) map[string]any {
	return map[string]any{"resourceType": "Parameters", "parameter": []any{
		map[string]any{"name": "id", "valueInteger": id},
		map[string]any{"name": "name", "valueCode": name},
		map[string]any{"name": "description", "valueString": "test partition " + name},
	}}
}

// expectOutcome checks an error response: status and an OperationOutcome
// whose diagnostics contain substr.
func expectOutcome(t *testing.T, r *response, status int, substr string) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d: %s", r.Status, status, r.Body)
	}
	m := r.JSON(t)
	if m["resourceType"] != "OperationOutcome" {
		t.Fatalf("want an OperationOutcome, got %s", r.Body)
	}
	if !strings.Contains(string(r.Body), substr) {
		t.Fatalf("OperationOutcome does not mention %q: %s", substr, r.Body)
	}
}

// dumpPartition renders every key and value under a partition bucket, so
// that two dumps are equal exactly when the stored bytes are.
func dumpPartition(t *testing.T, db *DB, key string) string {
	t.Helper()
	var out strings.Builder
	err := db.bolt.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(partitionBucketName(key))
		if b == nil {
			return fmt.Errorf("no partition %s", key)
		}
		var walk func(prefix string, b *bolt.Bucket) error
		walk = func(prefix string, b *bolt.Bucket) error {
			return b.ForEach(func(k, v []byte) error {
				if v == nil {
					fmt.Fprintf(&out, "%s%q/\n", prefix, k)
					return walk(prefix+fmt.Sprintf("%q/", k), b.Bucket(k))
				}
				fmt.Fprintf(&out, "%s%q=%x\n", prefix, k, v)
				return nil
			})
		}
		return walk("", b)
	})
	if err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// str digs a string out of decoded JSON by path of keys and indexes.
func str(v any, path ...any) string {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			a, _ := v.([]any)
			if k >= len(a) {
				return ""
			}
			v = a[k]
		}
	}
	s, _ := v.(string)
	return s
}

// newLocalServer serves h on 127.0.0.1 until the test ends.
func newLocalServer(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}
