package gateway

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/pfrgateway/caddy-pfr/auth"
)

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		method, rest, query string
		kind                auth.Interaction
		typ, id, op         string
		conditional, bundle bool
	}{
		{"GET", "/Observation", "code=1", auth.InteractionSearch, "Observation", "", "", false, false},
		{"HEAD", "/Observation", "", auth.InteractionSearch, "Observation", "", "", false, false},
		{"POST", "/Observation/_search", "", auth.InteractionSearch, "Observation", "", "", false, false},
		{"POST", "/_search", "", auth.InteractionSearch, "", "", "", false, false},
		{"GET", "", "_type=Observation", auth.InteractionSearch, "", "", "", false, false},
		{"GET", "/Observation/1", "", auth.InteractionRead, "Observation", "1", "", false, false},
		{"GET", "/Observation/1/_history", "", auth.InteractionHistoryInstance, "Observation", "1", "", false, false},
		{"GET", "/Observation/1/_history/3", "", auth.InteractionVRead, "Observation", "1", "", false, false},
		{"GET", "/Observation/_history", "", auth.InteractionHistoryType, "Observation", "", "", false, false},
		{"GET", "/_history", "", auth.InteractionHistoryType, "", "", "", false, false},
		{"POST", "/Observation", "", auth.InteractionCreate, "Observation", "", "", false, false},
		{"PUT", "/Observation/1", "", auth.InteractionUpdate, "Observation", "1", "", false, false},
		{"PUT", "/Observation", "identifier=a|b", auth.InteractionUpdate, "Observation", "", "", true, false},
		{"PATCH", "/Observation/1", "", auth.InteractionPatch, "Observation", "1", "", false, false},
		{"DELETE", "/Observation/1", "", auth.InteractionDelete, "Observation", "1", "", false, false},
		{"DELETE", "/Observation", "code=1", auth.InteractionDelete, "Observation", "", "", true, false},
		{"GET", "/Patient/p1/$everything", "", auth.InteractionOperation, "Patient", "p1", "$everything", false, false},
		{"POST", "/Observation/$validate", "", auth.InteractionOperation, "Observation", "", "$validate", false, false},
		{"POST", "/$partition-management-create-partition", "", auth.InteractionOperation, "", "", "$partition-management-create-partition", false, false},
		{"GET", "/Patient/p1/Observation", "", auth.InteractionSearch, "Observation", "", "", false, false},
		{"POST", "", "", "", "", "", "", false, true},
	} {
		q, _ := url.ParseQuery(c.query)
		in, err := classify(c.method, c.rest, q)
		if err != nil {
			t.Errorf("%s %s: %v", c.method, c.rest, err)
			continue
		}
		if in.kind != c.kind || in.typ != c.typ || in.id != c.id || in.opName != c.op || in.conditional != c.conditional || in.bundle != c.bundle {
			t.Errorf("%s %s = %+v", c.method, c.rest, in)
		}
	}
	for _, c := range []struct{ method, rest string }{
		{"GET", "/observation"}, {"GET", "/Observation/a b"}, {"POST", "/Observation/1"},
		{"GET", "/Observation/1/_history/3/x"}, {"PUT", ""}, {"DELETE", ""}, {"GET", "/Observation/1/foo"},
		{"OPTIONS", "/Observation"}, {"GET", "/$"}, {"TRACE", "/Observation/1"},
	} {
		if in, err := classify(c.method, c.rest, nil); err == nil {
			t.Errorf("%s %s classified as %+v, want an error", c.method, c.rest, in)
		}
	}
}

func TestClassifyEntry(t *testing.T) {
	for _, u := range []string{
		"http://evil.example/fhir/Patient/1", "//evil.example/Patient/1", "Patient/../Observation", "Patient%2F1",
		"Patient/%2e%2e/x", `Patient\1`, "Observation//1", "", "?x=1",
	} {
		if _, err := classifyEntry("GET", u); err == nil {
			t.Errorf("entry URL %q accepted", u)
		}
	}
	if _, err := classifyEntry("", "Patient/1"); err == nil {
		t.Error("entry without method accepted")
	}
	if in, err := classifyEntry("DELETE", "Observation?code=http://loinc.org|1"); err != nil || !in.conditional {
		t.Errorf("a conditional entry with a URL in its query: %+v, %v", in, err)
	}
	in, err := classifyEntry("put", "Observation?identifier=x|1")
	if err != nil || in.kind != auth.InteractionUpdate || !in.conditional || in.query.Get("identifier") != "x|1" {
		t.Errorf("conditional entry: %+v, %v", in, err)
	}
}

// TestScopeMatrix checks the gateway's decision for each interaction under
// v1 and v2 scopes, through classify and authorize as a request meets them.
func TestScopeMatrix(t *testing.T) {
	g := &Gateway{}
	rec := testRecord()
	reqs := []struct {
		name, method, rest, query string
		letter                    byte // the SMART v2 letter the interaction needs
	}{
		{"read", "GET", "/Observation/1", "", 'r'},
		{"vread", "GET", "/Observation/1/_history/2", "", 'r'},
		{"history-instance", "GET", "/Observation/1/_history", "", 'r'},
		{"search", "GET", "/Observation", "code=1", 's'},
		{"history-type", "GET", "/Observation/_history", "", 's'},
		{"create", "POST", "/Observation", "", 'c'},
		{"update", "PUT", "/Observation/1", "", 'u'},
		{"patch", "PATCH", "/Observation/1", "", 'u'},
		{"delete", "DELETE", "/Observation/1", "", 'd'},
	}
	scopes := []struct {
		scope   string
		letters string
	}{
		{"patient/Observation.read", "rs"},
		{"patient/Observation.write", "cud"},
		{"patient/Observation.*", "cruds"},
		{"user/*.read", "rs"},
		{"patient/Observation.rs", "rs"},
		{"patient/Observation.cud", "cud"},
		{"patient/Observation.c", "c"},
		{"patient/Observation.d", "d"},
		{"system/*.cruds", "cruds"},
		{"patient/Patient.cruds", ""},
		{"openid fhirUser", ""},
	}
	for _, sc := range scopes {
		grants := auth.ParseScopes(splitFields(sc.scope))
		for _, rq := range reqs {
			q, _ := url.ParseQuery(rq.query)
			in, err := classify(rq.method, rq.rest, q)
			if err != nil {
				t.Fatal(err)
			}
			_, err = g.authorize(&request{rec: rec, role: "owner", grants: grants, base: "https://x.pfr.localhost/fhir"}, in)
			want := containsByte(sc.letters, rq.letter)
			if got := err == nil; got != want {
				t.Errorf("%s with %q: allowed=%v, want %v (%v)", rq.name, sc.scope, got, want, err)
			}
			if err != nil && errStatus(err) != http.StatusForbidden {
				t.Errorf("%s with %q: status %d, want 403", rq.name, sc.scope, errStatus(err))
			}
		}
	}
}

func TestRoleAndOperations(t *testing.T) {
	g := &Gateway{}
	rec := testRecord()
	all := auth.ParseScopes([]string{"patient/*.cruds"})
	for _, c := range []struct {
		method, rest string
		role         string
		status       int
	}{
		{"POST", "/Observation", "viewer", http.StatusForbidden},
		{"DELETE", "/Observation/1", "viewer", http.StatusForbidden},
		{"GET", "/Observation/1", "viewer", 0},
		{"POST", "/Observation", "manager", 0},
		{"GET", "/Patient/p1/$everything", "viewer", 0},
		{"GET", "/Patient/other/$everything", "owner", http.StatusForbidden},
		{"GET", "/Patient/$everything", "owner", http.StatusForbidden},
		{"POST", "/$partition-management-create-partition", "owner", http.StatusForbidden},
		{"POST", "/$expunge", "owner", http.StatusForbidden},
		{"GET", "/$meta", "owner", http.StatusForbidden},
		{"GET", "/Observation/$meta", "owner", http.StatusForbidden},
		{"GET", "/Observation/o1/$meta", "viewer", 0},
		{"POST", "/Observation/$validate", "viewer", 0},
		{"GET", "/Patient/p1/$summary", "viewer", 0},
		{"GET", "/Patient/other/$summary", "owner", http.StatusForbidden},
		{"GET", "/Observation/$lastn", "viewer", 0},
	} {
		in, err := classify(c.method, c.rest, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = g.authorize(&request{rec: rec, role: roleOf(c.role), grants: all, base: "realm"}, in)
		status := 0
		if err != nil {
			status = errStatus(err)
		}
		if status != c.status {
			t.Errorf("%s %s as %s: status %d, want %d (%v)", c.method, c.rest, c.role, status, c.status, err)
		}
	}
}

// A chain or _has reads other types: the token must be allowed to search
// them too, or the answer would tell what it may not see.
func TestScopeJoinedTypes(t *testing.T) {
	g := &Gateway{}
	rec := testRecord()
	for _, c := range []struct {
		scope, path, query string
		allowed            bool
	}{
		{"patient/Patient.rs", "/Patient", "_has:Condition:patient:code=HIV", false},
		{"patient/Patient.rs patient/Condition.rs", "/Patient", "_has:Condition:patient:code=HIV", true},
		{"patient/Patient.rs patient/Encounter.rs", "/Patient", "_has:Encounter:patient:_has:Condition:encounter:code=1", false},
		{"patient/Patient.rs patient/Encounter.rs patient/Condition.rs", "/Patient", "_has:Encounter:patient:_has:Condition:encounter:code=1", true},
		{"patient/Observation.rs", "/Observation", "subject:Patient.name=x", false},
		{"patient/Observation.rs patient/Patient.rs", "/Observation", "subject:Patient.name=x", true},
		{"patient/Observation.rs patient/Patient.rs", "/Observation", "subject.name=x", false}, // Group, Device, Location too
		{"patient/Observation.rs patient/Encounter.rs", "/Observation", "encounter.service-provider.name=x", false},
		{"patient/Observation.rs", "/Observation", "code=1", true},
		{"patient/*.rs", "/Observation", "encounter.service-provider.name=x", true},
		{"patient/Observation.rs", "/Patient/1/Observation", "patient.name=x", false},
	} {
		q, _ := url.ParseQuery(c.query)
		in, err := classify("GET", c.path, q)
		if err != nil {
			t.Fatal(err)
		}
		_, err = g.authorize(&request{rec: rec, role: "owner", grants: auth.ParseScopes(splitFields(c.scope)), base: "https://x.pfr.localhost/fhir"}, in)
		if got := err == nil; got != c.allowed {
			t.Errorf("%s?%s with %q: allowed=%v, want %v (%v)", c.path, c.query, c.scope, got, c.allowed, err)
		}
	}
}
