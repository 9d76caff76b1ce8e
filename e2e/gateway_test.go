package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

func observation(patientRef, code string) map[string]any {
	return map[string]any{
		"resourceType": "Observation", "status": "final",
		"code":          map[string]any{"coding": []any{map[string]any{"system": "http://loinc.org", "code": code}}},
		"subject":       map[string]any{"reference": patientRef},
		"valueQuantity": map[string]any{"value": 72, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"},
	}
}

// TestTwoRecordsIsolated creates two records for two people and checks that
// each person reads and writes only their own, through real Caddy and TLS.
func TestTwoRecordsIsolated(t *testing.T) {
	e := startGateway(t, "")
	alice, bob := e.token("alice"), e.token("bob")

	ra := e.createRecord(alice, "alice-home", "Smith", "Alice")
	rb := e.createRecord(bob, "bob-home", "Jones", "Bob")
	if ra["fhirBase"] != recordURL("alice-home", "") || ra["role"] != "owner" || ra["patientId"] == "" {
		t.Fatalf("created record view: %v", ra)
	}
	pa, pb := "Patient/"+ra["patientId"].(string), "Patient/"+rb["patientId"].(string)

	// Each writes an Observation in their own record.
	wa := e.do("POST", recordURL("alice-home", "/Observation"), alice, observation(pa, "29463-7"))
	wa.Expect(t, http.StatusCreated, "alice writes")
	if loc := wa.Header.Get("Location"); !strings.HasPrefix(loc, recordURL("alice-home", "/Observation/")) {
		t.Errorf("Location %q is not on alice's record address", loc)
	}
	e.do("POST", recordURL("bob-home", "/Observation"), bob, observation(pb, "8302-2")).Expect(t, http.StatusCreated, "bob writes")

	// Each sees exactly one Observation, their own.
	for _, c := range []struct{ slug, tok, code string }{{"alice-home", alice, "29463-7"}, {"bob-home", bob, "8302-2"}} {
		res := e.do("GET", recordURL(c.slug, "/Observation"), c.tok, nil).Expect(t, http.StatusOK, "search "+c.slug)
		if total, _ := res.Body["total"].(float64); total != 1 || !strings.Contains(string(res.Raw), c.code) {
			t.Errorf("%s sees %.600s", c.slug, res.Raw)
		}
		if strings.Contains(string(res.Raw), "127.0.0.1") || !strings.Contains(string(res.Raw), recordURL(c.slug, "/Observation/")) {
			t.Errorf("%s: upstream URLs leak or record URLs missing: %.600s", c.slug, res.Raw)
		}
	}

	// Alice's token on Bob's record: authenticated, but no member.
	e.do("GET", recordURL("bob-home", "/Observation"), alice, nil).ExpectOutcome(t, http.StatusForbidden, "alice reads bob")
	e.do("POST", recordURL("bob-home", "/Observation"), alice, observation(pb, "1-1")).
		ExpectOutcome(t, http.StatusForbidden, "alice writes to bob")

	// A client-sent partition header does not reach the upstream: Alice
	// names Bob's partition and still sees only her own record.
	for _, hdr := range []string{"X-Request-Partition-IDs", "x-request-partition-ids", "X-FHIR-TENANT-ID"} {
		res := e.do("GET", recordURL("alice-home", "/Observation"), alice, nil, hdr, "2", hdr, "DEFAULT")
		res.Expect(t, http.StatusOK, "smuggled "+hdr)
		if strings.Contains(string(res.Raw), "8302-2") {
			t.Fatalf("header %s let alice see bob's data: %.600s", hdr, res.Raw)
		}
	}

	// The management API lists only one's own records.
	list := e.do("GET", apex("/pfr/v1/records"), alice, nil).Expect(t, http.StatusOK, "list")
	if recs := list.Body["records"].([]any); len(recs) != 1 || recs[0].(map[string]any)["slug"] != "alice-home" {
		t.Errorf("alice's list: %s", list.Raw)
	}
	e.do("GET", apex("/pfr/v1/records/bob-home"), alice, nil).ExpectOutcome(t, http.StatusNotFound, "alice gets bob's record")
}

// TestRequestsRefused covers hosts, paths and tokens the gateway must refuse.
func TestRequestsRefused(t *testing.T) {
	e := startGateway(t, "")
	alice := e.token("alice")
	e.createRecord(alice, "alice-home", "Smith", "Alice")

	// Unknown record subdomain: 404 OperationOutcome (the name gets no
	// certificate either, so ask over the apex connection).
	req, _ := http.NewRequest("GET", apex("/fhir/metadata"), nil)
	req.Host = fmt.Sprintf("nobody-here.%s:%d", baseDomain, httpsPort)
	res, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound {
		t.Errorf("unknown record: status %d, want 404", res.StatusCode)
	}

	// No token.
	r := e.do("GET", recordURL("alice-home", "/Patient"), "", nil).ExpectOutcome(t, http.StatusUnauthorized, "no token")
	if !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("WWW-Authenticate = %q", r.Header.Get("WWW-Authenticate"))
	}
	// The CapabilityStatement is public.
	e.do("GET", recordURL("alice-home", "/metadata"), "", nil).Expect(t, http.StatusOK, "metadata")

	base := recordURL("alice-home", "")
	now := time.Now()
	valid := func() jwt.MapClaims {
		return jwt.MapClaims{"sub": "alice", "aud": base, "exp": now.Add(time.Hour).Unix(), "iat": now.Unix(), "scope": "patient/*.cruds"}
	}
	// The test issuer's valid token works once alice of that issuer is a member;
	// here alice@test-issuer is no member, so a valid token gets 403, never 401.
	e.do("GET", recordURL("alice-home", "/Patient"), e.idp.sign(t, valid()), nil).
		ExpectOutcome(t, http.StatusForbidden, "valid token, no membership")

	expired := valid()
	expired["exp"] = now.Add(-time.Hour).Unix()
	wrongAud := valid()
	wrongAud["aud"] = "https://evil.example/fhir"
	otherRecordAud := valid()
	otherRecordAud["aud"] = recordURL("bob-home", "")
	wrongIss := valid()
	wrongIss["iss"] = "https://issuer.invalid"
	noExp := valid()
	delete(noExp, "exp")

	none := jwt.NewWithClaims(jwt.SigningMethodNone, valid())
	noneTok, _ := none.SignedString(jwt.UnsafeAllowNoneSignatureType)
	// HMAC "signed" with the RSA public key bytes: the classic alg confusion.
	pub := e.idp.key.PublicKey.N.Bytes()
	hs := jwt.NewWithClaims(jwt.SigningMethodHS256, valid())
	hs.Header["kid"] = e.idp.kid
	hsTok, _ := hs.SignedString(pub)
	// A token of the dev issuer for another gateway (another data dir).
	other := startOtherDevIssuer(t)

	for name, tok := range map[string]string{
		"expired":           e.idp.sign(t, expired),
		"wrong aud":         e.idp.sign(t, wrongAud),
		"other record aud":  e.idp.sign(t, otherRecordAud),
		"unknown issuer":    e.idp.sign(t, wrongIss),
		"no exp":            e.idp.sign(t, noExp),
		"alg none":          noneTok,
		"HMAC with pub key": hsTok,
		"other dev issuer":  other,
		"garbage":           "not.a.jwt",
	} {
		r := e.do("GET", recordURL("alice-home", "/Patient"), tok, nil)
		r.ExpectOutcome(t, http.StatusUnauthorized, name)
		if !strings.Contains(r.Header.Get("WWW-Authenticate"), "invalid_token") {
			t.Errorf("%s: WWW-Authenticate = %q", name, r.Header.Get("WWW-Authenticate"))
		}
	}

	// Path tricks.
	for _, p := range []string{"/fhir/../fhir/Patient", "/fhir/Patient%2F..%2F", "/fhir//Patient", "/other"} {
		req, _ := http.NewRequest("GET", "https://alice-home."+baseDomain+fmt.Sprintf(":%d", httpsPort)+p, nil)
		req.URL.Opaque = p
		req.Header.Set("Authorization", "Bearer "+alice)
		res, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusBadRequest && res.StatusCode != http.StatusNotFound {
			t.Errorf("path %s: status %d, want 400 or 404", p, res.StatusCode)
		}
	}
	e.do("GET", recordURL("alice-home", "/Patient"), alice, nil, "X-HTTP-Method-Override", "DELETE").
		ExpectOutcome(t, http.StatusBadRequest, "method override")
}

// TestViewerCannotWrite gives bob a viewer invitation to alice's record.
func TestViewerCannotWrite(t *testing.T) {
	e := startGateway(t, "")
	alice, bob := e.token("alice"), e.token("bob")
	rec := e.createRecord(alice, "alice-home", "Smith", "Alice")
	pa := "Patient/" + rec["patientId"].(string)
	e.do("POST", recordURL("alice-home", "/Observation"), alice, observation(pa, "29463-7")).Expect(t, http.StatusCreated, "owner writes")

	inv := e.do("POST", apex("/pfr/v1/records/alice-home/invitations"), alice, map[string]any{"role": "viewer"}).
		Expect(t, http.StatusCreated, "invite")
	code := inv.Body["code"].(string)
	// Bob may not invite himself with someone else's record.
	e.do("POST", apex("/pfr/v1/records/alice-home/invitations"), bob, map[string]any{"role": "owner"}).
		ExpectOutcome(t, http.StatusNotFound, "non-member invites")
	e.do("POST", apex("/pfr/v1/invitations/"+code+"/accept"), bob, nil).Expect(t, http.StatusOK, "accept")
	e.do("POST", apex("/pfr/v1/invitations/"+code+"/accept"), e.token("mallory"), nil).
		ExpectOutcome(t, http.StatusConflict, "second use of an invitation")

	e.do("GET", recordURL("alice-home", "/Observation"), bob, nil).Expect(t, http.StatusOK, "viewer reads")
	e.do("POST", recordURL("alice-home", "/Observation/_search"), bob, "code=29463-7",
		"Content-Type", "application/x-www-form-urlencoded").Expect(t, http.StatusOK, "viewer searches by POST")
	e.do("POST", recordURL("alice-home", "/Observation"), bob, observation(pa, "1-1")).
		ExpectOutcome(t, http.StatusForbidden, "viewer writes")
	e.do("DELETE", recordURL("alice-home", "/"+pa), bob, nil).ExpectOutcome(t, http.StatusForbidden, "viewer deletes")
	// A viewer's transaction is not written: like anyone without write
	// access, the viewer can only drop it off for the owners.
	e.do("POST", recordURL("alice-home", ""), bob, map[string]any{"resourceType": "Bundle", "type": "transaction", "entry": []any{
		map[string]any{"resource": observation(pa, "1-2"), "request": map[string]any{"method": "POST", "url": "Observation"}},
	}}).ExpectOutcome(t, http.StatusAccepted, "viewer posts a transaction")
	if got := e.do("GET", recordURL("alice-home", "/Observation?code=1-2"), alice, nil).Expect(t, http.StatusOK, "search"); strings.Contains(string(got.Raw), `"entry"`) {
		t.Errorf("the viewer's transaction was written: %s", got.Raw)
	}
}

// TestCreateRecordRefusals checks the management API's input rules.
func TestCreateRecordRefusals(t *testing.T) {
	e := startGateway(t, "")
	alice := e.token("alice")
	e.createRecord(alice, "alice-home", "Smith", "Alice")
	patient := map[string]any{"resourceType": "Patient", "name": []any{map[string]any{"family": "X"}}}
	for name, body := range map[string]any{
		"slug taken":    map[string]any{"slug": "alice-home", "patient": patient},
		"reserved slug": map[string]any{"slug": "www", "patient": patient},
		"short slug":    map[string]any{"slug": "ab", "patient": patient},
		"upper slug":    map[string]any{"slug": "Alice", "patient": patient},
		"not a patient": map[string]any{"slug": "alice-two", "patient": map[string]any{"resourceType": "Observation"}},
		"no patient":    map[string]any{"slug": "alice-three"},
		"unknown field": map[string]any{"slug": "alice-four", "patient": patient, "partition": 1},
		"bad json":      "{",
	} {
		r := e.do("POST", apex("/pfr/v1/records"), alice, body)
		if r.Status < 400 || r.Status >= 500 || r.Body["resourceType"] != "OperationOutcome" {
			t.Errorf("%s: status %d body %.300s", name, r.Status, r.Raw)
		}
	}
	// None of the refusals left a record behind.
	list := e.do("GET", apex("/pfr/v1/records"), alice, nil).Expect(t, http.StatusOK, "list")
	if n := len(list.Body["records"].([]any)); n != 1 {
		t.Errorf("records after refusals: %d, want 1: %s", n, list.Raw)
	}
}

// TestScopesEnforced checks SMART scopes through real Caddy: a token that
// may only read Observations can neither write them nor read the Patient,
// and the 403 names the missing scope.
func TestScopesEnforced(t *testing.T) {
	e := startGateway(t, "")
	alice := e.token("alice")
	rec := e.createRecord(alice, "alice-home", "Smith", "Alice")
	pa := "Patient/" + rec["patientId"].(string)
	e.do("POST", recordURL("alice-home", "/Observation"), alice, observation(pa, "29463-7")).Expect(t, http.StatusCreated, "write")

	mint := func(scope string) string {
		tok, err := e.dev.Mint("alice", scope, nil, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	obsRead := mint("openid patient/Observation.rs")
	e.do("GET", recordURL("alice-home", "/Observation"), obsRead, nil).Expect(t, http.StatusOK, "search with .rs")
	r := e.do("POST", recordURL("alice-home", "/Observation"), obsRead, observation(pa, "1-1")).
		ExpectOutcome(t, http.StatusForbidden, "create with .rs")
	if !strings.Contains(string(r.Raw), "patient/Observation.c") || !strings.Contains(r.Header.Get("WWW-Authenticate"), "insufficient_scope") {
		t.Errorf("403 does not name the missing scope: %s / %q", r.Raw, r.Header.Get("WWW-Authenticate"))
	}
	e.do("GET", recordURL("alice-home", "/"+pa), obsRead, nil).ExpectOutcome(t, http.StatusForbidden, "read Patient with Observation scope")
	// A transaction is no way around the scopes.
	e.do("POST", recordURL("alice-home", ""), mint("patient/Observation.cruds"), map[string]any{
		"resourceType": "Bundle", "type": "transaction", "entry": []any{map[string]any{
			"resource": map[string]any{"resourceType": "Patient", "id": rec["patientId"]},
			"request":  map[string]any{"method": "PUT", "url": pa},
		}},
	}).ExpectOutcome(t, http.StatusForbidden, "transaction beyond the scopes")
	// v1 scopes work too; a token without resource scopes reaches nothing.
	e.do("GET", recordURL("alice-home", "/"+pa), mint("patient/*.read"), nil).Expect(t, http.StatusOK, "v1 read")
	e.do("GET", recordURL("alice-home", "/"+pa), mint("openid profile"), nil).ExpectOutcome(t, http.StatusForbidden, "no scopes")
	// ...but it still works on the management API.
	e.do("GET", apex("/pfr/v1/records"), mint("openid"), nil).Expect(t, http.StatusOK, "management without scopes")
	// Query-restricted scope: reads only matching resources.
	lab := mint("patient/Observation.rs?code=http://loinc.org|29463-7")
	e.do("GET", recordURL("alice-home", "/Observation?code=http://loinc.org|29463-7"), lab, nil).Expect(t, http.StatusOK, "restricted search")
	e.do("GET", recordURL("alice-home", "/Observation"), lab, nil).ExpectOutcome(t, http.StatusForbidden, "unrestricted search")
}

// TestPublicEndpoints: the CapabilityStatement is public; without an
// authorization server with discovery, smart-configuration is a clear 404.
func TestPublicEndpoints(t *testing.T) {
	e := startGateway(t, "")
	e.createRecord(e.token("alice"), "alice-home", "Smith", "Alice")
	md := e.do("GET", recordURL("alice-home", "/metadata"), "", nil).Expect(t, http.StatusOK, "metadata")
	if md.Body["resourceType"] != "CapabilityStatement" {
		t.Fatalf("metadata: %.300s", md.Raw)
	}
	e.do("GET", recordURL("alice-home", "/.well-known/smart-configuration"), "", nil).
		ExpectOutcome(t, http.StatusNotFound, "smart-configuration without a discovery-capable issuer")
}

// TestIdentityAndPatch: an update that changes who the record is about needs
// the owner's confirmation; a JSON Patch is applied, checked and stored.
func TestIdentityAndPatch(t *testing.T) {
	e := startGateway(t, "")
	alice, bob := e.token("alice"), e.token("bob")
	rec := e.createRecord(alice, "alice-home", "Smith", "Alice")
	pid := rec["patientId"].(string)
	inv := e.do("POST", apex("/pfr/v1/records/alice-home/invitations"), alice, map[string]any{"role": "manager"}).Expect(t, http.StatusCreated, "invite")
	e.do("POST", apex("/pfr/v1/invitations/"+inv.Body["code"].(string)+"/accept"), bob, nil).Expect(t, http.StatusOK, "accept")

	patient := e.do("GET", recordURL("alice-home", "/Patient/"+pid), alice, nil).Expect(t, http.StatusOK, "read patient").Body
	patient["telecom"] = []any{map[string]any{"system": "phone", "value": "555-0100"}}
	e.do("PUT", recordURL("alice-home", "/Patient/"+pid), bob, patient).Expect(t, http.StatusOK, "a manager adds a phone number")

	patient["birthDate"] = "1990-12-31"
	delete(patient, "meta")
	r := e.do("PUT", recordURL("alice-home", "/Patient/"+pid), bob, patient, "X-PFR-Identity-Change", "confirm")
	r.ExpectOutcome(t, http.StatusUnprocessableEntity, "a manager changes the birth date")
	if !strings.Contains(string(r.Raw), "birthDate") {
		t.Errorf("the refusal does not say what changed: %s", r.Raw)
	}
	e.do("PUT", recordURL("alice-home", "/Patient/"+pid), alice, patient).ExpectOutcome(t, http.StatusUnprocessableEntity, "owner without confirmation")
	e.do("PUT", recordURL("alice-home", "/Patient/"+pid), alice, patient, "X-PFR-Identity-Change", "confirm").Expect(t, http.StatusOK, "owner confirms")

	obs := e.do("POST", recordURL("alice-home", "/Observation"), alice, observation("Patient/"+pid, "29463-7"), "Prefer", "return=representation").
		Expect(t, http.StatusCreated, "create")
	oid := obs.Body["id"].(string)
	patch := `[{"op":"replace","path":"/status","value":"amended"}]`
	p := e.do("PATCH", recordURL("alice-home", "/Observation/"+oid), alice, patch, "Content-Type", "application/json-patch+json")
	p.Expect(t, http.StatusOK, "patch")
	got := e.do("GET", recordURL("alice-home", "/Observation/"+oid), alice, nil).Expect(t, http.StatusOK, "read")
	if got.Body["status"] != "amended" || got.Body["meta"].(map[string]any)["versionId"] != "2" {
		t.Errorf("after the patch: %s", got.Raw)
	}
	stray := `[{"op":"replace","path":"/subject/reference","value":"Patient/someone-else"}]`
	e.do("PATCH", recordURL("alice-home", "/Observation/"+oid), alice, stray, "Content-Type", "application/json-patch+json").
		ExpectOutcome(t, http.StatusUnprocessableEntity, "patch to another person")
	e.do("PATCH", recordURL("alice-home", "/Observation/"+oid), alice, patch, "Content-Type", "application/json-patch+json", "If-Match", `W/"1"`).
		ExpectOutcome(t, http.StatusPreconditionFailed, "stale If-Match")
	e.do("PATCH", recordURL("alice-home", "/Observation/"+oid), alice, `{"op":"x"}`, "Content-Type", "application/json-patch+json").
		ExpectOutcome(t, http.StatusBadRequest, "not a patch document")
}

// TestDeleteRecord: only an owner deletes a record, with confirmation; its
// address, data and slug go with it.
func TestDeleteRecord(t *testing.T) {
	e := startGateway(t, "")
	alice, bob := e.token("alice"), e.token("bob")
	rec := e.createRecord(alice, "to-delete", "Smith", "Alice")
	e.do("POST", recordURL("to-delete", "/Observation"), alice, observation("Patient/"+rec["patientId"].(string), "29463-7")).
		Expect(t, http.StatusCreated, "write")
	inv := e.do("POST", apex("/pfr/v1/records/to-delete/invitations"), alice, map[string]any{"role": "manager"}).Expect(t, http.StatusCreated, "invite")
	e.do("POST", apex("/pfr/v1/invitations/"+inv.Body["code"].(string)+"/accept"), bob, nil).Expect(t, http.StatusOK, "accept")

	e.do("DELETE", apex("/pfr/v1/records/to-delete"), e.token("mallory"), nil).ExpectOutcome(t, http.StatusNotFound, "a stranger deletes")
	e.do("DELETE", apex("/pfr/v1/records/to-delete"), alice, nil).ExpectOutcome(t, http.StatusPreconditionRequired, "without confirmation")
	e.do("DELETE", apex("/pfr/v1/records/to-delete"), bob, nil, "X-PFR-Confirm-Delete", "to-delete").
		ExpectOutcome(t, http.StatusForbidden, "a manager deletes")
	e.do("DELETE", apex("/pfr/v1/records/to-delete"), alice, nil, "X-PFR-Confirm-Delete", "to-delete").Expect(t, http.StatusNoContent, "owner deletes")

	e.do("GET", apex("/pfr/v1/records/to-delete"), alice, nil).ExpectOutcome(t, http.StatusNotFound, "record after delete")
	e.do("GET", recordURL("to-delete", "/Observation"), alice, nil).ExpectOutcome(t, http.StatusNotFound, "address after delete")
	if _, err := tlsHandshake("to-delete-never." + baseDomain); err == nil {
		t.Error("certificate for an unknown record")
	}
	// The slug is free again, and the new record starts empty.
	again := e.createRecord(bob, "to-delete", "Jones", "Bob")
	res := e.do("GET", recordURL("to-delete", "/Observation"), bob, nil).Expect(t, http.StatusOK, "new record")
	if res.Body["total"] != float64(0) || again["patientId"] == rec["patientId"] {
		t.Errorf("the new record sees old data: %s", res.Raw)
	}
}

// TestAccessLog: every access to a record, allowed or refused, and every
// management action on it, is in its access log, which only its owners and
// managers read.
func TestAccessLog(t *testing.T) {
	e := startGateway(t, "")
	alice, bob := e.token("alice"), e.token("bob")
	rec := e.createRecord(alice, "logged", "Smith", "Alice")
	pid := rec["patientId"].(string)
	e.do("POST", recordURL("logged", "/Observation"), alice, observation("Patient/"+pid, "29463-7")).Expect(t, http.StatusCreated, "write")
	e.do("GET", recordURL("logged", "/Patient/"+pid), alice, nil).Expect(t, http.StatusOK, "read")
	e.do("GET", recordURL("logged", "/Observation"), bob, nil).ExpectOutcome(t, http.StatusForbidden, "a stranger reads")
	e.dropOff("logged", []byte(`{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Patient","name":[{"family":"Smith"}]}}]}`)).
		Expect(t, http.StatusAccepted, "drop-off")

	var events []any
	testkit.WaitFor(t, "five events in the access log", 200*time.Millisecond, func() error {
		log := e.do("GET", apex("/pfr/v1/records/logged/audit"), alice, nil).Expect(t, http.StatusOK, "access log")
		if events, _ = log.Body["entry"].([]any); len(events) < 5 {
			return fmt.Errorf("it holds %d", len(events))
		}
		return nil
	})
	var seen []string
	for _, en := range events {
		ev := en.(map[string]any)["resource"].(map[string]any)
		if ev["resourceType"] != "AuditEvent" {
			t.Fatalf("not an AuditEvent: %v", ev)
		}
		sub := ev["subtype"].([]any)[0].(map[string]any)["code"]
		who := ""
		if agents, ok := ev["agent"].([]any); ok && len(agents) > 0 {
			if w, ok := agents[0].(map[string]any)["who"].(map[string]any); ok {
				who, _ = w["identifier"].(map[string]any)["value"].(string)
			}
		}
		seen = append(seen, fmt.Sprintf("%v:%s:%v", sub, who, ev["outcome"]))
	}
	joined := strings.Join(seen, " ")
	for _, want := range []string{"record-create:alice:0", "create:alice:0", "read:alice:0", "search-type:bob:4", "dropoff::0"} {
		if !strings.Contains(joined, want) {
			t.Errorf("the access log lacks %s: %s", want, joined)
		}
	}
	e.do("GET", apex("/pfr/v1/records/logged/audit"), bob, nil).ExpectOutcome(t, http.StatusNotFound, "a stranger reads the log")
}
