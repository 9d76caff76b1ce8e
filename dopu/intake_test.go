package dopu

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/pfrgateway/caddy-pfr/fhir"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

func TestIntakeStoresIPS(t *testing.T) {
	f := newFixture(t, Limits{}, Options{})
	body := testkit.ReadFHIR(t, ipsPath)
	r := f.mustDrop("rec1", body, "192.0.2.1")
	if r.Status != StatusPending || r.Duplicate || len(r.ID) != 22 {
		t.Fatalf("receipt %+v", r)
	}
	list, err := f.svc.List(context.Background(), "rec1")
	if err != nil || len(list) != 1 {
		t.Fatalf("list %v %v", list, err)
	}
	s := list[0]
	if s.BundleType != "document" || s.ResourceCounts["Observation"] != 7 || s.ResourceCounts["Patient"] != 1 || s.Size != int64(len(body)) {
		t.Errorf("summary %+v", s)
	}
	if s.Subject == nil || s.Subject.BirthDate != "1972-05-01" || s.Subject.Gender != "female" || s.Subject.Names[0].Family != "DeLarosa" {
		t.Errorf("subject %+v", s.Subject)
	}
	if s.Sender.IP != "192.0.2.1" || s.Sender.UserAgent != "test" {
		t.Errorf("sender %+v", s.Sender)
	}
	sum, got, err := f.svc.Get(context.Background(), "rec1", r.ID)
	if err != nil || !bytes.Equal(got, body) || sum.ID != r.ID {
		t.Fatalf("get: %v, body equal %v", err, bytes.Equal(got, body))
	}
	if _, _, err := f.svc.Get(context.Background(), "other", r.ID); err == nil {
		t.Error("another record read the drop-off")
	}
	st, err := f.svc.Status(context.Background(), r.ID)
	if err != nil || st != StatusPending {
		t.Errorf("status %v %v", st, err)
	}
	if _, err := f.svc.Status(context.Background(), "AAAAAAAAAAAAAAAAAAAAAA"); err == nil {
		t.Error("unknown receipt has a status")
	}
}

func TestIntakeRefusals(t *testing.T) {
	big := func(n int) []byte {
		var b bytes.Buffer
		b.WriteString(`{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Basic","text":"`)
		b.WriteString(strings.Repeat("x", n))
		b.WriteString(`"}}]}`)
		return b.Bytes()
	}
	manyEntries := func(n int) []byte {
		var b bytes.Buffer
		b.WriteString(`{"resourceType":"Bundle","type":"collection","entry":[`)
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(`{"resource":{"resourceType":"Basic"}}`)
		}
		b.WriteString(`]}`)
		return b.Bytes()
	}
	deep := func(depth int) []byte {
		return []byte(`{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Basic","extension":` +
			strings.Repeat("[", depth) + strings.Repeat("]", depth) + `}}]}`)
	}
	gz := func(data []byte) []byte {
		var b bytes.Buffer
		w, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
		w.Write(data)
		w.Close()
		return b.Bytes()
	}
	// A gzip bomb: about 21 KiB of zeros per KiB sent.
	bomb := gz(bytes.Repeat([]byte{'0'}, 21<<20))

	cases := []struct {
		name        string
		contentType string
		encoding    string
		body        []byte
		status      int
		diagnostic  string
	}{
		{"invalid JSON", fhir.ContentType, "", []byte(`{"resourceType":"Bundle",`), 400, "not valid JSON"},
		{"Patient instead of Bundle", fhir.ContentType, "", []byte(`{"resourceType":"Patient","id":"x"}`), 422, "only a Bundle"},
		{"array", fhir.ContentType, "", []byte(`[1,2]`), 422, "not a FHIR resource"},
		{"history", fhir.ContentType, "", []byte(`{"resourceType":"Bundle","type":"history","entry":[]}`), 422, "Bundle.type must be"},
		{"searchset of outcomes only", fhir.ContentType, "", []byte(`{"resourceType":"Bundle","type":"searchset","entry":[{"resource":{"resourceType":"OperationOutcome"},"search":{"mode":"outcome"}}]}`), 422, "only outcome entries"},
		{"no type", fhir.ContentType, "", []byte(`{"resourceType":"Bundle"}`), 422, "Bundle.type must be"},
		{"entry not an array", fhir.ContentType, "", []byte(`{"resourceType":"Bundle","type":"collection","entry":{}}`), 422, "malformed"},
		{"entry without resource", fhir.ContentType, "", []byte(`{"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"urn:uuid:1"}]}`), 422, "has no resource"},
		{"resource without type", fhir.ContentType, "", []byte(`{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"id":"1"}}]}`), 422, "no valid resourceType"},
		{"DELETE in transaction", fhir.ContentType, "", []byte(`{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Basic"},"request":{"method":"DELETE","url":"Patient/1"}}]}`), 422, "only create or update"},
		{"21 MiB", fhir.ContentType, "", big(21 << 20), 413, "larger than the limit"},
		{"10001 entries", fhir.ContentType, "", manyEntries(10001), 413, "10001 entries"},
		{"depth 200", fhir.ContentType, "", deep(200), 400, "nested deeper"},
		{"gzip bomb", fhir.ContentType, "gzip", bomb, 413, "larger than the limit"},
		{"corrupt gzip", fhir.ContentType, "gzip", []byte("not gzip at all"), 400, "not valid gzip"},
		{"truncated gzip", fhir.ContentType, "gzip", gz(testkit.ReadFHIR(t, ipsPath))[:500], 400, "not valid gzip"},
		{"XML", "application/fhir+xml", "", []byte(`<Bundle/>`), 415, "FHIR JSON Bundle"},
		{"no content type", "", "", testkit.ReadFHIR(t, ipsPath), 415, "FHIR JSON Bundle"},
		{"latin1", "application/fhir+json; charset=iso-8859-1", "", testkit.ReadFHIR(t, ipsPath), 415, "UTF-8"},
		{"brotli", fhir.ContentType, "br", testkit.ReadFHIR(t, ipsPath), 415, "Content-Encoding"},
	}
	if len(bomb) > 64<<10 {
		t.Fatalf("the bomb is %d bytes compressed; it should be small", len(bomb))
	}
	f := newFixture(t, Limits{SourceRate: Rate{PerMinute: -1}, RecordRate: Rate{PerMinute: -1}}, Options{})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := f.svc.Intake(context.Background(), "rec1", c.contentType, c.encoding, bytes.NewReader(c.body), Sender{IP: "192.0.2.1"})
			wantFHIRError(t, err, c.status, c.diagnostic)
			assertEmpty(t, f, "rec1")
		})
	}
	// The limits accept what is just within them.
	t.Run("10000 entries accepted", func(t *testing.T) {
		if _, err := f.drop("rec2", manyEntries(10000), "192.0.2.1"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("gzip accepted", func(t *testing.T) {
		if _, err := f.svc.Intake(context.Background(), "rec3", "application/json", "gzip", bytes.NewReader(gz(testkit.ReadFHIR(t, ipsPath))), Sender{}); err != nil {
			t.Fatal(err)
		}
	})
}

func TestIntakeDedup(t *testing.T) {
	f := newFixture(t, Limits{}, Options{})
	body := testkit.ReadFHIR(t, ipsPath)
	first := f.mustDrop("rec1", body, "192.0.2.1")
	again := f.mustDrop("rec1", body, "192.0.2.2")
	if again.ID != first.ID || !again.Duplicate {
		t.Errorf("second drop-off of the same bytes: %+v, want receipt %s", again, first.ID)
	}
	other := f.mustDrop("rec2", body, "192.0.2.1")
	if other.ID == first.ID || other.Duplicate {
		t.Errorf("same bytes for another record got receipt %+v", other)
	}
	changed := append(bytes.Clone(body[:len(body)-1]), ' ', '}')
	if r := f.mustDrop("rec1", changed, "192.0.2.1"); r.ID == first.ID {
		t.Error("different bytes got the same receipt")
	}
	// Gzip of the same bytes is the same drop-off.
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write(body)
	w.Close()
	r, err := f.svc.Intake(context.Background(), "rec1", fhir.ContentType, "gzip", &gz, Sender{})
	if err != nil || r.ID != first.ID {
		t.Errorf("gzip of the same bytes: %+v %v", r, err)
	}
	list, _ := f.svc.List(context.Background(), "rec1")
	if len(list) != 2 {
		t.Errorf("rec1 holds %d drop-offs, want 2", len(list))
	}
	// After rejection, the same bytes still give the same receipt (now
	// rejected): a sender cannot flood by resending.
	if err := f.svc.Reject(context.Background(), "rec1", first.ID, "not mine"); err != nil {
		t.Fatal(err)
	}
	r = f.mustDrop("rec1", body, "192.0.2.1")
	if r.ID != first.ID || r.Status != StatusRejected {
		t.Errorf("after rejection: %+v", r)
	}
}

func TestIntakeFlood(t *testing.T) {
	limits := Limits{
		SourceRate:       Rate{PerMinute: 6, Burst: 3},
		RecordRate:       Rate{PerMinute: 60, Burst: 10},
		PendingPerRecord: 4,
	}
	f := newFixture(t, limits, Options{})
	n := 0
	next := func() []byte {
		n++
		return bundleJSON(t, "collection", map[string]any{"resourceType": "Basic", "id": fmt.Sprint(n)})
	}
	// Source limit: the burst of 3, then 429 for that address only.
	for i := range 3 {
		if _, err := f.drop("rec1", next(), "198.51.100.7"); err != nil {
			t.Fatalf("drop %d: %v", i, err)
		}
	}
	_, err := f.drop("rec2", next(), "198.51.100.7")
	fe := wantFHIRError(t, err, http.StatusTooManyRequests, "from this address")
	if got := fe.Header.Get("Retry-After"); got != "10" {
		t.Errorf("Retry-After %q, want 10 (one token at 6 per minute)", got)
	}
	// IPv6: the whole /64 shares one bucket.
	for i := range 3 {
		if _, err := f.drop("rec3", next(), fmt.Sprintf("2001:db8::%d", i+1)); err != nil {
			t.Fatal(err)
		}
	}
	_, err = f.drop("rec3", next(), "2001:db8::ffff")
	wantFHIRError(t, err, http.StatusTooManyRequests, "from this address")

	// Quota: rec1 already holds 3; one more fits, the fifth is refused
	// from any address.
	if _, err := f.drop("rec1", next(), "203.0.113.1"); err != nil {
		t.Fatal(err)
	}
	_, err = f.drop("rec1", next(), "203.0.113.2")
	wantFHIRError(t, err, http.StatusTooManyRequests, "too many pending")
	// Other records and other sources are unaffected.
	if _, err := f.drop("rec2", next(), "203.0.113.3"); err != nil {
		t.Fatalf("another record: %v", err)
	}
	list, _ := f.svc.List(context.Background(), "rec1")
	if len(list) != 4 {
		t.Fatalf("rec1 holds %d, want 4", len(list))
	}
	// Rejecting one frees its place.
	if err := f.svc.Reject(context.Background(), "rec1", list[0].ID, "spam"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.drop("rec1", next(), "203.0.113.4"); err != nil {
		t.Fatalf("after freeing quota: %v", err)
	}
	// The address refused earlier can drop off again once its bucket refills.
	f.clock.Advance(10 * 1e9)
	if _, err := f.drop("rec2", next(), "198.51.100.7"); err != nil {
		t.Fatalf("after refill: %v", err)
	}

	// Record rate: many sources, one record.
	g := newFixture(t, Limits{RecordRate: Rate{PerMinute: 1, Burst: 2}}, Options{})
	for i := range 2 {
		if _, err := g.drop("hot", next(), fmt.Sprintf("192.0.2.%d", i+1)); err != nil {
			t.Fatal(err)
		}
	}
	_, err = g.drop("hot", next(), "192.0.2.99")
	wantFHIRError(t, err, http.StatusTooManyRequests, "for this record")
	if _, err := g.drop("cold", next(), "192.0.2.99"); err != nil {
		t.Fatalf("another record was throttled: %v", err)
	}
}

func TestQuotaBytes(t *testing.T) {
	body := testkit.ReadFHIR(t, ipsPath)
	f := newFixture(t, Limits{PendingBytesPerRecord: int64(len(body)) + 100}, Options{})
	f.mustDrop("rec1", body, "192.0.2.1")
	_, err := f.drop("rec1", bundleJSON(t, "collection", map[string]any{"resourceType": "Basic", "text": strings.Repeat("y", 200)}), "192.0.2.1")
	wantFHIRError(t, err, http.StatusTooManyRequests, "too many pending")
}

// TestScanBundleReadsAsDecoding: the one pass that checks a drop-off and
// reads its heads (scanBundle) reads the same Bundle as decoding it with
// encoding/json and reading each resource's head on its own, for real
// documents and for names with escapes and members of the wrong type.
func TestScanBundleReadsAsDecoding(t *testing.T) {
	docs := map[string][]byte{
		"escaped names": []byte(`{"resourceType":"Bundle","t\u0079pe":"collection","entry":[{"full\u0055rl":"urn:x","resource":{"resource\u0054ype":"Observation","identifier":[{"system":"s","value":"v"}],"subject":{"refer\u0065nce":"Patient/1"}}}]}`),
		"wrong types":   []byte(`{"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":7,"resource":{"resourceType":"Observation","id":5,"subject":"Patient/1","patient":{"reference":["x"]}}},null,{"resource":[1]},{"request":{"method":1}}]}`),
		"requests":      []byte(`{"resourceType":"Bundle","type":"searchset","entry":[{"resource":{"resourceType":"Basic"},"request":{"method":null,"url":"x","ifNoneExist":"a\u0062"},"search":{"mode":5}},{"search":"match","request":[]},{"request":null,"search":{"mode":"outcome","score":1}}]}`),
		"identifiers":   []byte(`{"resourceType":"Bundle","type":"collection","identifier":{"system":"s","value":"b"},"entry":[{"resource":{"resourceType":"Observation","identifier":[1,{"value":"a","system":5},{"system":"s","value":"v\u0031"},null]}},{"resource":{"resourceType":"Composition","identifier":{"value":"c"}}}]}`),
	}
	for _, path := range []string{ipsPath, father, synthea, "spec/Bundle-bundle-transaction.json"} {
		docs[path] = testkit.ReadFHIR(t, path)
	}
	for name, data := range docs {
		var scanned, decoded rawBundle
		_, typeErr, err := scanBundle(data, 64, &scanned)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		decodeErr := json.Unmarshal(data, &decoded)
		if (typeErr == nil) != (decodeErr == nil) || typeErr != nil && decodeProblem(typeErr) != decodeProblem(decodeErr) {
			t.Errorf("%s: type error %v, encoding/json %v", name, typeErr, decodeErr)
		}
		if len(scanned.Entry) != len(decoded.Entry) || !reflect.DeepEqual(scanned.ResourceType, decoded.ResourceType) ||
			!reflect.DeepEqual(scanned.Type, decoded.Type) || !bytes.Equal(scanned.Identifier, decoded.Identifier) {
			t.Fatalf("%s: scanned %+v, decoded %+v", name, scanned, decoded)
		}
		for i := range scanned.Entry {
			s, d := scanned.Entry[i], decoded.Entry[i]
			if s.FullURL != d.FullURL || !bytes.Equal(s.Resource, d.Resource) || !reflect.DeepEqual(s.Request, d.Request) || !reflect.DeepEqual(s.Search, d.Search) {
				t.Errorf("%s entry %d: scanned %+v, decoded %+v", name, i, s, d)
			}
			hs, errS := checkEntry(i, s, "collection")
			hd, errD := checkEntry(i, d, "collection")
			if testkit.JSONString(t, hs) != testkit.JSONString(t, hd) || (errS == nil) != (errD == nil) {
				t.Errorf("%s entry %d: head %s (%v), from the decoded entry %s (%v)", name, i, testkit.JSONString(t, hs), errS, testkit.JSONString(t, hd), errD)
			}
		}
	}
}
