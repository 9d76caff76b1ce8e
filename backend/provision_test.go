package backend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// fakeHAPI answers HAPI FHIR's partition management operations from a
// table of partitions, the way PartitionLookupSvcImpl does (name checked
// before id), and records the requests.
type fakeHAPI struct {
	partitions map[int64]string // id → name
	seen       []*http.Request
	bodies     []string
	failWith   error // transport failure
	noRead     bool  // answer like a server without read-partition
}

func (f *fakeHAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) error {
	if f.failWith != nil {
		return f.failWith
	}
	body, _ := io.ReadAll(r.Body)
	f.seen = append(f.seen, r)
	f.bodies = append(f.bodies, string(body))
	var in parameters
	if err := json.Unmarshal(body, &in); err != nil && len(body) > 0 {
		w.WriteHeader(http.StatusBadRequest)
		return nil
	}
	var id int64
	var name string
	for _, p := range in.Parameter {
		if p.ValueInteger != nil {
			id = *p.ValueInteger
		}
		if p.Name == "name" {
			name = p.ValueCode
		}
	}
	outcome := func(status int, diag string) {
		w.Header().Set("Content-Type", "application/fhir+json")
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"processing","diagnostics":%q}]}`, diag)
	}
	switch {
	case strings.HasSuffix(r.URL.Path, opCreatePartition):
		for _, n := range f.partitions {
			if n == name {
				outcome(http.StatusBadRequest, fmt.Sprintf("HAPI-1309: Partition name %q is already defined", name))
				return nil
			}
		}
		if _, ok := f.partitions[id]; ok {
			outcome(http.StatusBadRequest, "HAPI-2366: Partition ID already exists")
			return nil
		}
		f.partitions[id] = name
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body)
	case strings.HasSuffix(r.URL.Path, opListPartitions):
		var parts []string
		for id, n := range f.partitions {
			parts = append(parts, fmt.Sprintf(`{"name":"partition","part":[{"name":"id","valueInteger":%d},{"name":"name","valueCode":%q}]}`, id, n))
		}
		fmt.Fprintf(w, `{"resourceType":"Parameters","parameter":[%s]}`, strings.Join(parts, ","))
	case strings.HasSuffix(r.URL.Path, opReadPartition) && !f.noRead:
		n, ok := f.partitions[id]
		if !ok {
			outcome(http.StatusNotFound, fmt.Sprintf("No partition exists with ID %d", id))
			return nil
		}
		fmt.Fprintf(w, `{"resourceType":"Parameters","parameter":[{"name":"id","valueInteger":%d},{"name":"name","valueCode":%q}]}`, id, n)
	case strings.HasSuffix(r.URL.Path, opDeletePartition):
		if _, ok := f.partitions[id]; !ok {
			outcome(http.StatusInternalServerError, fmt.Sprintf("HAPI-1308: No partition exists with ID %d", id))
			return nil
		}
		delete(f.partitions, id)
		w.WriteHeader(http.StatusOK)
	default:
		w.WriteHeader(http.StatusNotFound)
	}
	return nil
}

func TestProvisionRequestsPerMode(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		mode       Mode
		path       string
		partHeader string
	}{
		{ModeHeader, "/fhir/$partition-management-create-partition", "DEFAULT"},
		{ModeURLPrefix, "/fhir/DEFAULT/$partition-management-create-partition", ""},
	} {
		b, err := New(Config{Mode: c.mode})
		if err != nil {
			t.Fatal(err)
		}
		reqs, err := b.ProvisionRequests(ctx, testTarget)
		if err != nil || len(reqs) != 1 {
			t.Fatalf("%s: %d requests, %v", c.mode, len(reqs), err)
		}
		r := reqs[0]
		if r.Method != http.MethodPost || r.URL.EscapedPath() != c.path || r.Header.Get("X-Request-Partition-IDs") != c.partHeader {
			t.Errorf("%s: %s %s partition header %q", c.mode, r.Method, r.URL.EscapedPath(), r.Header.Get("X-Request-Partition-IDs"))
		}
		if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/fhir+json") {
			t.Errorf("%s: Content-Type %q", c.mode, r.Header.Get("Content-Type"))
		}
		body, _ := io.ReadAll(r.Body)
		want := `{"resourceType":"Parameters","parameter":[{"name":"id","valueInteger":7},` +
			`{"name":"name","valueCode":"pfr-rec1"},{"name":"description","valueString":"Personal FHIR Record rec1"}]}`
		if string(body) != want {
			t.Errorf("%s: body %s", c.mode, body)
		}
		del, err := b.DeleteRequests(ctx, testTarget)
		if err != nil || len(del) != 1 || !strings.HasSuffix(del[0].URL.Path, opDeletePartition) {
			t.Fatalf("%s delete: %v %v", c.mode, del, err)
		}
		if body, _ := io.ReadAll(del[0].Body); string(body) != `{"resourceType":"Parameters","parameter":[{"name":"id","valueInteger":7}]}` {
			t.Errorf("%s delete body %s", c.mode, body)
		}
	}
	for _, cfg := range []Config{{Mode: ModeTenantHeader}, {Mode: ModePerRecordURL, URLTemplate: "https://x-{record_id}/fhir"}} {
		b, _ := New(cfg)
		if reqs, err := b.ProvisionRequests(ctx, testTarget); reqs != nil || err != nil {
			t.Errorf("%s: want no provisioning, got %v %v", cfg.Mode, reqs, err)
		}
		if reqs, err := b.DeleteRequests(ctx, testTarget); reqs != nil || err != nil {
			t.Errorf("%s: want no deletion, got %v %v", cfg.Mode, reqs, err)
		}
	}
}

func TestProvisionRefusesBadTargets(t *testing.T) {
	b, _ := New(Config{})
	for _, target := range []Target{
		{PartitionID: 0, PartitionName: "p"},
		{PartitionID: 1 << 31, PartitionName: "p"},
		{PartitionID: 1, PartitionName: "DEFAULT"},
		{PartitionID: 1, PartitionName: ""},
		{PartitionID: 1, PartitionName: `a","valueCode":"DEFAULT`},
	} {
		if _, err := b.ProvisionRequests(context.Background(), target); err == nil {
			t.Errorf("%+v: want an error", target)
		}
	}
}

func TestProvisionIsIdempotentAndSafe(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		mode   Mode
		noRead bool
	}{{ModeHeader, false}, {ModeURLPrefix, false}, {ModeHeader, true}} {
		mode := c.mode
		b, _ := New(Config{Mode: mode})
		hapi := &fakeHAPI{partitions: map[int64]string{3: "someone-else"}, noRead: c.noRead}

		if err := b.Provision(ctx, hapi, testTarget); err != nil {
			t.Fatalf("%s: first provisioning: %v", mode, err)
		}
		if err := b.Provision(ctx, hapi, testTarget); err != nil {
			t.Fatalf("%s: provisioning again must succeed: %v", mode, err)
		}
		// Confirmation read went to the management path too.
		last := hapi.seen[len(hapi.seen)-1]
		wantOp := opReadPartition
		if c.noRead {
			wantOp = opListPartitions
		}
		if !strings.HasSuffix(last.URL.Path, wantOp) {
			t.Errorf("%s: an existing partition must be confirmed, last request %s", mode, last.URL.Path)
		}
		if mode == ModeHeader && last.Header.Get("X-Request-Partition-IDs") != "DEFAULT" {
			t.Errorf("header mode: management request without DEFAULT partition header")
		}

		// Another person's partition id: refused, never shared.
		err := b.Provision(ctx, hapi, Target{RecordID: "r2", PartitionID: 3, PartitionName: "pfr-r2"})
		if err == nil || !strings.Contains(err.Error(), "someone-else") {
			t.Errorf("%s: id of another partition: %v", mode, err)
		}
		// Our name registered under another id: refused.
		err = b.Provision(ctx, hapi, Target{RecordID: "rec1", PartitionID: 9, PartitionName: "pfr-rec1"})
		if err == nil {
			t.Errorf("%s: name registered under another id must fail", mode)
		}
		hapi.partitions[10] = "pfr-r10"
		err = b.Provision(ctx, hapi, Target{RecordID: "r10", PartitionID: 11, PartitionName: "pfr-r10"})
		if err == nil {
			t.Errorf("%s: name under another id must fail", mode)
		}

		if err := b.Deprovision(ctx, hapi, testTarget); err != nil {
			t.Fatalf("%s: delete: %v", mode, err)
		}
		if _, ok := hapi.partitions[7]; ok {
			t.Errorf("%s: partition not deleted", mode)
		}
		if err := b.Deprovision(ctx, hapi, testTarget); err != nil {
			t.Errorf("%s: deleting again must succeed: %v", mode, err)
		}

		hapi.failWith = errors.New("connection refused")
		if err := b.Provision(ctx, hapi, testTarget); err == nil || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("%s: transport error lost: %v", mode, err)
		}
		if err := b.Deprovision(ctx, hapi, testTarget); err == nil {
			t.Errorf("%s: transport error on delete lost", mode)
		}
	}
}

func TestCheckResponses(t *testing.T) {
	cases := []struct {
		status  int
		body    string
		create  error // nil, ErrPartitionExists, or errAny
		deleted bool
	}{
		{200, `{"resourceType":"Parameters","parameter":[]}`, nil, true},
		{201, `{"resourceType":"OperationOutcome"}`, nil, true},
		{200, ``, errAny, true}, // an empty 200: not a FHIR server's answer
		{200, `{}`, errAny, true},
		{201, `<html></html>`, errAny, true},
		{409, `conflict`, ErrPartitionExists, false},
		{400, `{"diagnostics":"HAPI-1309: Partition name \"p\" is already defined"}`, ErrPartitionExists, false},
		{400, `{"diagnostics":"HAPI-2366: Partition ID already exists"}`, ErrPartitionExists, false},
		{400, `{"diagnostics":"Partition ID 7 already exists"}`, ErrPartitionExists, false},
		{400, `{"diagnostics":"HAPI-1312: invalid name"}`, errAny, false},
		{500, `HAPI-1309: in a 500`, errAny, false},
		{404, `not found`, errAny, true},
		{410, ``, errAny, true},
		{500, `{"diagnostics":"HAPI-1308: No partition exists with ID 7"}`, errAny, true},
		{500, `boom`, errAny, false},
		{401, ``, errAny, false},
	}
	for _, c := range cases {
		err := CheckProvisionResponse(c.status, []byte(c.body))
		switch {
		case c.create == nil && err != nil, c.create == ErrPartitionExists && !errors.Is(err, ErrPartitionExists),
			c.create == errAny && (err == nil || errors.Is(err, ErrPartitionExists)):
			t.Errorf("create %d %s: %v", c.status, c.body, err)
		}
		if err := CheckDeleteResponse(c.status, []byte(c.body)); (err == nil) != c.deleted {
			t.Errorf("delete %d %s: %v", c.status, c.body, err)
		}
	}
}

var errAny = errors.New("any error")
