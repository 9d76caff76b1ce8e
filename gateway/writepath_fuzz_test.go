package gateway_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/pfrgateway/caddy-pfr/api"
	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/backend"
	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/fhir/fhirjson"
	"github.com/pfrgateway/caddy-pfr/gateway"
	"github.com/pfrgateway/caddy-pfr/store"
	"github.com/pfrgateway/caddy-pfr/tenancy"
)

// writePath is the whole write path without Caddy: the gateway pipeline in
// front of the embedded store, a record, and a token of its owner.
type writePath struct {
	gw    *gateway.Gateway
	up    gateway.UpstreamFunc
	dev   *auth.DevIssuer
	token string
	pid   string
}

func newWritePath(t testing.TB) *writePath { return newPipeline(t, true) }

// newPipeline is the gateway (trusting the upstream to isolate partitions,
// or not) and its management API in front of the embedded store, with the
// record "fuzz" of the account "fuzzer", whose token is wp.token.
func newPipeline(t testing.TB, trusted bool) *writePath {
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
	gw, err := gateway.New(gateway.Config{BaseDomain: "pfr.localhost", Backend: be, Tenancy: tenants, Verifier: verifier,
		TrustUpstreamIsolation: trusted})
	if err != nil {
		t.Fatal(err)
	}
	api.New(gw)
	tok, err := dev.Mint("fuzzer", "openid patient/*.cruds", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	wp := &writePath{gw: gw, token: tok, dev: dev,
		up: func(w http.ResponseWriter, r *http.Request) error { sh.ServeHTTP(w, r); return nil }}
	res := wp.do(t, "POST", "pfr.localhost", "/pfr/v1/records", []byte(
		`{"slug":"fuzz","patient":{"resourceType":"Patient","name":[{"family":"Fuzz"}],"birthDate":"1970-01-01"}}`))
	if res.Code != http.StatusCreated {
		t.Fatalf("creating the record: %d %s", res.Code, res.Body)
	}
	var view struct {
		PatientID string `json:"patientId"`
	}
	_ = json.Unmarshal(res.Body.Bytes(), &view)
	wp.pid = view.PatientID
	return wp
}

func (wp *writePath) do(t testing.TB, method, host, path string, body []byte, headers ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, "http://"+host+path, bytes.NewReader(body))
	req.Host = host
	req.Header.Set("Authorization", "Bearer "+wp.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	w := httptest.NewRecorder()
	wp.gw.ServeHTTP(w, req, wp.up)
	return w
}

// withoutServerFields decodes a resource and drops what the server assigns.
func withoutServerFields(t testing.TB, raw []byte) map[string]any {
	t.Helper()
	m, err := fhirjson.DecodeObject(raw)
	if err != nil {
		t.Fatalf("the answer is not JSON that round-trips: %v: %.300s", err, raw)
	}
	delete(m, "id")
	delete(m, "meta")
	return m
}

// FuzzWritePath sends request bodies through the whole write path (gateway
// → store → read back), as a create, as an update and inside a
// transaction: no answer is a 5xx, every answer that refuses is an
// OperationOutcome, every accepted write reads back equal (values byte for
// byte, numbers included), and a search of the type still answers 200
// afterwards (nothing stored poisons it).
func FuzzWritePath(f *testing.F) {
	for _, s := range []string{
		`{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/{pid}"},"valueQuantity":{"value":72.50}}`,
		`{"resourceType":"Observation","status":"final","code":{"text":"\u00e9\ud83d\ude00"},"subject":{"reference":"Patient/{pid}"},"valueInteger":-0}`,
		`{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/{pid}"},"valueQuantity":{"value":1e999}}`,
		`{"resourceType":"Observation","status":"final","code":{"text":"\ud800"},"subject":{"reference":"Patient/{pid}"}}`,
		`{"resourceType":"Observation","status":"final","status":"final","subject":{"reference":"Patient/{pid}"}}`,
		`{"resourceType":"Condition","subject":{"reference":"Patient/{pid}"},"note":[{"text":"1.000000000000000001"}],"onsetAge":{"value":0.000001}}`,
		`{"resourceType":"Practitioner","name":[{"family":"x","given":["y"]}],"extension":[{"url":"u","valueDecimal":123456789012345678}]}`,
	} {
		f.Add([]byte(s))
	}
	wp := newWritePath(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		body = bytes.ReplaceAll(body, []byte("{pid}"), []byte(wp.pid))
		var head struct {
			ResourceType string `json:"resourceType"`
		}
		_ = json.Unmarshal(body, &head)
		typ := head.ResourceType
		if !fhir.IsResourceType(typ) {
			typ = "Observation"
		}
		check := func(what string, res *httptest.ResponseRecorder) bool {
			t.Helper()
			if res.Code >= 500 {
				t.Fatalf("%s: %d %s", what, res.Code, res.Body)
			}
			if res.Code >= 400 && !strings.Contains(res.Body.String(), `"resourceType":"OperationOutcome"`) {
				t.Fatalf("%s: refusal %d is not an OperationOutcome: %s", what, res.Code, res.Body)
			}
			return res.Code < 300
		}
		readBack := func(what string, res *httptest.ResponseRecorder, sent []byte) {
			t.Helper()
			loc := res.Header().Get("Location")
			i := strings.Index(loc, "/fhir/")
			if i < 0 {
				t.Fatalf("%s: no Location in %v", what, res.Header())
			}
			path := strings.Split(loc[i:], "/_history/")[0]
			got := wp.do(t, "GET", "fuzz.pfr.localhost", path, nil)
			if got.Code != http.StatusOK {
				t.Fatalf("%s: reading back %s: %d %s", what, path, got.Code, got.Body)
			}
			want := withoutServerFields(t, sent)
			if have := withoutServerFields(t, got.Body.Bytes()); !reflect.DeepEqual(have, want) {
				t.Fatalf("%s: read back differs:\nsent %s\ngot  %s", what, sent, got.Body)
			}
		}

		created := wp.do(t, "POST", "fuzz.pfr.localhost", "/fhir/"+typ, body)
		if check("create", created) {
			readBack("create", created, body)
			// The same body as an update of what was created.
			loc := created.Header().Get("Location")
			id := strings.Split(strings.TrimPrefix(loc[strings.Index(loc, "/fhir/"+typ+"/")+len("/fhir/"+typ+"/"):], ""), "/")[0]
			if m, err := fhirjson.DecodeObject(body); err == nil {
				m["id"] = id
				upd, _ := json.Marshal(m)
				if res := wp.do(t, "PUT", "fuzz.pfr.localhost", "/fhir/"+typ+"/"+id, upd); check("update", res) {
					readBack("update", res, upd)
				}
			}
		}
		// Inside a transaction, as the resource of a create.
		tx := []byte(`{"resourceType":"Bundle","type":"transaction","entry":[{"resource":` + string(body) +
			`,"request":{"method":"POST","url":"` + typ + `"}}]}`)
		check("transaction", wp.do(t, "POST", "fuzz.pfr.localhost", "/fhir", tx))
		check("search afterwards", wp.do(t, "GET", "fuzz.pfr.localhost", "/fhir/"+typ+"?_count=1000", nil))
		if res := wp.do(t, "GET", "fuzz.pfr.localhost", "/fhir/"+typ+"?_count=1000", nil); res.Code != http.StatusOK {
			t.Fatalf("a search of %s answers %d after the writes: %s", typ, res.Code, res.Body)
		}
	})
}

// TestWritePathHarness shows that FuzzWritePath's harness reaches the
// store: a good body is created and reads back, a poisoned one is a 400
// naming its path.
func TestWritePathHarness(t *testing.T) {
	wp := newWritePath(t)
	good := []byte(`{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/` + wp.pid + `"},"valueQuantity":{"value":72.50}}`)
	res := wp.do(t, "POST", "fuzz.pfr.localhost", "/fhir/Observation", good)
	if res.Code != http.StatusCreated || !strings.Contains(res.Header().Get("Location"), "/fhir/Observation/") {
		t.Fatalf("create: %d %v %s", res.Code, res.Header(), res.Body)
	}
	loc := res.Header().Get("Location")
	back := wp.do(t, "GET", "fuzz.pfr.localhost", loc[strings.Index(loc, "/fhir/"):], nil)
	if back.Code != http.StatusOK || !strings.Contains(back.Body.String(), `"value":72.50`) {
		t.Fatalf("read back: %d %s", back.Code, back.Body)
	}
	bad := bytes.Replace(good, []byte("72.50"), []byte("1e999"), 1)
	res = wp.do(t, "POST", "fuzz.pfr.localhost", "/fhir/Observation", bad)
	if res.Code != http.StatusBadRequest || !strings.Contains(res.Body.String(), "Observation.valueQuantity.value") {
		t.Fatalf("poison: %d %s", res.Code, res.Body)
	}
}
