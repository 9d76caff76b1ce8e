package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/pfrgateway/caddy-pfr/api"
	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/backend"
	"github.com/pfrgateway/caddy-pfr/gateway"
	"github.com/pfrgateway/caddy-pfr/internal/kv"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
	"github.com/pfrgateway/caddy-pfr/store"
	"github.com/pfrgateway/caddy-pfr/tenancy"
)

// exportEnv is the gateway with bulk export in front of the embedded
// store, without Caddy: a record "john" owned by alice.
type exportEnv struct {
	cfg     gateway.Config
	gw      *gateway.Gateway
	up      gateway.UpstreamFunc
	store   http.Handler
	tenants tenancy.Store
	dev     *auth.DevIssuer
	pid     string
	cancel  context.CancelFunc
	done    chan struct{}
	// hook, when set, sees every request the export jobs send upstream
	// before it is served.
	hook atomic.Pointer[func(*http.Request)]
	// refuse, when set, answers the export jobs' requests it matches
	// with a 404 instead of the store (an upstream without them).
	refuse atomic.Pointer[func(*http.Request) bool]
}

// newExportEnv starts the gateway; trusted says whether it trusts the
// store's partitions (when not, every defense of an untrusted upstream is
// on the export's reads too).
func newExportEnv(t testing.TB, trusted bool, bc gateway.BulkConfig) *exportEnv {
	t.Helper()
	dir := t.TempDir()
	db, err := bbolt.Open(filepath.Join(dir, "pfr.db"), 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	tenants, err := tenancy.NewBoltStore(db)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := auth.LoadOrCreateDevIssuer(dir)
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := auth.NewVerifier([]auth.IssuerConfig{dev.Config()}, auth.Options{})
	if err != nil {
		t.Fatal(err)
	}
	be, err := backend.New(backend.Config{})
	if err != nil {
		t.Fatal(err)
	}
	sdb, err := store.Open(filepath.Join(dir, "store.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sdb.Close() })
	sh, err := store.NewHandler(sdb, store.Config{OnInternalError: func(_ *http.Request, err error) {
		t.Errorf("the store failed inside: %v", err)
	}})
	if err != nil {
		t.Fatal(err)
	}
	up := gateway.UpstreamFunc(func(w http.ResponseWriter, r *http.Request) error { sh.ServeHTTP(w, r); return nil })
	if bc.Dir == "" {
		bc.Dir = filepath.Join(dir, "bulk")
	}
	e := &exportEnv{}
	bc.Upstream = gateway.UpstreamFunc(func(w http.ResponseWriter, r *http.Request) error {
		if hook := e.hook.Load(); hook != nil {
			(*hook)(r)
		}
		if refuse := e.refuse.Load(); refuse != nil && (*refuse)(r) {
			w.Header().Set("Content-Type", "application/fhir+json")
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-supported","diagnostics":"no type history here"}]}`))
			return nil
		}
		sh.ServeHTTP(w, r)
		return nil
	})
	if bc.Settle == 0 {
		bc.Settle = time.Millisecond
	}
	if bc.Node != "" {
		// A node of a cluster: the jobs in the state (here the bbolt
		// file the records are in) that other nodes share.
		bc.Shared = kv.Bolt(db)
	}
	cfg := gateway.Config{BaseDomain: "pfr.localhost", Backend: be, Tenancy: tenants, Verifier: verifier,
		TrustUpstreamIsolation: trusted, Bulk: bc}
	gw, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	api.New(gw)
	e.cfg, e.gw, e.up, e.store, e.tenants, e.dev, e.done = cfg, gw, up, sh, tenants, dev, make(chan struct{})
	e.start()
	t.Cleanup(e.stop)
	res := e.do(t, e.token(t, "alice", ""), "POST", "pfr.localhost", "/pfr/v1/records", []byte(
		`{"slug":"john","patient":{"resourceType":"Patient","name":[{"family":"Doe","given":["John"]}],"birthDate":"1970-01-01"}}`))
	if res.Code != http.StatusCreated {
		t.Fatalf("creating the record: %d %s", res.Code, res.Body)
	}
	var view struct {
		PatientID string `json:"patientId"`
	}
	_ = json.Unmarshal(res.Body.Bytes(), &view)
	e.pid = view.PatientID
	return e
}

// start runs the export jobs, as the Caddy module does.
func (e *exportEnv) start() {
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.done = cancel, make(chan struct{})
	go func() {
		defer close(e.done)
		_ = e.gw.RunBulk(ctx)
	}()
}

func (e *exportEnv) stop() {
	e.cancel()
	<-e.done
}

// restart stops the jobs and starts a new gateway on the same state, as a
// new process would: what it knows of the jobs is what is on disk.
func (e *exportEnv) restart(t testing.TB) {
	t.Helper()
	e.stop()
	gw, err := gateway.New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	api.New(gw)
	e.gw = gw
	e.start()
}

func (e *exportEnv) token(t testing.TB, sub, scope string) string {
	t.Helper()
	if scope == "" {
		scope = "openid patient/*.cruds"
	}
	tok, err := e.dev.Mint(sub, scope, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (e *exportEnv) do(t testing.TB, token, method, host, path string, body []byte, headers ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, "http://"+host+path, bytes.NewReader(body))
	req.Host = host
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	w := httptest.NewRecorder()
	if err := e.gw.ServeHTTP(w, req, e.up); err != nil {
		t.Fatal(err)
	}
	return w
}

const johnHost = "john.pfr.localhost"

// write creates or updates a resource through the gateway and returns it.
func (e *exportEnv) write(t testing.TB, token, method, path, body string) map[string]any {
	t.Helper()
	res := e.do(t, token, method, johnHost, "/fhir"+path, []byte(body), "Prefer", "return=representation")
	if res.Code != http.StatusCreated && res.Code != http.StatusOK {
		t.Fatalf("%s %s: %d %s", method, path, res.Code, res.Body)
	}
	var out map[string]any
	if err := json.Unmarshal(res.Body.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func observation(pid string, value string) string {
	return `{"resourceType":"Observation","status":"final","code":{"text":"glucose"},"subject":{"reference":"Patient/` + pid +
		`"},"valueQuantity":{"value":` + value + `,"unit":"mg/dL"}}`
}

// kickOff starts an export and returns its status URL's path.
func (e *exportEnv) kickOff(t testing.TB, token, path string) string {
	t.Helper()
	res := e.do(t, token, "GET", johnHost, "/fhir"+path, nil, "Prefer", "respond-async", "Accept", "application/fhir+json")
	if res.Code != http.StatusAccepted {
		t.Fatalf("kick-off %s: %d %s", path, res.Code, res.Body)
	}
	loc := res.Header().Get("Content-Location")
	prefix := "http://" + johnHost + "/fhir/$export-status/"
	if !strings.HasPrefix(loc, prefix) {
		t.Fatalf("Content-Location %q is not a status URL under %s", loc, prefix)
	}
	return strings.TrimPrefix(loc, "http://"+johnHost)
}

type manifest struct {
	TransactionTime     string `json:"transactionTime"`
	Request             string `json:"request"`
	RequiresAccessToken bool   `json:"requiresAccessToken"`
	Output              []struct {
		Type      string `json:"type"`
		URL       string `json:"url"`
		Count     int    `json:"count"`
		Extension struct {
			SHA256 string `json:"sha256"`
		} `json:"extension"`
	} `json:"output"`
	Error []struct {
		Type string `json:"type"`
		URL  string `json:"url"`
	} `json:"error"`
}

// poll polls the status URL until the manifest comes, checking that every
// answer before it is a 202 with X-Progress and Retry-After.
func (e *exportEnv) poll(t testing.TB, token, status string) manifest {
	t.Helper()
	var m manifest
	testkit.Wait(t, "the export to finish", func() bool {
		res := e.do(t, token, "GET", johnHost, status, nil)
		switch res.Code {
		case http.StatusAccepted:
			if res.Header().Get("X-Progress") == "" || res.Header().Get("Retry-After") == "" {
				t.Fatalf("a 202 without X-Progress or Retry-After: %v", res.Header())
			}
			return false
		case http.StatusOK:
			if err := json.Unmarshal(res.Body.Bytes(), &m); err != nil {
				t.Fatalf("manifest: %v: %s", err, res.Body)
			}
			if res.Header().Get("Expires") == "" {
				t.Errorf("the manifest has no Expires header")
			}
			return true
		default:
			t.Fatalf("status: %d %s", res.Code, res.Body)
			return false
		}
	})
	return m
}

// download reads every output file of m: type → id → resource line.
func (e *exportEnv) download(t testing.TB, token string, m manifest) map[string]map[string]json.RawMessage {
	t.Helper()
	out := map[string]map[string]json.RawMessage{}
	for _, o := range m.Output {
		path := strings.TrimPrefix(o.URL, "http://"+johnHost)
		res := e.do(t, token, "GET", johnHost, path, nil)
		if res.Code != http.StatusOK || res.Header().Get("Content-Type") != "application/fhir+ndjson" {
			t.Fatalf("download %s: %d %s %s", o.URL, res.Code, res.Header().Get("Content-Type"), res.Body)
		}
		if out[o.Type] == nil {
			out[o.Type] = map[string]json.RawMessage{}
		}
		sc := bufio.NewScanner(res.Body)
		sc.Buffer(nil, 16<<20)
		n := 0
		for sc.Scan() {
			var h struct {
				ResourceType string `json:"resourceType"`
				ID           string `json:"id"`
			}
			line := append(json.RawMessage(nil), sc.Bytes()...)
			if err := json.Unmarshal(line, &h); err != nil || h.ResourceType != o.Type {
				t.Fatalf("%s: a line that is not a %s: %s", o.URL, o.Type, line)
			}
			if _, dup := out[o.Type][h.ID]; dup {
				t.Errorf("%s/%s exported twice", o.Type, h.ID)
			}
			out[o.Type][h.ID] = line
			n++
		}
		if n != o.Count {
			t.Errorf("%s: manifest count %d, file has %d lines", o.Type, o.Count, n)
		}
	}
	return out
}

func TestExportRecord(t *testing.T) {
	for _, trusted := range []bool{true, false} {
		t.Run(fmt.Sprintf("trusted=%v", trusted), func(t *testing.T) {
			e := newExportEnv(t, trusted, gateway.BulkConfig{PageSize: 3})
			alice := e.token(t, "alice", "")
			want := map[string]string{}
			for i := range 7 {
				o := e.write(t, alice, "POST", "/Observation", observation(e.pid, fmt.Sprintf("%d.10", 90+i)))
				want[o["id"].(string)] = fmt.Sprintf("%d.10", 90+i)
			}
			prac := e.write(t, alice, "POST", "/Practitioner", `{"resourceType":"Practitioner","name":[{"family":"House"}]}`)

			status := e.kickOff(t, alice, "/$export")
			m := e.poll(t, alice, status)
			if !m.RequiresAccessToken || m.Request != "http://"+johnHost+"/fhir/$export" || m.TransactionTime == "" {
				t.Errorf("manifest: %+v", m)
			}
			got := e.download(t, alice, m)
			if len(got["Observation"]) != 7 || len(got["Patient"]) != 1 || len(got["Practitioner"]) != 1 || len(got) != 3 {
				t.Fatalf("exported %v", keysOf(got))
			}
			if _, ok := got["Practitioner"][prac["id"].(string)]; !ok {
				t.Errorf("the Practitioner is missing")
			}
			for id, value := range want {
				line := got["Observation"][id]
				// Values byte for byte: 90.10 stays 90.10.
				if !bytes.Contains(line, []byte(`"value":`+value+`,`)) && !bytes.Contains(line, []byte(`"value":`+value+`}`)) {
					t.Errorf("Observation/%s: %s lacks value %s", id, line, value)
				}
			}

			// Patient/$export: the compartment only; _type narrows.
			m = e.poll(t, alice, e.kickOff(t, alice, "/Patient/$export"))
			got = e.download(t, alice, m)
			if len(got["Practitioner"]) != 0 || len(got["Observation"]) != 7 {
				t.Errorf("Patient/$export exported %v", keysOf(got))
			}
			m = e.poll(t, alice, e.kickOff(t, alice, "/$export?_type=Practitioner,Patient&_outputFormat=application/fhir%2Bndjson"))
			got = e.download(t, alice, m)
			if len(got) != 2 || len(got["Practitioner"]) != 1 || len(got["Patient"]) != 1 {
				t.Errorf("_type=Practitioner,Patient exported %v", keysOf(got))
			}
		})
	}
}

func keysOf[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestExportSince(t *testing.T) {
	e := newExportEnv(t, true, gateway.BulkConfig{})
	alice := e.token(t, "alice", "")
	old := e.write(t, alice, "POST", "/Observation", observation(e.pid, "1"))
	time.Sleep(5 * time.Millisecond)
	mark := time.Now().UTC().Format("2006-01-02T15:04:05.000Z")
	time.Sleep(5 * time.Millisecond)
	newer := e.write(t, alice, "POST", "/Observation", observation(e.pid, "2"))
	m := e.poll(t, alice, e.kickOff(t, alice, "/$export?_type=Observation&_since="+mark))
	got := e.download(t, alice, m)
	if _, ok := got["Observation"][newer["id"].(string)]; !ok || len(got["Observation"]) != 1 {
		t.Errorf("_since=%s exported %v (old %s, new %s)", mark, keysOf(got["Observation"]), old["id"], newer["id"])
	}
}

func TestExportRefusals(t *testing.T) {
	e := newExportEnv(t, true, gateway.BulkConfig{})
	alice := e.token(t, "alice", "")
	cases := []struct {
		name, token, path string
		headers           []string
		status            int
	}{
		{"no Prefer: respond-async", alice, "/$export", nil, 400},
		{"an unknown output format", alice, "/$export?_outputFormat=text/csv", []string{"Prefer", "respond-async"}, 400},
		{"a type that is not one", alice, "/$export?_type=Nonsense", []string{"Prefer", "respond-async"}, 400},
		{"a bad _since", alice, "/$export?_since=yesterday", []string{"Prefer", "respond-async"}, 400},
		{"a non-compartment type at Patient level", alice, "/Patient/$export?_type=Practitioner", []string{"Prefer", "respond-async"}, 400},
		{"_typeFilter", alice, "/$export?_typeFilter=Observation%3Fcode%3D1", []string{"Prefer", "respond-async"}, 400},
		{"no token", "", "/$export", []string{"Prefer", "respond-async"}, 401},
		{"not a member", e.token(t, "mallory", ""), "/$export", []string{"Prefer", "respond-async"}, 403},
		{"a token that may read Observations only, everything", e.token(t, "alice", "patient/Observation.rs"), "/$export", []string{"Prefer", "respond-async"}, 403},
		{"a token without search", e.token(t, "alice", "patient/*.r"), "/$export?_type=Observation", []string{"Prefer", "respond-async"}, 403},
		{"POST", alice, "/$export", []string{"Prefer", "respond-async"}, 405},
	}
	for _, c := range cases {
		method := "GET"
		if c.name == "POST" {
			method = "POST"
		}
		res := e.do(t, c.token, method, johnHost, "/fhir"+c.path, nil, c.headers...)
		if res.Code != c.status || !strings.Contains(res.Body.String(), `"OperationOutcome"`) {
			t.Errorf("%s: %d %s, want %d with an OperationOutcome", c.name, res.Code, res.Body, c.status)
		}
	}

	// A viewer may read but not export.
	err := e.tenants.Update(context.Background(), func(tx tenancy.Tx) error {
		rec, err := tx.RecordBySlug("john")
		if err != nil {
			return err
		}
		acct, err := tx.EnsureAccount(e.dev.Issuer(), "victor")
		if err != nil {
			return err
		}
		return tx.SetMembership(tenancy.Membership{RecordID: rec.ID, AccountID: acct.ID, Role: tenancy.RoleViewer})
	})
	if err != nil {
		t.Fatal(err)
	}
	victor := e.token(t, "victor", "")
	if res := e.do(t, victor, "GET", johnHost, "/fhir/$export", nil, "Prefer", "respond-async"); res.Code != http.StatusForbidden {
		t.Errorf("a viewer's export: %d %s", res.Code, res.Body)
	}

	// A scope on Observations exports Observations.
	obsOnly := e.token(t, "alice", "patient/Observation.rs")
	e.write(t, alice, "POST", "/Observation", observation(e.pid, "3"))
	m := e.poll(t, obsOnly, e.kickOff(t, obsOnly, "/$export?_type=Observation"))
	if got := e.download(t, obsOnly, m); len(got["Observation"]) != 1 {
		t.Errorf("Observation-scoped export: %v", keysOf(got))
	}

	// The status URL and the files are the exporter's only: another
	// owner of the record, a viewer and a stranger get a 404.
	status := e.kickOff(t, alice, "/$export?_type=Patient")
	m = e.poll(t, alice, status)
	file := strings.TrimPrefix(m.Output[0].URL, "http://"+johnHost)
	for _, other := range []string{victor, e.token(t, "mallory", "")} {
		for _, p := range []string{status, file} {
			if res := e.do(t, other, "GET", johnHost, p, nil); res.Code != http.StatusForbidden && res.Code != http.StatusNotFound {
				t.Errorf("someone else's GET %s: %d", p, res.Code)
			}
		}
	}
	if res := e.do(t, alice, "GET", johnHost, "/fhir/$export-status/0123456789abcdef0123456789abcdef", nil); res.Code != http.StatusNotFound {
		t.Errorf("an unknown job: %d", res.Code)
	}
	if res := e.do(t, alice, "GET", johnHost, "/fhir/$export-file/../../etc/passwd", nil); res.Code != http.StatusNotFound && res.Code != http.StatusBadRequest {
		t.Errorf("a path outside the job: %d", res.Code)
	}

	// DELETE cancels and removes the files.
	if res := e.do(t, alice, "DELETE", johnHost, status, nil); res.Code != http.StatusAccepted {
		t.Fatalf("cancel: %d %s", res.Code, res.Body)
	}
	for _, p := range []string{status, file} {
		if res := e.do(t, alice, "GET", johnHost, p, nil); res.Code != http.StatusNotFound {
			t.Errorf("after cancel, GET %s: %d", p, res.Code)
		}
	}
}

// TestExportSnapshotUnderWrites exports while another client creates,
// updates and deletes Observations as fast as it can: the export holds
// exactly the Observations that existed at its transactionTime, each in
// the version current then. The truth is computed afterwards from the
// store's whole history, read directly (not through the export's reads).
//
// On an upstream without type history the export finds what was updated
// after the transaction time by searching _lastUpdated=gt{T}; deletions
// cannot be found there, so that case has none.
func TestExportSnapshotUnderWrites(t *testing.T) {
	for _, c := range []struct {
		name               string
		trusted, noHistory bool
	}{{"trusted", true, false}, {"untrusted", false, false}, {"no type history", true, true}} {
		t.Run(c.name, func(t *testing.T) {
			trusted := c.trusted
			e := newExportEnv(t, trusted, gateway.BulkConfig{PageSize: 2})
			if c.noHistory {
				refuse := func(r *http.Request) bool { return strings.HasSuffix(r.URL.Path, "/Observation/_history") }
				e.refuse.Store(&refuse)
			}
			alice := e.token(t, "alice", "")
			const writers = 3
			ids := make([][]string, writers)
			for i := range 150 {
				o := e.write(t, alice, "POST", "/Observation", observation(e.pid, fmt.Sprintf("%d", i)))
				ids[i%writers] = append(ids[i%writers], o["id"].(string))
			}
			// Before each read of the export, the writers make one write
			// each (an update, a create or a delete), through the
			// gateway like any client: the writes interleave with every
			// page, history and version read of the export.
			steps := make([]chan chan struct{}, writers)
			var wg sync.WaitGroup
			var mu sync.Mutex
			writes := 0
			for k := range writers {
				steps[k] = make(chan chan struct{})
				wg.Add(1)
				go func() {
					defer wg.Done()
					mine := ids[k]
					i := k
					for ack := range steps[k] {
						id := mine[(i*7)%len(mine)]
						op := i % 4
						if c.noHistory && op == 3 {
							op = 0
						}
						switch op {
						case 0, 1: // update
							e.do(t, alice, "PUT", johnHost, "/fhir/Observation/"+id,
								[]byte(strings.Replace(observation(e.pid, fmt.Sprintf("%d.5", i)), `{"resourceType":"Observation",`,
									`{"resourceType":"Observation","id":"`+id+`",`, 1)))
						case 2: // create
							o := e.write(t, alice, "POST", "/Observation", observation(e.pid, fmt.Sprintf("%d.25", i)))
							mine = append(mine, o["id"].(string))
						case 3: // delete
							e.do(t, alice, "DELETE", johnHost, "/fhir/Observation/"+id, nil)
						}
						i++
						mu.Lock()
						writes++
						ids[k] = mine
						mu.Unlock()
						close(ack)
					}
				}()
			}
			var reads atomic.Int64
			hook := func(*http.Request) {
				n := reads.Add(1)
				ack := make(chan struct{})
				steps[n%writers] <- ack
				<-ack
			}
			e.hook.Store(&hook)
			m := e.poll(t, alice, e.kickOff(t, alice, "/$export?_type=Observation"))
			e.hook.Store(nil)
			for _, s := range steps {
				close(s)
			}
			wg.Wait()
			got := e.download(t, alice, m)["Observation"]
			T, err := time.Parse(time.RFC3339Nano, m.TransactionTime)
			if err != nil {
				t.Fatal(err)
			}
			want := e.asOf(t, "Observation", T)
			changedAfter := 0
			for id, body := range want {
				line, ok := got[id]
				if !ok {
					t.Errorf("Observation/%s existed at %s but is missing", id, m.TransactionTime)
					continue
				}
				if !sameVersion(line, body) {
					t.Errorf("Observation/%s: exported %s, at %s it was %s", id, line, m.TransactionTime, body)
				}
			}
			for id := range got {
				if _, ok := want[id]; !ok {
					t.Errorf("Observation/%s did not exist at %s but was exported", id, m.TransactionTime)
				}
			}
			for _, id := range slices.Concat(ids...) {
				if body, ok := e.current(t, "Observation", id); ok && !sameVersion(got[id], body) {
					changedAfter++
				}
			}
			t.Logf("%d concurrent writes, %d exported, %d changed after the transaction time", writes, len(got), changedAfter)
			if changedAfter == 0 {
				t.Errorf("nothing changed after the transaction time: the test proved nothing")
			}
		})
	}
}

// asOf reads the store's whole history of typ directly (partition 1, the
// record's) and returns each resource's version current at T.
func (e *exportEnv) asOf(t testing.TB, typ string, T time.Time) map[string]json.RawMessage {
	t.Helper()
	out := map[string]json.RawMessage{}
	decided := map[string]bool{}
	next := "/fhir/" + typ + "/_history?_count=1000"
	for next != "" {
		req := httptest.NewRequest("GET", "http://store"+next, nil)
		req.Header.Set("X-Request-Partition-IDs", partitionOf(t, e))
		w := httptest.NewRecorder()
		e.store.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			t.Fatalf("store history: %d %s", w.Code, w.Body)
		}
		var b struct {
			Link []struct {
				Relation, URL string
			} `json:"link"`
			Entry []struct {
				FullURL  string          `json:"fullUrl"`
				Resource json.RawMessage `json:"resource"`
				Response struct {
					LastModified string `json:"lastModified"`
				} `json:"response"`
			} `json:"entry"`
		}
		if err := json.Unmarshal(w.Body.Bytes(), &b); err != nil {
			t.Fatal(err)
		}
		for _, en := range b.Entry { // newest first
			at, err := time.Parse(time.RFC3339Nano, en.Response.LastModified)
			if err != nil {
				t.Fatalf("history entry without lastModified: %+v", en)
			}
			id := en.FullURL[strings.LastIndex(en.FullURL, "/")+1:]
			if decided[id] || at.After(T) {
				continue
			}
			decided[id] = true
			if en.Resource != nil {
				out[id] = en.Resource
			}
		}
		next = ""
		for _, l := range b.Link {
			if l.Relation == "next" {
				next = strings.TrimPrefix(l.URL, "http://store")
			}
		}
	}
	return out
}

func (e *exportEnv) current(t testing.TB, typ, id string) (json.RawMessage, bool) {
	req := httptest.NewRequest("GET", "http://store/fhir/"+typ+"/"+id, nil)
	req.Header.Set("X-Request-Partition-IDs", partitionOf(t, e))
	w := httptest.NewRecorder()
	e.store.ServeHTTP(w, req)
	return w.Body.Bytes(), w.Code == http.StatusOK
}

func partitionOf(t testing.TB, e *exportEnv) string {
	var id int64
	err := e.tenants.View(context.Background(), func(tx tenancy.Tx) error {
		rec, err := tx.RecordBySlug("john")
		if err == nil {
			id = rec.PartitionID
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint(id)
}

// sameVersion compares two renderings of a resource by id and versionId.
func sameVersion(a, b json.RawMessage) bool {
	var x, y struct {
		ID   string `json:"id"`
		Meta struct {
			VersionID string `json:"versionId"`
		} `json:"meta"`
	}
	return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && x.ID == y.ID && x.Meta.VersionID == y.Meta.VersionID
}

// TestExportResumes stops the jobs in the middle of an export and starts a
// new gateway on the same directory: the job resumes where its state on
// disk says and its files are whole (every resource once).
func TestExportResumes(t *testing.T) {
	e := newExportEnv(t, true, gateway.BulkConfig{PageSize: 1})
	alice := e.token(t, "alice", "")
	for i := range 40 {
		e.write(t, alice, "POST", "/Observation", observation(e.pid, fmt.Sprint(i)))
		e.write(t, alice, "POST", "/Condition", `{"resourceType":"Condition","subject":{"reference":"Patient/`+e.pid+`"},"code":{"text":"c`+fmt.Sprint(i)+`"}}`)
	}
	status := e.kickOff(t, alice, "/$export?_type=Condition,Patient,Observation")
	// Stop once the second type is under way.
	testkit.WaitFor(t, "the export to reach its second type", 2*time.Millisecond, func() error {
		res := e.do(t, alice, "GET", johnHost, status, nil)
		if res.Code != http.StatusAccepted {
			t.Fatalf("the export ended before it could be interrupted: %d", res.Code)
		}
		if p := res.Header().Get("X-Progress"); !strings.Contains(p, "Patient") && !strings.Contains(p, "Observation") {
			return fmt.Errorf("it says %q", p)
		}
		return nil
	})
	e.restart(t)
	m := e.poll(t, alice, status)
	got := e.download(t, alice, m)
	if len(got["Observation"]) != 40 || len(got["Condition"]) != 40 || len(got["Patient"]) != 1 {
		t.Errorf("after the restart: %d Observations, %d Conditions, %d Patients", len(got["Observation"]), len(got["Condition"]), len(got["Patient"]))
	}
}

// TestExportExpires: a finished export's status URL and files are gone
// after the TTL.
func TestExportExpires(t *testing.T) {
	e := newExportEnv(t, true, gateway.BulkConfig{TTL: 300 * time.Millisecond})
	alice := e.token(t, "alice", "")
	status := e.kickOff(t, alice, "/$export?_type=Patient")
	m := e.poll(t, alice, status)
	file := strings.TrimPrefix(m.Output[0].URL, "http://"+johnHost)
	time.Sleep(400 * time.Millisecond)
	for _, p := range []string{status, file} {
		if res := e.do(t, alice, "GET", johnHost, p, nil); res.Code != http.StatusNotFound {
			t.Errorf("GET %s after expiry: %d", p, res.Code)
		}
	}
	entries, err := os.ReadDir(e.cfg.Bulk.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("files left after expiry: %v", entries)
	}
}

// TestExportAdvertised: the CapabilityStatement names the Bulk Data
// operations, the SMART configuration the scopes an export needs.
func TestExportAdvertised(t *testing.T) {
	e := newExportEnv(t, true, gateway.BulkConfig{})
	res := e.do(t, "", "GET", johnHost, "/fhir/metadata", nil)
	if res.Code != http.StatusOK {
		t.Fatalf("metadata: %d %s", res.Code, res.Body)
	}
	for _, want := range []string{
		`"http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"`,
		`{"definition":"http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export","name":"export"}`,
		`{"definition":"http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export","name":"export"}`,
	} {
		if !strings.Contains(res.Body.String(), want) {
			t.Errorf("the CapabilityStatement lacks %s", want)
		}
	}
	e.stop()
	e.cfg.SMART = gateway.SMARTConfig{Overrides: map[string]any{"authorization_endpoint": "https://login.example/authorize",
		"scopes_supported": []any{"openid", "patient/*.rs"}}}
	var err error
	if e.gw, err = gateway.New(e.cfg); err != nil {
		t.Fatal(err)
	}
	api.New(e.gw)
	e.start()
	res = e.do(t, "", "GET", johnHost, "/.well-known/smart-configuration", nil)
	if res.Code != http.StatusOK || !strings.Contains(res.Body.String(), `"system/*.rs"`) || !strings.Contains(res.Body.String(), `"patient/*.rs"`) || strings.Count(res.Body.String(), `"patient/*.rs"`) != 1 {
		t.Errorf("the SMART configuration lacks the export scopes: %s", res.Body)
	}
}

// TestExportStopsWhenAccessEnds: a manager demoted to viewer while the
// export runs stops it; the job fails with a 403 instead of finishing.
func TestExportStopsWhenAccessEnds(t *testing.T) {
	e := newExportEnv(t, true, gateway.BulkConfig{PageSize: 1})
	alice := e.token(t, "alice", "")
	for i := range 5 {
		e.write(t, alice, "POST", "/Observation", observation(e.pid, fmt.Sprint(i)))
	}
	setRole := func(role tenancy.Role) {
		t.Helper()
		err := e.tenants.Update(context.Background(), func(tx tenancy.Tx) error {
			rec, err := tx.RecordBySlug("john")
			if err != nil {
				return err
			}
			acct, err := tx.EnsureAccount(e.dev.Issuer(), "mark")
			if err != nil {
				return err
			}
			return tx.SetMembership(tenancy.Membership{RecordID: rec.ID, AccountID: acct.ID, Role: role})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	setRole(tenancy.RoleManager)
	mark := e.token(t, "mark", "")
	var once sync.Once
	demoted := make(chan struct{})
	hook := func(*http.Request) { once.Do(func() { setRole(tenancy.RoleViewer); close(demoted) }) }
	e.hook.Store(&hook)
	status := e.kickOff(t, mark, "/$export?_type=Observation")
	<-demoted
	// As a viewer, mark sees nothing of the export.
	if res := e.do(t, mark, "GET", johnHost, status, nil); res.Code != http.StatusForbidden {
		t.Fatalf("a viewer polls: %d", res.Code)
	}
	jobFile := filepath.Join(e.cfg.Bulk.Dir, strings.TrimPrefix(status, "/fhir/$export-status/"), "job.json")
	testkit.WaitFor(t, "the job to end", 10*time.Millisecond, func() error {
		raw, err := os.ReadFile(jobFile)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(raw, []byte(`"status": "in-progress"`)) {
			return errors.New("it is in progress")
		}
		return nil
	})
	setRole(tenancy.RoleManager)
	res := e.do(t, mark, "GET", johnHost, status, nil)
	if res.Code != http.StatusForbidden || !strings.Contains(res.Body.String(), "no longer owns or manages") {
		t.Fatalf("the export of a demoted manager: %d %s", res.Code, res.Body)
	}
}
