package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pfrgateway/caddy-pfr/auth"
	"github.com/pfrgateway/caddy-pfr/internal/cli"
	"github.com/pfrgateway/caddy-pfr/internal/hapitest"
	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// hapiGatewaySite is a second gateway in the same Caddy, at
// *.hapi.localhost, in front of HAPI: %[1]s its data directory, %[2]s
// HAPI's address, %[3]d the HTTPS port.
const hapiGatewaySite = `
https://hapi.localhost:%[3]d, https://*.hapi.localhost:%[3]d {
	tls internal
	pfr {
		base_domain hapi.localhost
		data_dir %[1]s
		dev_issuer
		partition header
		# imports from HAPI's own $export (on loopback)
		webhook_allow 127.0.0.1/32
		upstream reverse_proxy %[2]s
	}
}
`

// runCLI runs the pfr command line in this process.
func runPFR(t *testing.T, args ...string) (string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := cli.Run(args, &cli.Env{Stdout: &out, Stderr: &errOut, Getenv: func(string) string { return "" },
		Caddy: func([]string) int { t.Fatal("not a caddy-pfr command"); return 1 }})
	if code != cli.ExitOK {
		t.Fatalf("pfr %s: exit %d\n%s%s", strings.Join(args, " "), code, out.String(), errOut.String())
	}
	return out.String(), errOut.String()
}

// TestMoveRecordToHAPI moves a record holding a Synthea history from a
// gateway on the embedded store to a gateway in front of HAPI FHIR with the
// command line: pfr export from the first, pfr import into a record of
// the same person on the second. Both records then hold the same resources
// (ids and meta aside), with the same reference graph, and Patient/
// $everything answers the same on both.
func TestMoveRecordToHAPI(t *testing.T) {
	h := startHAPI(t, "header")
	dirB := t.TempDir()
	devB, err := auth.LoadOrCreateDevIssuer(dirB)
	if err != nil {
		t.Fatal(err)
	}
	dirA := t.TempDir()
	e := loadGateway(t, dirA, withStore(dirA, ""), fmt.Sprintf(hapiGatewaySite, dirB, h.addr, httpsPort))
	e.client.Timeout = 10 * time.Minute

	// The source: a record whose owner posted a Synthea history as a
	// transaction (its Patient entry the update of the record's Patient).
	history := readSent(t, filepath.Join(realworldDir, "synthea-hiv", "Bethanie176_DAmore443_519be2d8-138c-c3d4-293b-afe9743b6865.json"))
	person := history.subjectPatient(t)
	alice := e.token("alice")
	demographics := map[string]any{"resourceType": "Patient"}
	for _, k := range []string{"name", "gender", "birthDate"} {
		demographics[k] = person[k]
	}
	pidA := e.do("POST", apex("/pfr/v1/records"), alice, map[string]any{"slug": "bethanie", "patient": demographics}).
		Expect(t, http.StatusCreated, "the record on the store gateway").Body["patientId"].(string)
	l := &landed{rw: &realWorld{t: t, e: e}, t: t, slug: "bethanie", tok: alice, pid: pidA, created: map[string]map[string]any{}}
	l.post(history, func(entry map[string]any) {
		res := entry["resource"].(map[string]any)
		if res["resourceType"] == "Patient" {
			res["id"] = pidA
			entry["request"] = map[string]any{"method": "PUT", "url": "Patient/" + pidA}
		}
	})

	// The destination: a record of the same person on the HAPI gateway,
	// made from the exported Patient as its owner would.
	tokB, err := devB.Mint("alice-b", "openid patient/*.cruds", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	apexB := fmt.Sprintf("https://hapi.localhost:%d", httpsPort)
	baseB := fmt.Sprintf("https://bethanie.hapi.localhost:%d/fhir", httpsPort)
	patient := map[string]any{"resourceType": "Patient"}
	for k, v := range person {
		if k != "id" && k != "meta" && k != "text" {
			patient[k] = v
		}
	}
	resB := e.do("POST", apexB+"/pfr/v1/records", tokB, map[string]any{"slug": "bethanie", "patient": patient}).
		Expect(t, http.StatusCreated, "the record on the HAPI gateway")
	pidB := resB.Body["patientId"].(string)

	out := filepath.Join(t.TempDir(), "export")
	stdout, stderr := runPFR(t, "export", "--from", recordURL("bethanie", ""), "--token", alice, "--out", out, "--insecure", "--json")
	t.Logf("pfr export: %s", stdout)
	if !strings.Contains(stderr, "pfr export: waiting") || !strings.Contains(stderr, "download") {
		t.Errorf("pfr export showed no progress on stderr: %s", stderr)
	}
	if _, err := os.Stat(filepath.Join(out, "SHA256SUMS")); err != nil {
		t.Errorf("no SHA256SUMS: %v", err)
	}
	stdout, _ = runPFR(t, "import", "--to", baseB, "--token", tokB, "--in", out, "--insecure", "--quiet", "--json")
	var imported struct {
		Status string `json:"status"`
		Result struct {
			Imported int `json:"imported"`
			Report   struct {
				Skipped []any `json:"skipped"`
				Logical []any `json:"logical"`
			} `json:"report"`
		} `json:"result"`
		Resources int `json:"resources"`
	}
	if err := json.Unmarshal([]byte(stdout), &imported); err != nil {
		t.Fatalf("pfr import --json: %v: %s", err, stdout)
	}
	t.Logf("pfr import: %d of %d resources imported, %d skipped, %d references made logical",
		imported.Result.Imported, imported.Resources, len(imported.Result.Report.Skipped), len(imported.Result.Report.Logical))

	// Same resources, same graph: every resource of each record as a
	// canonical key (content without ids, meta and references) with its
	// references as the keys of their targets.
	a := e.graphOf(t, recordURL("bethanie", ""), alice, pidA)
	b := e.graphOf(t, baseB, tokB, pidB)
	if len(a.nodes) < 500 {
		t.Fatalf("the source record holds only %d resources", len(a.nodes))
	}
	compareGraphs(t, a, b)

	exportFromHAPI(t, e, h, apexB, baseB, tokB, pidB, b)

	// Patient/$everything: the same resources on both (HAPI's leaves out
	// what only references no search parameter indexes reach: those may
	// be missing, nothing else).
	evA := e.everythingKeys(t, recordURL("bethanie", ""), alice, pidA, a)
	evB := e.everythingKeys(t, baseB, tokB, pidB, b)
	extra, missing := 0, 0
	for k, n := range evB {
		if evA[k] < n {
			extra++
			if extra <= 5 {
				t.Errorf("$everything on HAPI returns %s, not in the source's", k)
			}
		}
	}
	for k, n := range evA {
		if evB[k] < n {
			missing++
		}
	}
	t.Logf("$everything: %d resources on the store, %d on HAPI; %d of the store's not on HAPI", sum(evA), sum(evB), missing)
	compartment := 0
	for _, n := range a.nodes {
		if n.inCompartment && evB[n.key] == 0 {
			compartment++
			if compartment <= 5 {
				t.Errorf("$everything on HAPI misses %s of the Patient's compartment", n.ref)
			}
		}
	}
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// node is one resource of a record's graph.
type node struct {
	ref           string // Type/id in its record
	key           string // canonical content key
	edges         []string
	inCompartment bool
}

type graph struct {
	nodes map[string]*node // by Type/id
}

// graphOf reads every resource of the record at base (each type the
// Synthea history holds, every page) into a graph.
func (e *env) graphOf(t *testing.T, base, token, pid string) *graph {
	t.Helper()
	g := &graph{nodes: map[string]*node{}}
	raw := map[string]map[string]any{}
	for _, typ := range []string{"Patient", "Encounter", "Condition", "Observation", "DiagnosticReport", "DocumentReference",
		"Claim", "ExplanationOfBenefit", "Procedure", "MedicationRequest", "Immunization", "CarePlan", "CareTeam", "Goal",
		"AllergyIntolerance", "Device", "ImagingStudy", "Medication", "MedicationAdministration", "Provenance", "SupplyDelivery",
		"Organization", "Practitioner", "Location", "PractitionerRole"} {
		next := base + "/" + typ + "?_count=200"
		for next != "" {
			res := e.do("GET", next, token, nil).Expect(t, http.StatusOK, "search "+typ)
			for _, en := range anySlice(res.Body["entry"]) {
				r := decodeNumbers(t, mustMarshal(t, en.(map[string]any)["resource"]))
				raw[fmt.Sprint(r["resourceType"], "/", r["id"])] = r
			}
			next = link(res, "next")
		}
	}
	for ref, r := range raw {
		g.nodes[ref] = &node{ref: ref, key: contentKey(r), inCompartment: ref == "Patient/"+pid || refersTo(r, "Patient/"+pid)}
	}
	for ref, r := range raw {
		n := g.nodes[ref]
		walkRefs(r, "", func(path, target string) {
			if i := strings.Index(target, "/_history/"); i >= 0 {
				target = target[:i]
			}
			if i := strings.LastIndex(target, "/fhir/"); i >= 0 {
				target = target[i+len("/fhir/"):]
			}
			to := "?" + target // outside the record: kept as written (logical or dangling)
			if tn, ok := g.nodes[target]; ok {
				to = tn.key
				if target == "Patient/"+pid {
					to = "the Patient"
				}
			}
			n.edges = append(n.edges, path+"→"+to)
		})
		slices.Sort(n.edges)
	}
	return g
}

// refersTo reports whether r references target anywhere.
func refersTo(r map[string]any, target string) bool {
	found := false
	walkRefs(r, "", func(_, ref string) { found = found || ref == target })
	return found
}

// walkRefs calls fn for every Reference.reference in v with its path.
func walkRefs(v any, path string, fn func(path, ref string)) {
	switch x := v.(type) {
	case map[string]any:
		for k, c := range x {
			if k == "reference" {
				if s, ok := c.(string); ok && !strings.HasPrefix(s, "#") {
					fn(path, s)
				}
				continue
			}
			walkRefs(c, path+"."+k, fn)
		}
	case []any:
		for _, c := range x {
			walkRefs(c, path, fn)
		}
	}
}

// contentKey is a digest of a resource without id, meta, narrative and
// reference values, numbers compared by value (HAPI stores a decimal in
// its own canonical form; the values themselves are checked byte for byte
// elsewhere).
func contentKey(r map[string]any) string {
	var strip func(v any) any
	strip = func(v any) any {
		switch x := v.(type) {
		case map[string]any:
			out := map[string]any{}
			for k, c := range x {
				switch k {
				case "id", "meta", "text":
					if _, top := x["resourceType"]; top {
						continue
					}
				case "reference":
					if _, ok := c.(string); ok {
						out[k] = "ref"
						continue
					}
				}
				out[k] = strip(c)
			}
			return out
		case []any:
			out := make([]any, len(x))
			for i, c := range x {
				out[i] = strip(c)
			}
			return out
		case json.Number:
			f, _, err := big.ParseFloat(x.String(), 10, 200, big.ToNearestEven)
			if err != nil {
				return x.String()
			}
			return "n:" + f.Text('g', 40)
		}
		return v
	}
	raw, _ := json.Marshal(strip(r))
	s := sha256.Sum256(raw)
	return fmt.Sprint(r["resourceType"], ":", hex.EncodeToString(s[:8]))
}

// compareGraphs checks that a and b hold the same resources with the same
// references, as multisets of (key, edges).
func compareGraphs(t *testing.T, a, b *graph) {
	t.Helper()
	sig := func(g *graph) map[string]int {
		out := map[string]int{}
		for _, n := range g.nodes {
			if strings.HasPrefix(n.ref, "Patient/") {
				continue // the record's own Patient: compared below
			}
			out[n.key+" "+strings.Join(n.edges, ",")]++
		}
		return out
	}
	sa, sb := sig(a), sig(b)
	diff := 0
	for k, n := range sa {
		if sb[k] != n {
			diff++
			if diff <= 5 {
				t.Errorf("the source holds %d of %s, the destination %d", n, k, sb[k])
			}
		}
	}
	for k, n := range sb {
		if sa[k] != n {
			diff++
			if diff <= 10 {
				t.Errorf("the destination holds %d of %s, the source %d", n, k, sa[k])
			}
		}
	}
	if diff > 0 {
		t.Errorf("%d differences between the records (%d and %d resources)", diff, len(a.nodes), len(b.nodes))
	}
	t.Logf("compared %d resources and their references", len(a.nodes))
}

// everythingKeys reads Patient/$everything of a record as content keys.
func (e *env) everythingKeys(t *testing.T, base, token, pid string, g *graph) map[string]int {
	t.Helper()
	out := map[string]int{}
	next := base + "/Patient/" + pid + "/$everything?_count=500"
	for next != "" {
		res := e.do("GET", next, token, nil).Expect(t, http.StatusOK, "$everything")
		for _, en := range anySlice(res.Body["entry"]) {
			r, _ := en.(map[string]any)["resource"].(map[string]any)
			ref := fmt.Sprint(r["resourceType"], "/", r["id"])
			if n, ok := g.nodes[ref]; ok {
				out[n.key]++
			} else {
				out["unknown "+ref]++
			}
		}
		next = link(res, "next")
	}
	return out
}

// exportFromHAPI runs pfr export against HAPI's own Bulk Data export
// ($export, then Patient/$export with _type), in the partition of the
// record whose Patient is pid (HAPI's partition header, as an operator
// exporting one partition would send it), and against the gateway's
// $export of the same record in front of HAPI. Each holds exactly the
// record's resources (g, read through the gateway) with the same content:
// nothing of another record's partition, nothing missing.
func exportFromHAPI(t *testing.T, e *env, h *hapiServer, apexB, baseB, tokB, pid string, g *graph) {
	t.Helper()
	// Another record on the same HAPI, in a partition of its own.
	e.do("POST", apexB+"/pfr/v1/records", tokB, map[string]any{"slug": "someone-else", "patient": map[string]any{
		"resourceType": "Patient", "name": []any{map[string]any{"family": "Else", "given": []any{"Someone"}}}, "birthDate": "1990-01-01"}}).
		Expect(t, http.StatusCreated, "a second record on the HAPI gateway")
	part := h.partitionOf(t, "Patient/"+pid)
	header := hapitest.PartitionHeader + ": " + part

	started := time.Now()
	all := filepath.Join(t.TempDir(), "hapi-export")
	_, stderr := runPFR(t, "export", "--from", h.base, "--header", header, "--poll-max", "500ms", "--out", all)
	if !strings.Contains(stderr, "$export-poll-status") {
		t.Errorf("pfr export did not poll HAPI's status URL: %s", stderr)
	}
	got := readExportDir(t, all)
	t.Logf("HAPI's $export of partition %s: %d resources in %.1fs", part, len(got), time.Since(started).Seconds())
	sameResources(t, "HAPI's $export", got, g, func(*node) bool { return true })

	started = time.Now()
	some := filepath.Join(t.TempDir(), "hapi-patient-export")
	runPFR(t, "export", "--from", h.base, "--header", header, "--patient", "--type", "Observation,Condition",
		"--poll-max", "500ms", "--out", some, "--quiet")
	got = readExportDir(t, some)
	t.Logf("HAPI's Patient/$export?_type=Observation,Condition: %d resources in %.1fs", len(got), time.Since(started).Seconds())
	sameResources(t, "HAPI's Patient/$export?_type=Observation,Condition", got, g, func(n *node) bool {
		return strings.HasPrefix(n.ref, "Observation/") || strings.HasPrefix(n.ref, "Condition/")
	})

	// The gateway's own $export of the record, read from HAPI through the
	// gateway's pipeline page by page: the same.
	started = time.Now()
	viaGateway := filepath.Join(t.TempDir(), "gateway-export")
	runPFR(t, "export", "--from", baseB, "--token", tokB, "--poll-max", "500ms", "--out", viaGateway, "--insecure", "--quiet")
	got = readExportDir(t, viaGateway)
	t.Logf("the gateway's $export in front of HAPI: %d resources in %.1fs", len(got), time.Since(started).Seconds())
	sameResources(t, "the gateway's $export in front of HAPI", got, g, func(*node) bool { return true })

	importFromHAPI(t, e, h, part, apexB, tokB, pid, g)
}

// importFromHAPI imports HAPI's own $export of the record's partition into
// a new record of the same person on the HAPI gateway, through the
// manifest URL: the import request names HAPI's partition header, which
// the gateway sends to HAPI's origin only (its status URL and its Binary
// files). The new record then holds the same resources, with the same
// reference graph, as the record exported.
func importFromHAPI(t *testing.T, e *env, h *hapiServer, part, apexB, tokB, pid string, g *graph) {
	t.Helper()
	types := map[string]bool{}
	for ref := range g.nodes {
		typ, _, _ := strings.Cut(ref, "/")
		types[typ] = true
	}
	var list []string
	for typ := range types {
		list = append(list, typ)
	}
	slices.Sort(list)
	hapi := func(u string) *http.Response {
		req, _ := http.NewRequest("GET", u, nil)
		req.Header.Set(hapitest.PartitionHeader, part)
		req.Header.Set("Prefer", "respond-async")
		req.Header.Set("Accept", "application/fhir+json")
		res, err := h.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res
	}
	// Only the record's types: HAPI keeps the files of its earlier exports
	// (Binary) in the partition too.
	kick := hapi(h.base + "/$export?_type=" + strings.Join(list, ","))
	status := kick.Header.Get("Content-Location")
	if kick.StatusCode != http.StatusAccepted || status == "" {
		t.Fatalf("HAPI's $export kick-off: %d %q", kick.StatusCode, status)
	}
	testkit.WaitFor(t, "HAPI's $export to finish", 300*time.Millisecond, func() error {
		res := hapi(status)
		if res.StatusCode != http.StatusOK && res.StatusCode != http.StatusAccepted {
			t.Fatalf("HAPI's $export status: %d", res.StatusCode)
		}
		if res.StatusCode != http.StatusOK {
			return errors.New("it is in progress")
		}
		return nil
	})
	person := e.do("GET", fmt.Sprintf("https://bethanie.hapi.localhost:%d/fhir/Patient/%s", httpsPort, pid), tokB, nil).Expect(t, http.StatusOK, "the record's Patient").Body
	patient := map[string]any{"resourceType": "Patient"}
	for _, k := range []string{"name", "gender", "birthDate"} {
		patient[k] = person[k]
	}
	pidC := e.do("POST", apexB+"/pfr/v1/records", tokB, map[string]any{"slug": "bethanie-again", "patient": patient}).
		Expect(t, http.StatusCreated, "a second record of the same person on the HAPI gateway").Body["patientId"].(string)
	started := time.Now()
	body, _ := json.Marshal(map[string]any{"manifest": status, "headers": map[string]string{hapitest.PartitionHeader: part}})
	res := e.do("POST", apexB+"/pfr/v1/records/bethanie-again/import", tokB, body, "Content-Type", "application/json").
		Expect(t, http.StatusAccepted, "the import from HAPI's manifest")
	job := res.Header.Get("Content-Location")
	testkit.WaitFor(t, "the import from HAPI's manifest to end", 300*time.Millisecond, func() error {
		if res = e.do("GET", job, tokB, nil); res.Status == http.StatusAccepted {
			return errors.New("it is in progress")
		}
		return nil
	})
	res.Expect(t, http.StatusOK, "the import from HAPI's $export")
	result, _ := res.Body["result"].(map[string]any)
	t.Logf("import from HAPI's $export (manifest URL, partition header): %v resources in %v transactions, %.1fs",
		result["imported"], result["transactions"], time.Since(started).Seconds())
	compareGraphs(t, g, e.graphOf(t, fmt.Sprintf("https://bethanie-again.hapi.localhost:%d/fhir", httpsPort), tokB, pidC))
}

// partitionOf finds the partition (by id, as the header names it) that
// holds ref, asking HAPI directly in each of the first partitions.
func (h *hapiServer) partitionOf(t *testing.T, ref string) string {
	t.Helper()
	for id := 1; id <= 20; id++ {
		req, _ := http.NewRequest("GET", h.base+"/"+ref, nil)
		req.Header.Set(hapitest.PartitionHeader, fmt.Sprint(id))
		res, err := h.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode == http.StatusOK {
			return fmt.Sprint(id)
		}
	}
	t.Fatalf("no partition of HAPI holds %s", ref)
	return ""
}

// readExportDir reads every resource of an export directory's NDJSON
// files, by Type/id; a resource twice fails the test.
func readExportDir(t *testing.T, dir string) map[string]map[string]any {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.ndjson"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no NDJSON files in %s: %v", dir, err)
	}
	out := map[string]map[string]any{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range bytes.Split(raw, []byte("\n")) {
			if len(bytes.TrimSpace(line)) == 0 {
				continue
			}
			r := decodeNumbers(t, line)
			ref := fmt.Sprint(r["resourceType"], "/", r["id"])
			if _, dup := out[ref]; dup {
				t.Errorf("%s: %s twice", filepath.Base(f), ref)
			}
			out[ref] = r
		}
	}
	return out
}

// sameResources checks that got holds exactly the nodes of g that want
// selects, each with the content g read.
func sameResources(t *testing.T, what string, got map[string]map[string]any, g *graph, want func(*node) bool) {
	t.Helper()
	bad := 0
	report := func(format string, args ...any) {
		if bad++; bad <= 5 {
			t.Errorf(what+": "+format, args...)
		}
	}
	n := 0
	for ref, nd := range g.nodes {
		if !want(nd) {
			continue
		}
		n++
		r, ok := got[ref]
		switch {
		case !ok:
			report("%s is missing", ref)
		case contentKey(r) != nd.key:
			report("%s differs from what a read returns", ref)
		}
	}
	for ref := range got {
		if nd, ok := g.nodes[ref]; !ok || !want(nd) {
			report("holds %s, which is not the record's (or not asked for)", ref)
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d differences (%d resources wanted, %d exported)", what, bad, n, len(got))
	}
}
