package crashtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// TestImportKilled SIGKILLs the gateway while an import it acknowledged
// (202) runs, written in chunks of 250 resources (6 transactions): right
// after the 202, while it reads and matches, right after a chunk
// committed (its progress says so), and at a random moment while it
// writes. After each restart the job resumes after its last committed
// chunk and ends complete, and the record holds the import exactly once:
// never a chunk twice, never a chunk missing. (A kill after a chunk's
// commit but before the job recorded it is found by the content tags of
// that chunk: gateway's TestImportResumesAfterChunk makes that case
// happen every time.)
func TestImportKilled(t *testing.T) {
	g := newGatewayWith(t, gatewayOptions{config: withUpstream(`		upstream pfr_store {
			path %[2]s/data/store.db
		}
		export {
			import_chunk 250
		}`)})
	owner := g.token("importer")
	const n = 1500
	var ndjson bytes.Buffer
	ndjson.WriteString(`{"resourceType":"Patient","id":"src","name":[{"family":"Kill","given":["Kim"]}],"gender":"female","birthDate":"1975-05-05"}` + "\n")
	for i := range n {
		// Each Observation but the first derives from the one before:
		// references across chunks.
		derived := ""
		if i > 0 {
			derived = fmt.Sprintf(`,"derivedFrom":[{"reference":"Observation/o%d"}]`, i-1)
		}
		fmt.Fprintf(&ndjson, `{"resourceType":"Observation","id":"o%d","status":"final","code":{"text":"imported %d"},"subject":{"reference":"Patient/src"},"valueQuantity":{"value":%d.50}%s}`+"\n", i, i, i, derived)
	}
	for round, when := range []string{"after the 202", "while matching", "after a chunk", "while writing"} {
		slug := fmt.Sprintf("killed-import-%d", round)
		g.createRecord(owner, slug, map[string]any{"resourceType": "Patient", "name": []any{map[string]any{"family": "Kill", "given": []any{"Kim"}}},
			"gender": "female", "birthDate": "1975-05-05"})
		res, err := g.sendWith(context.Background(), "POST", g.apex("/pfr/v1/records/"+slug+"/import"), owner, ndjson.Bytes(),
			http.Header{"Content-Type": {"application/fhir+ndjson"}})
		if err != nil || res.Status != http.StatusAccepted {
			t.Fatalf("%s: import: %v %d %.300s", when, err, res.Status, res.Raw)
		}
		status := res.Header.Get("Content-Location")
		status = g.apex(status[strings.Index(status, "/pfr/v1/"):])
		switch when {
		case "while matching":
			g.waitProgress(owner, status, "matching")
		case "after a chunk":
			g.waitProgress(owner, status, "250 written")
		case "while writing":
			g.waitProgress(owner, status, "writing")
			time.Sleep(rand.N(2 * time.Second))
		}
		g.restart()
		var final map[string]any
		testkit.Wait(t, "the import to complete after the restart", func() bool {
			res := g.do("GET", status, owner, nil)
			if res.Status == http.StatusOK {
				final = res.Body
				return true
			}
			if res.Status != http.StatusAccepted {
				t.Fatalf("%s: the import after the restart: %d %.300s", when, res.Status, res.Raw)
			}
			return false
		})
		counts := g.recordCounts(owner, slug, []string{"Observation", "Patient"})
		if counts["Observation"] != n || counts["Patient"] != 1 {
			t.Errorf("killed %s: the record holds %v, want %d Observations and its one Patient", when, counts, n)
		}
		result, _ := final["result"].(map[string]any)
		if when == "after a chunk" && result["resumed"] != true {
			t.Errorf("killed %s: the import did not resume after its committed chunks: %.300s", when, final)
		}
		g.checkChain(owner, slug, n)
		t.Logf("killed %s: %v in %v transactions (resumed: %v), %v", when, final["status"], result["transactions"], result["resumed"], counts)
	}
}

// checkChain checks that every imported Observation but the first
// derives from the one imported just before it, in the record.
func (g *gatewayProcess) checkChain(token, slug string, n int) {
	g.t.Helper()
	byText := map[string]string{}
	derived := map[string]string{}
	next := g.recordURL(slug, "/Observation?_count=1000")
	for next != "" {
		res := g.do("GET", next, token, nil)
		if res.Status != http.StatusOK {
			g.t.Fatalf("reading the Observations: %d %.300s", res.Status, res.Raw)
		}
		entries, _ := res.Body["entry"].([]any)
		for _, e := range entries {
			r, _ := e.(map[string]any)["resource"].(map[string]any)
			code, _ := r["code"].(map[string]any)
			text, _ := code["text"].(string)
			byText[text] = "Observation/" + r["id"].(string)
			if d, ok := r["derivedFrom"].([]any); ok && len(d) == 1 {
				derived[text], _ = d[0].(map[string]any)["reference"].(string)
			}
		}
		next = ""
		links, _ := res.Body["link"].([]any)
		for _, l := range links {
			if m, _ := l.(map[string]any); m["relation"] == "next" {
				next, _ = m["url"].(string)
			}
		}
	}
	bad := 0
	for i := 1; i < n; i++ {
		if got, want := derived[fmt.Sprintf("imported %d", i)], byText[fmt.Sprintf("imported %d", i-1)]; got != want || want == "" {
			if bad++; bad <= 3 {
				g.t.Errorf("imported %d derives from %q, want %q", i, got, want)
			}
		}
	}
}

// waitProgress polls an import's status until its X-Progress mentions
// phase (the test fails if it ends first).
func (g *gatewayProcess) waitProgress(token, status, phase string) {
	g.t.Helper()
	testkit.WaitFor(g.t, fmt.Sprintf("the import to say %q", phase), 10*time.Millisecond, func() error {
		res := g.do("GET", status, token, nil)
		if res.Status != http.StatusAccepted {
			g.t.Fatalf("the import ended before it was %s: %d %.300s", phase, res.Status, res.Raw)
		}
		if p := res.Header.Get("X-Progress"); !strings.Contains(p, phase) {
			return fmt.Errorf("it says %q", p)
		}
		return nil
	})
}

// TestExportKilled SIGKILLs a single gateway while it runs an export it
// acknowledged (202), as it reads the record: after the restart the job
// resumes at the first type not yet complete, and the manifest's files
// hold every resource of the record exactly once.
func TestExportKilled(t *testing.T) {
	g := newGateway(t)
	owner := g.token("exporter")
	const slug, n = "killed-export", 400
	g.createRecord(owner, slug, map[string]any{"resourceType": "Patient", "name": []any{map[string]any{"family": "Kill", "given": []any{"Kai"}}},
		"gender": "male", "birthDate": "1980-08-08"})
	var ndjson bytes.Buffer
	ndjson.WriteString(`{"resourceType":"Patient","id":"src","name":[{"family":"Kill","given":["Kai"]}],"gender":"male","birthDate":"1980-08-08"}` + "\n")
	for i := range n {
		fmt.Fprintf(&ndjson, `{"resourceType":"Observation","id":"o%d","status":"final","code":{"text":"exported %d"},"subject":{"reference":"Patient/src"}}`+"\n", i, i)
		fmt.Fprintf(&ndjson, `{"resourceType":"Condition","id":"c%d","code":{"text":"exported %d"},"subject":{"reference":"Patient/src"}}`+"\n", i, i)
	}
	res, err := g.sendWith(context.Background(), "POST", g.apex("/pfr/v1/records/"+slug+"/import"), owner, ndjson.Bytes(),
		http.Header{"Content-Type": {"application/fhir+ndjson"}})
	if err != nil || res.Status != http.StatusAccepted {
		t.Fatalf("loading the record: %v %d %.300s", err, res.Status, res.Raw)
	}
	loc := res.Header.Get("Content-Location")
	began := time.Now()
	g.waitDone(owner, g.apex(loc[strings.Index(loc, "/pfr/v1/"):]))
	t.Logf("loaded in %.1fs", time.Since(began).Seconds())

	status := startExport(t, g, owner, slug)
	time.Sleep(rand.N(300 * time.Millisecond))
	g.restart()
	types := checkExportOn(t, g, owner, slug, status)
	if types["Observation"] != n || types["Condition"] != n || types["Patient"] != 1 {
		t.Errorf("the export holds %v, want %d Observations, %d Conditions and the Patient", types, n, n)
	}
	if !g.logHasLine("resuming a bulk export left unfinished") {
		t.Errorf("the restarted gateway did not resume the export:\n%s", g.logTail(20))
	}
}

// waitDone polls an import's status until it is complete.
func (g *gatewayProcess) waitDone(token, status string) {
	g.t.Helper()
	testkit.WaitFor(g.t, "the import to end", 100*time.Millisecond, func() error {
		res := g.do("GET", status, token, nil)
		if res.Status != http.StatusOK && res.Status != http.StatusAccepted {
			g.t.Fatalf("the import failed: %d %.300s", res.Status, res.Raw)
		}
		if res.Status != http.StatusOK {
			return errors.New("it is in progress")
		}
		return nil
	})
}
