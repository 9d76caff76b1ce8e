package gateway

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/pfrgateway/caddy-pfr/auth"
)

func answer(status int, header map[string]string, body string) *captured {
	c := &captured{status: status, header: http.Header{}}
	for k, v := range header {
		c.header.Set(k, v)
	}
	c.body.WriteString(body)
	return c
}

// TestVerifyAnswer: what the gateway passes on (nil) and what it turns into
// a 502/503/504 OperationOutcome, per interaction.
func TestVerifyAnswer(t *testing.T) {
	create := interaction{kind: auth.InteractionCreate, typ: "Observation"}
	update := interaction{kind: auth.InteractionUpdate, typ: "Observation", id: "o1"}
	read := interaction{kind: auth.InteractionRead, typ: "Observation", id: "o1"}
	del := interaction{kind: auth.InteractionDelete, typ: "Observation", id: "o1"}
	tx := interaction{bundle: true, bundleType: "transaction", entries: 2}
	batch := interaction{bundle: true, bundleType: "batch", entries: 2}
	obs := `{"resourceType":"Observation","id":"o1","status":"final"}`
	oo := `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid"}]}`
	loc := map[string]string{"Location": "http://up/fhir/Observation/o1/_history/1"}
	for _, c := range []struct {
		name   string
		in     interaction
		method string
		hdr    map[string]string // request headers
		res    *captured
		want   int    // 0: passed on
		says   string // in the diagnostics
	}{
		{"create 201 Location, empty body", create, "POST", nil, answer(201, loc, ""), 0, ""},
		{"create 201 with the resource", create, "POST", nil, answer(201, nil, obs), 0, ""},
		{"create 201 Location and OperationOutcome", create, "POST", nil, answer(201, loc, oo), 0, ""},
		{"create empty 200 (Caddy's unmatched site)", create, "POST", nil, answer(200, nil, ""), 502, "HTTP 200 with an empty body"},
		{"create 200 with the resource", create, "POST", nil, answer(200, loc, obs), 502, "instead of 201"},
		{"conditional create 200 (exists)", create, "POST", map[string]string{"If-None-Exist": "identifier=a|b"}, answer(200, loc, obs), 0, ""},
		{"create 201 without Location or body", create, "POST", nil, answer(201, nil, ""), 502, "without a Location"},
		{"create 201 Location of another type", create, "POST", nil, answer(201, map[string]string{"Location": "Patient/p1"}, ""), 502, "without a Location"},
		{"create 201 with another resource", create, "POST", nil, answer(201, loc, `{"resourceType":"Patient","id":"p1"}`), 502, "instead of a Observation"},
		{"create 201 HTML", create, "POST", nil, answer(201, map[string]string{"Content-Type": "text/html"}, "<html>ok</html>"), 502, "text/html body of 15 bytes"},
		{"create truncated JSON", create, "POST", nil, answer(201, map[string]string{"Content-Type": "application/fhir+json"}, obs[:20]), 502, "cut short?"},
		{"create refused with an OperationOutcome", create, "POST", nil, answer(422, nil, oo), 0, ""},
		{"create 404 HTML", create, "POST", nil, answer(404, map[string]string{"Content-Type": "text/html"}, "<h1>no</h1>"), 502, "HTTP 404 with a text/html body"},
		{"create 302 to a login page", create, "POST", nil, answer(302, map[string]string{"Location": "/login"}, ""), 502, "HTTP 302"},
		{"create 503 HTML keeps 503", create, "POST", nil, answer(503, map[string]string{"Retry-After": "5"}, "busy"), 503, "HTTP 503"},
		{"update 200 with the resource", update, "PUT", nil, answer(200, nil, obs), 0, ""},
		// Members named like a Bundle's with other shapes are no reason
		// to doubt a resource (Composition.type, Encounter.type, List.entry).
		{"read a Composition", interaction{kind: auth.InteractionRead, typ: "Composition", id: "c1"}, "GET", nil,
			answer(200, nil, `{"resourceType":"Composition","id":"c1","type":{"coding":[{"code":"60591-5"}]}}`), 0, ""},
		{"read an Encounter", interaction{kind: auth.InteractionRead, typ: "Encounter", id: "e1"}, "GET", nil,
			answer(200, nil, `{"resourceType":"Encounter","id":"e1","type":[{"text":"visit"}]}`), 0, ""},
		{"read a List", interaction{kind: auth.InteractionRead, typ: "List", id: "l1"}, "GET", nil,
			answer(200, nil, `{"resourceType":"List","id":"l1","entry":[{"item":{"reference":"Observation/o1"}}]}`), 0, ""},
		{"update 201 Location", update, "PUT", nil, answer(201, loc, ""), 0, ""},
		{"update 200 ETag only", update, "PUT", nil, answer(200, map[string]string{"ETag": `W/"2"`}, ""), 0, ""},
		{"update empty 200", update, "PUT", nil, answer(200, nil, ""), 502, "without the resource"},
		{"update 200 another id", update, "PUT", nil, answer(200, nil, `{"resourceType":"Observation","id":"o2"}`), 502, "instead of Observation/o1"},
		{"update 204", update, "PUT", nil, answer(204, loc, ""), 502, "instead of 200 or 201"},
		{"delete 204", del, "DELETE", nil, answer(204, nil, ""), 0, ""},
		{"delete 200 OperationOutcome", del, "DELETE", nil, answer(200, nil, oo), 0, ""},
		{"delete 200 HTML", del, "DELETE", nil, answer(200, nil, "<html></html>"), 502, "body of 13 bytes"},
		{"delete empty 200", del, "DELETE", nil, answer(200, nil, ""), 502, "HTTP 200 with an empty body"},
		{"delete 202", del, "DELETE", nil, answer(202, nil, ""), 0, ""},
		{"read 200", read, "GET", nil, answer(200, nil, obs), 0, ""},
		// A client's HEAD is asked upstream as a GET, so its answer is
		// judged like a GET's: an empty 200 confirms nothing.
		{"read HEAD 200 with the resource", read, "HEAD", nil, answer(200, nil, obs), 0, ""},
		{"read HEAD empty 200", read, "HEAD", nil, answer(200, nil, ""), 502, "instead of Observation/o1"},
		{"read 304", read, "GET", nil, answer(304, nil, ""), 0, ""},
		{"read empty 200", read, "GET", nil, answer(200, nil, ""), 502, "instead of Observation/o1"},
		{"read another resource", read, "GET", nil, answer(200, nil, `{"resourceType":"Observation","id":"o9"}`), 502, "instead of Observation/o1"},
		{"read 404 OperationOutcome", read, "GET", nil, answer(404, nil, oo), 0, ""},
		// The answer's head is read without decoding: it is still checked
		// as one whole JSON object.
		{"read with data after the resource", read, "GET", nil, answer(200, nil, obs+`{"x":1}`), 502, "untyped body"},
		{"read with a syntax error after the head", read, "GET", nil, answer(200, nil, `{"resourceType":"Observation","id":"o1","status":final}`), 502, "untyped body"},
		{"read with an escaped id", read, "GET", nil, answer(200, nil, `{"resourceType":"Observation","id":"\u006f1"}`), 0, ""},
		{"read with a numeric id", read, "GET", nil, answer(200, nil, `{"resourceType":"Observation","id":1}`), 502, "body of 37 bytes"},
		{"read: of a repeated id the last counts", read, "GET", nil, answer(200, nil, `{"resourceType":"Observation","id":"o1","id":"o9"}`), 502, "instead of Observation/o1"},
		{"read whitespace around", read, "GET", nil, answer(200, nil, " \n"+obs+"\n"), 0, ""},
		{"transaction ok", tx, "POST", nil, answer(200, nil, `{"resourceType":"Bundle","type":"transaction-response","entry":[{"response":{"status":"201 Created"}},{"response":{"status":"200"}}]}`), 0, ""},
		{"transaction empty 200", tx, "POST", nil, answer(200, nil, ""), 502, "instead of 200 with a transaction-response Bundle"},
		{"transaction one entry short", tx, "POST", nil, answer(200, nil, `{"resourceType":"Bundle","type":"transaction-response","entry":[{"response":{"status":"201 Created"}}]}`), 502, "for 2 requests"},
		{"transaction a batch-response", tx, "POST", nil, answer(200, nil, `{"resourceType":"Bundle","type":"batch-response","entry":[{"response":{"status":"201"}},{"response":{"status":"201"}}]}`), 502, "transaction-response"},
		{"transaction entry failed", tx, "POST", nil, answer(200, nil, `{"resourceType":"Bundle","type":"transaction-response","entry":[{"response":{"status":"201"}},{"response":{"status":"400 Bad Request"}}]}`), 502, "entry 1 failed"},
		{"transaction entry without status", tx, "POST", nil, answer(200, nil, `{"resourceType":"Bundle","type":"transaction-response","entry":[{"response":{"status":"201"}},{}]}`), 502, "no response status"},
		{"transaction refused", tx, "POST", nil, answer(400, nil, oo), 0, ""},
		{"batch with a failed entry", batch, "POST", nil, answer(200, nil, `{"resourceType":"Bundle","type":"batch-response","entry":[{"response":{"status":"201"}},{"response":{"status":"404"}}]}`), 0, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest(c.method, "/fhir/Observation", nil)
			for k, v := range c.hdr {
				r.Header.Set(k, v)
			}
			err := verifyAnswer(c.in, r, c.res)
			switch {
			case c.want == 0 && err != nil:
				t.Fatalf("refused: %v", err)
			case c.want != 0 && err == nil:
				t.Fatalf("passed on, want %d", c.want)
			case c.want != 0 && (err.Status != c.want || !strings.Contains(err.Error(), c.says)):
				t.Fatalf("got %v, want %d saying %q", err, c.want, c.says)
			}
			if c.want == 503 && err.Header.Get("Retry-After") != "5" {
				t.Errorf("Retry-After %q, want the upstream's", err.Header.Get("Retry-After"))
			}
		})
	}
}

// TestUpstreamErrorStatus: timeouts are 504s, a cut answer a 502, the
// upstream handler's own status is kept.
func TestUpstreamErrorStatus(t *testing.T) {
	for _, c := range []struct {
		err  error
		want int
		says string
	}{
		{upstreamTimeout{after: 3e9}, 504, "within 3s"},
		{errAnswerCut, 502, "cut short"},
		{answerTooLarge{limit: 10}, 502, "larger than the 10 bytes"},
		{fakeStatus{503}, 503, "unavailable"},
		{fakeStatus{504}, 504, "in time"},
	} {
		got := upstreamError(c.err)
		if got.Status != c.want || !strings.Contains(got.Error(), c.says) {
			t.Errorf("%v: got %v, want %d saying %q", c.err, got, c.want, c.says)
		}
	}
}

type fakeStatus struct{ status int }

func (f fakeStatus) Error() string   { return http.StatusText(f.status) }
func (f fakeStatus) HTTPStatus() int { return f.status }

// TestCallGuards: an upstream handler that aborts (as reverse_proxy does on
// a body cut short) or outlives the call deadline gives call an error, never
// a half answer.
func TestCallGuards(t *testing.T) {
	abort := UpstreamFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(`{"resourceType":"Bund`))
		panic(http.ErrAbortHandler)
	})
	hang := UpstreamFunc(func(w http.ResponseWriter, r *http.Request) error {
		<-r.Context().Done()
		return r.Context().Err()
	})
	req := httptest.NewRequest("GET", "/fhir/Patient/p1", nil)
	if _, err := call(guardedUpstream{up: abort}, req); err == nil || !strings.Contains(err.Error(), "cut short") {
		t.Errorf("aborted answer: %v", err)
	}
	_, err := call(guardedUpstream{up: hang, callTimeout: 50e6}, req)
	if ferr := upstreamError(err); ferr.Status != http.StatusGatewayTimeout || !strings.Contains(ferr.Error(), "within 50ms") {
		t.Errorf("hung upstream: %v", ferr)
	}
}

// TestBundleAnswerCheck: a streamed search answer that does not say it is
// FHIR becomes a 502 OperationOutcome; a FHIR one streams through.
func TestBundleAnswerCheck(t *testing.T) {
	in := interaction{kind: auth.InteractionSearch, typ: "Observation"}
	for _, c := range []struct {
		ct, cl, body string
		want         int
		says         string
	}{
		{"", "0", "", 502, "HTTP 200 with an empty body"},
		{"text/html", "", "<html>", 502, "text/html body"},
		{"application/fhir+json", "", `{"resourceType":"Bundle"}`, 200, `{"resourceType":"Bundle"}`},
		{"application/fhir+json", "", `{"resourceType":"OperationOutcome"}`, 404, `{"resourceType":"OperationOutcome"}`},
		{"text/html", "", "<html>sign in</html>", 502, "HTTP 302 with a text/html body"},
		{"text/html", "", "<html>later</html>", 503, "HTTP 503 with a text/html body"},
	} {
		rec := httptest.NewRecorder()
		w := &bundleAnswerCheck{ResponseWriter: rec, in: in}
		if c.ct != "" {
			w.Header().Set("Content-Type", c.ct)
		}
		if c.cl != "" {
			w.Header().Set("Content-Length", c.cl)
		}
		status := http.StatusOK
		switch {
		case strings.Contains(c.body, "OperationOutcome"):
			status = http.StatusNotFound
		case strings.Contains(c.body, "sign in"):
			status = http.StatusFound
		case strings.Contains(c.body, "later"):
			status = http.StatusServiceUnavailable
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte(c.body))
		if rec.Code != c.want || !strings.Contains(rec.Body.String(), c.says) {
			t.Errorf("%s: %d %s, want %d saying %q", c.ct, rec.Code, rec.Body, c.want, c.says)
		}
	}
}
