package crashtest

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestImportKilled SIGKILLs the gateway while an import it acknowledged
// (202) runs: right after the 202, while it reads and matches, and while
// it writes its one transaction (at a random moment of it). After each
// restart the job resumes and ends complete, and the record holds the
// import exactly once: never half of it, never twice. (A kill after the
// commit but before the job was saved complete is found by the job's tag
// and not written again: the log line says whether that happened;
// gateway's TestImportResumes makes that case happen every time.)
func TestImportKilled(t *testing.T) {
	g := newGateway(t)
	owner := g.token("importer")
	const n = 1500
	var ndjson bytes.Buffer
	ndjson.WriteString(`{"resourceType":"Patient","id":"src","name":[{"family":"Kill","given":["Kim"]}],"gender":"female","birthDate":"1975-05-05"}` + "\n")
	for i := range n {
		fmt.Fprintf(&ndjson, `{"resourceType":"Observation","id":"o%d","status":"final","code":{"text":"imported %d"},"subject":{"reference":"Patient/src"},"valueQuantity":{"value":%d.50}}`+"\n", i, i, i)
	}
	for round, when := range []string{"after the 202", "while matching", "while writing"} {
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
		case "while writing":
			g.waitProgress(owner, status, "writing")
			time.Sleep(rand.N(500 * time.Millisecond))
		}
		g.restart()
		var final map[string]any
		for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(200 * time.Millisecond) {
			res := g.do("GET", status, owner, nil)
			if res.Status == http.StatusOK {
				final = res.Body
				break
			}
			if res.Status != http.StatusAccepted || time.Now().After(deadline) {
				t.Fatalf("%s: the import after the restart: %d %.300s", when, res.Status, res.Raw)
			}
		}
		counts := g.recordCounts(owner, slug, []string{"Observation", "Patient"})
		if counts["Observation"] != n || counts["Patient"] != 1 {
			t.Errorf("killed %s: the record holds %v, want %d Observations and its one Patient", when, counts, n)
		}
		result, _ := final["result"].(map[string]any)
		t.Logf("killed %s: %v (resumed after a commit: %v), %v", when, final["status"], result["resumed"], counts)
	}
}

// waitProgress polls an import's status until its X-Progress mentions
// phase (the test fails if it ends first).
func (g *gatewayProcess) waitProgress(token, status, phase string) {
	g.t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		res := g.do("GET", status, token, nil)
		if res.Status != http.StatusAccepted {
			g.t.Fatalf("the import ended before it was %s: %d %.300s", phase, res.Status, res.Raw)
		}
		if strings.Contains(res.Header.Get("X-Progress"), phase) {
			return
		}
	}
	g.t.Fatalf("the import never said %q", phase)
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
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		res := g.do("GET", status, token, nil)
		if res.Status == http.StatusOK {
			return
		}
		if res.Status != http.StatusAccepted {
			g.t.Fatalf("the import failed: %d %.300s", res.Status, res.Raw)
		}
	}
	g.t.Fatal("the import did not end")
}
