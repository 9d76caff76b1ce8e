package store

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// TestUnreadableResourceDoesNotTakeSearchesDown stores, past the door (as
// an older version of the store did), an Observation whose value no double
// holds and a Practitioner with the same: every search, _include,
// $everything and search inside a batch still answers 200 with the others,
// names the unreadable ones in an OperationOutcome entry (search.mode
// outcome), and reports them. The door refuses the same value with a 400
// naming its path.
func TestUnreadableResourceDoesNotTakeSearchesDown(t *testing.T) {
	db, err := Open(t.TempDir()+"/u.db", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	var mu sync.Mutex
	var reported []string
	h, err := NewHandler(db, Config{OnInternalError: func(_ *http.Request, err error) {
		mu.Lock()
		defer mu.Unlock()
		reported = append(reported, err.Error())
	}})
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{t: t, db: db, srv: newLocalServer(t, h)}
	s.must(http.StatusCreated, "PUT", "/fhir/Patient/p", "DEFAULT", map[string]any{"resourceType": "Patient", "id": "p"})
	good := map[string]any{"resourceType": "Observation", "status": "final", "code": map[string]any{"text": "ok"},
		"subject": map[string]any{"reference": "Patient/p"}, "performer": []any{map[string]any{"reference": "Practitioner/bad"}},
		"valueQuantity": map[string]any{"value": 5}}
	s.must(http.StatusCreated, "POST", "/fhir/Observation", "DEFAULT", good)
	poison := resource{"resourceType": "Observation", "status": "final", "code": map[string]any{"text": "poison"},
		"subject": map[string]any{"reference": "Patient/p"}, "valueQuantity": map[string]any{"value": json.Number("1e999")}}
	badPract := resource{"resourceType": "Practitioner", "extension": []any{map[string]any{"url": "x", "valueDecimal": json.Number("-1e400")}}}
	if err := db.update("DEFAULT", func(p *ptx) error {
		if _, err := p.write("Observation", "poison", poison, nil); err != nil {
			return err
		}
		_, err := p.write("Practitioner", "bad", badPract, nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}

	check := func(what string, r *response, matches int, left ...string) {
		t.Helper()
		if r.Status != http.StatusOK {
			t.Fatalf("%s: %d %s", what, r.Status, r.Body)
		}
		b := r.JSON(t)
		entries, _ := b["entry"].([]any)
		n, outcome := 0, ""
		for _, e := range entries {
			em := e.(map[string]any)
			mode := em["search"].(map[string]any)["mode"]
			if mode == "outcome" {
				raw, _ := json.Marshal(em["resource"])
				outcome += string(raw)
				continue
			}
			n++
		}
		if n != matches {
			t.Errorf("%s: %d resources, want %d: %s", what, n, matches, r.Body)
		}
		for _, ref := range left {
			if !strings.Contains(outcome, ref) {
				t.Errorf("%s: the outcome entry does not name %s: %s", what, ref, r.Body)
			}
		}
		if strings.Contains(string(r.Body), "1e999") || strings.Contains(string(r.Body), "1e400") {
			t.Errorf("%s: the unreadable value went out: %s", what, r.Body)
		}
	}
	check("search", s.do("GET", "/fhir/Observation", "DEFAULT", nil), 1, "Observation/poison")
	check("search by value", s.do("GET", "/fhir/Observation?value-quantity=gt1", "DEFAULT", nil), 1, "Observation/poison")
	check("_include", s.do("GET", "/fhir/Observation?_include=Observation:performer", "DEFAULT", nil), 1, "Observation/poison", "Practitioner/bad")
	check("$everything", s.do("GET", "/fhir/Patient/p/$everything", "DEFAULT", nil), 2, "Observation/poison")
	batch := s.must(http.StatusOK, "POST", "/fhir", "DEFAULT", map[string]any{"resourceType": "Bundle", "type": "batch",
		"entry": []any{map[string]any{"request": map[string]any{"method": "GET", "url": "Observation"}}}})
	if !strings.Contains(string(batch.Body), "Observation/poison") || strings.Contains(string(batch.Body), "1e999") {
		t.Errorf("batch search: %s", batch.Body)
	}
	mu.Lock()
	if len(reported) == 0 || !strings.Contains(strings.Join(reported, "\n"), "Observation/poison") {
		t.Errorf("the unreadable resource was not reported: %v", reported)
	}
	mu.Unlock()

	// The door: the same values are refused with the path.
	for _, body := range []string{
		`{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":1e999}}`,
		`{"resourceType":"Observation","status":"final","status":"final","code":{"text":"x"}}`,
		`{"resourceType":"Observation","status":"final","code":{"text":"\ud800"}}`,
		"{\"resourceType\":\"Observation\",\"status\":\"final\",\"code\":{\"text\":\"\xff\"}}",
	} {
		r := s.do("POST", "/fhir/Observation", "DEFAULT", []byte(body))
		expectOutcome(t, r, http.StatusBadRequest, "Observation.")
		r = s.do("POST", "/fhir", "DEFAULT", []byte(`{"resourceType":"Bundle","type":"transaction","entry":[{"resource":`+body+`,"request":{"method":"POST","url":"Observation"}}]}`))
		expectOutcome(t, r, http.StatusBadRequest, "Bundle.entry[0].resource")
	}
}
