package gateway

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestIsolationChosenOnce checks the policy seam: the upstream's trust
// (Config.TrustUpstreamIsolation, and DisableResponseFilter, which only a
// trusted upstream may turn off) is read in one place, newIsolation, which
// picks the isolation policy in New; every other step of the pipeline asks
// the policy.
func TestIsolationChosenOnce(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	readers := map[string]bool{}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, name, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok {
				continue
			}
			ast.Inspect(fn, func(n ast.Node) bool {
				if sel, ok := n.(*ast.SelectorExpr); ok &&
					(sel.Sel.Name == "TrustUpstreamIsolation" || sel.Sel.Name == "DisableResponseFilter") {
					readers[name+": "+fn.Name.Name+" reads "+sel.Sel.Name] = fn.Name.Name != "newIsolation"
				}
				return true
			})
		}
	}
	found := false
	for where, wrong := range readers {
		if wrong {
			t.Errorf("%s: ask g.iso (isolation.go) instead", where)
		} else {
			found = true
		}
	}
	if !found {
		t.Error("newIsolation no longer reads the configuration: the test looks for the wrong thing")
	}
}
