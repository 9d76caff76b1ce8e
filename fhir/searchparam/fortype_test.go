package searchparam

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pfrgateway/caddy-pfr/fhir/fhirpath"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// Evaluate leaves out the union operands that select another resource
// type (fhirpath.Expr.ForType): on every resource of the Synthea Bundles
// and the real-world IPS documents (contained ones too), every parameter
// of its type (and, on every 20th resource, of every type) gives the same
// nodes as the whole expression.
func TestEvaluateForTypeGivesWhatTheWholeExpressionGives(t *testing.T) {
	bundles := testkit.Synthea(t)
	ips, _ := filepath.Glob(testkit.FHIRPath(t, "realworld/ips/*.json"))
	if len(ips) == 0 {
		t.Fatal("no real-world IPS documents")
	}
	for _, f := range ips {
		bundles[f] = testkit.ReadFile(t, f)
	}
	var resources []map[string]any
	for _, raw := range bundles {
		entries, _ := testkit.DecodeFHIR(t, raw)["entry"].([]any)
		for _, e := range entries {
			res, ok := e.(map[string]any)["resource"].(map[string]any)
			if !ok {
				continue
			}
			resources = append(resources, res)
			contained, _ := res["contained"].([]any)
			for _, c := range contained {
				if cr, ok := c.(map[string]any); ok {
					resources = append(resources, cr)
				}
			}
		}
	}
	types := map[string]bool{}
	for _, res := range resources {
		types[res["resourceType"].(string)] = true
	}
	pruned, compared := 0, 0
	for i, res := range resources {
		typ := res["resourceType"].(string)
		others := map[string]bool{typ: true}
		if i%20 == 0 {
			others = types // the parameters of other types too
		}
		for other := range others {
			for _, p := range ForType(other) {
				if p.Expression == "" {
					continue
				}
				whole, err := p.Compiled()
				if err != nil {
					t.Fatal(err)
				}
				if whole.ForType(typ) != whole {
					pruned++
				}
				want, werr := whole.Evaluate(res)
				got, gerr := p.Evaluate(res)
				compared++
				if fmt.Sprint(werr) != fmt.Sprint(gerr) || values(got) != values(want) {
					t.Fatalf("%s on %s %v: got %v (%v), want %v (%v)", p.ID, typ, res["id"], got, gerr, want, werr)
				}
			}
		}
	}
	if pruned*4 < compared || compared < 10000 {
		t.Fatalf("%d evaluations compared, %d of them pruned", compared, pruned)
	}
	t.Logf("%d evaluations compared, %d of them with a pruned expression", compared, pruned)
}

// values prints the types and values of nodes.
func values(nodes []fhirpath.Node) string {
	var b strings.Builder
	for _, n := range nodes {
		fmt.Fprintf(&b, "%s:%v;", n.Type, n.Value)
	}
	return b.String()
}
