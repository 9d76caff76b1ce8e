package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// attack is one row of the attack suite: a request made with alice's
// access (or none, or a viewer's) that tries to read or write bob's data,
// and what the gateway must answer.
type attack struct {
	name string       // the one-line documentation
	on   upstreamKind // default both
	as   string       // whose token: a key of world.tokens; default "alice"
	host string       // "alice-home" (default), "bob-home" or "apex"

	method  string
	path    string   // path and query, templated ({bob}, {aliceBase}, …)
	headers []string // name, value pairs, templated
	body    string   // templated; sent as application/fhir+json unless headers say otherwise

	// target, when set, is sent verbatim as the request-target of a
	// hand-written HTTP/1.1 request over TLS (paths a client library would
	// normalise, absolute-form URIs); hostHeader then overrides Host.
	target     string
	hostHeader string

	want       outcome
	wantShared *outcome // when the shared upstream must answer otherwise

	// check is a further invariant on the answer; it returns a problem or "".
	check func(w *world, r response) string
}

// outcomeKind is how an answer is judged.
type outcomeKind int

const (
	// refusal: one of the statuses, with an OperationOutcome body.
	refusal outcomeKind = iota
	// noData: a 200 is fine when it shows nothing of bob's; a refusal
	// must still be an OperationOutcome.
	noData
	// transportLimit: Go's or Caddy's own limits answer before the
	// gateway (414, 431); no OperationOutcome is required, but no 5xx.
	transportLimit
	// noBody: one of the statuses, and no body (HEAD).
	noBody
)

// outcome is what an attack must get.
type outcome struct {
	kind     outcomeKind
	statuses []int
}

// refused accepts only a clean refusal: one of statuses, with an
// OperationOutcome.
func refused(statuses ...int) outcome { return outcome{kind: refusal, statuses: statuses} }

// noLeak accepts a 200 that shows nothing of bob's, or a clean refusal.
func noLeak() outcome {
	return outcome{kind: noData, statuses: []int{200, 400, 403, 404, 405, 406, 410, 412, 415, 422}}
}

// harmless accepts statuses (2xx included) of a request that can only
// reach alice's own data.
func harmless(statuses ...int) outcome { return outcome{kind: noData, statuses: statuses} }

// limited accepts the answers of Go's and Caddy's own size limits.
func limited(statuses ...int) outcome { return outcome{kind: transportLimit, statuses: statuses} }

// bodiless is the answer to a HEAD, which has no body to hold an
// OperationOutcome.
func bodiless(statuses ...int) outcome { return outcome{kind: noBody, statuses: statuses} }

// TestAttackSuite runs every attack of issue 5 against two records, alice's
// and bob's, on the embedded store and on an upstream that ignores
// partitions, and checks that bob's data is unchanged afterwards.
func TestAttackSuite(t *testing.T) {
	attacks := append(attackTable(), issue9Attacks()...)
	if n := len(attacks); n < 40 {
		t.Fatalf("the suite has %d attacks, the issue asks for at least 40", n)
	}
	names := map[string]bool{}
	for _, a := range attacks {
		if names[a.name] {
			t.Fatalf("two attacks share the name %q: each documents a distinct attack", a.name)
		}
		names[a.name] = true
	}
	for _, kind := range []upstreamKind{embedded, shared} {
		t.Run(kind.String(), func(t *testing.T) {
			w := startAttackWorld(t, kind)
			before, bobBefore := w.snapshot(), w.bobView()
			for _, a := range attacks {
				if a.on == 0 {
					a.on = both
				}
				if a.on&kind == 0 {
					continue
				}
				t.Run(a.name, func(t *testing.T) { w.run(t, a) })
			}
			if d := before.diff(w.snapshot()); len(d) > 0 {
				t.Errorf("bob's data (or data about bob) changed in the store during the attacks:\n%s", strings.Join(d, "\n"))
			}
			if bobAfter := w.bobView(); !slices.Equal(bobBefore, bobAfter) {
				t.Errorf("bob's own view of his record changed:\nbefore %v\nafter  %v", bobBefore, bobAfter)
			}
		})
	}
}

// TestAttackSuiteHAPI runs every attack not tuned to the embedded store or
// the shared upstream (reads, searches, includes, history, writes,
// transactions, smuggled headers and paths, values that cannot round-trip,
// conditional-create oracles, record creation, malleable tokens, scopes
// through includes and $everything) against a real HAPI FHIR JPA server
// behind the gateway, partitioned by header and not trusted: bob's data in
// HAPI is unchanged afterwards and nothing of it reaches alice.
func TestAttackSuiteHAPI(t *testing.T) {
	w := startAttackWorld(t, onHAPI)
	before, bobBefore := w.snapshot(), w.bobView()
	for _, a := range append(attackTable(), issue9Attacks()...) {
		if a.on != 0 {
			continue // tuned to the embedded store or the shared upstream
		}
		t.Run(a.name, func(t *testing.T) { w.run(t, a) })
	}
	if d := before.diff(w.snapshot()); len(d) > 0 {
		t.Errorf("bob's data (or data about bob) changed in HAPI during the attacks:\n%s", strings.Join(d, "\n"))
	}
	if bobAfter := w.bobView(); !slices.Equal(bobBefore, bobAfter) {
		t.Errorf("bob's own view of his record changed:\nbefore %v\nafter  %v", bobBefore, bobAfter)
	}
}

// TestAttackSuiteDetects shows that the suite's detectors can fail: a
// change bob makes to his own data shows in the store snapshot and in his
// view, and his own data read back counts as a leak for anyone else.
func TestAttackSuiteDetects(t *testing.T) {
	w := startAttackWorld(t, embedded)
	before, view := w.snapshot(), w.bobView()
	bob := w.tokens["bob"]
	read := w.do("GET", recordURL("bob-home", "/Condition/"+w.vars["bobCond"]), bob, nil).Expect(t, http.StatusOK, "bob reads")
	if found := w.leaks("GET /fhir/Condition", read); len(found) == 0 {
		t.Errorf("bob's own Condition was not recognised as bob's data: %s", read.Raw)
	}
	read.Body["note"] = []any{map[string]any{"text": "changed"}}
	w.do("PUT", recordURL("bob-home", "/Condition/"+w.vars["bobCond"]), bob, read.Body).Expect(t, http.StatusOK, "bob updates")
	if d := before.diff(w.snapshot()); len(d) != 1 || !strings.HasPrefix(d[0], "new: ") {
		t.Errorf("the snapshot did not see exactly bob's one new version: %v", d)
	}
	if slices.Equal(view, w.bobView()) {
		t.Error("bob's view did not change after his update")
	}
}

// run makes one attack and judges the answer.
func (w *world) run(t *testing.T, a attack) {
	t.Helper()
	if a.as == "" {
		a.as = "alice"
	}
	if a.host == "" {
		a.host = "alice-home"
	}
	token, ok := w.tokens[a.as]
	if !ok {
		t.Fatalf("no token %q", a.as)
	}
	headers := make([]string, len(a.headers))
	for i, h := range a.headers {
		headers[i] = w.expand(h)
	}
	body := w.expand(a.body)
	var res response
	var sent string
	if a.target != "" {
		sent, res = w.sendRaw(t, a, token, headers, body)
	} else {
		sent, res = w.send(t, a, token, headers, body)
	}
	want := a.want
	if a.wantShared != nil && w.kind == shared {
		want = *a.wantShared
	}
	t.Logf("answer %d %.200s", res.Status, res.Raw)
	w.judge(t, want, sent+"\n"+w.expandVars(a.body), res)
	if a.check != nil {
		if problem := a.check(w, res); problem != "" {
			t.Errorf("%s; answer %d: %.600s", problem, res.Status, res.Raw)
		}
	}
}

// judge checks status, body kind and leaks.
func (w *world) judge(t *testing.T, want outcome, sent string, res response) {
	t.Helper()
	switch {
	case res.Status >= 500:
		t.Errorf("server error %d instead of a clean refusal: %.600s", res.Status, res.Raw)
	case !slices.Contains(want.statuses, res.Status) && !(want.kind == transportLimit && res.Status == 0):
		t.Errorf("status %d, want one of %v: %.800s", res.Status, want.statuses, res.Raw)
	case want.kind == noBody && len(res.Raw) > 0:
		t.Errorf("a HEAD answer with a body: %.300s", res.Raw)
	case res.Status >= 400 && want.kind != transportLimit && want.kind != noBody:
		if res.Body["resourceType"] != "OperationOutcome" {
			t.Errorf("refusal %d is not an OperationOutcome: %.600s", res.Status, res.Raw)
		} else if ct := res.Header.Get("Content-Type"); !strings.Contains(ct, "json") {
			t.Errorf("refusal %d has Content-Type %q", res.Status, ct)
		}
	}
	for _, s := range w.leaks(sent, res) {
		t.Errorf("LEAK: the answer (%d) contains bob's %q: %.1000s", res.Status, s, res.Raw)
	}
}

// leaks returns bob's secrets that res carries (headers or body) although
// the request, sent, did not itself name them.
func (w *world) leaks(sent string, res response) []string {
	var headers strings.Builder
	for k, vs := range res.Header {
		if k == "Content-Length" || k == "Date" {
			continue // a length or a time is no one's data (and may equal a short id)
		}
		fmt.Fprintf(&headers, "%s: %s\n", k, strings.Join(vs, ", "))
	}
	answer := headers.String() + string(res.Raw)
	var found []string
	for _, s := range w.secrets {
		if !containsToken(sent, s) && containsToken(answer, s) {
			found = append(found, s)
		}
	}
	return found
}

// containsToken reports whether s occurs in text as a whole token: not
// inside a longer id or word (HAPI's ids are short numbers, "1003" must not
// be found in "21003" or in a timestamp).
func containsToken(text, s string) bool {
	idChar := func(c byte) bool {
		return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.'
	}
	for i := 0; ; {
		j := strings.Index(text[i:], s)
		if j < 0 {
			return false
		}
		start, end := i+j, i+j+len(s)
		if (start == 0 || !idChar(text[start-1])) && (end == len(text) || !idChar(text[end])) {
			return true
		}
		i = start + 1
	}
}

// send makes the attack's request with the Go client.
func (w *world) send(t *testing.T, a attack, token string, headers []string, body string) (string, response) {
	t.Helper()
	path := w.expand(a.path)
	var url string
	switch a.host {
	case "apex":
		url = apex(path)
	default:
		url = fmt.Sprintf("https://%s.%s:%d%s", a.host, baseDomain, httpsPort, path)
	}
	req, err := http.NewRequest(a.method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body == "" {
		req.Body, req.ContentLength = http.NoBody, 0
	} else {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if http.CanonicalHeaderKey(headers[i]) == "Content-Type" {
			req.Header.Del("Content-Type")
		}
		req.Header[headers[i]] = append(req.Header[headers[i]], headers[i+1])
	}
	res, err := w.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", a.method, url, err)
	}
	defer res.Body.Close()
	return a.method + " " + path + "\n" + strings.Join(headers, "\n") + "\n" + body, readResponse(t, res)
}

// sendRaw writes the attack's request by hand over TLS to the host's name.
func (w *world) sendRaw(t *testing.T, a attack, token string, headers []string, body string) (string, response) {
	t.Helper()
	target := w.expand(a.target)
	sni := fmt.Sprintf("%s.%s", a.host, baseDomain)
	host := fmt.Sprintf("%s:%d", sni, httpsPort)
	if a.hostHeader != "" {
		host = w.expand(a.hostHeader)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", a.method, target, host)
	if token != "" {
		fmt.Fprintf(&b, "Authorization: Bearer %s\r\n", token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		fmt.Fprintf(&b, "%s: %s\r\n", headers[i], headers[i+1])
	}
	if body != "" {
		fmt.Fprintf(&b, "Content-Type: application/fhir+json\r\nContent-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n")
	b.WriteString(body)
	sent := b.String()
	return sent, rawExchange(t, sni, sent)
}
