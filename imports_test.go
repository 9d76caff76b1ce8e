package pfr

import (
	"bytes"
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

// The import rules of the module, checked on `go list -json ./...` (the
// packages' own imports, transitively; tests may import more, e.g. the
// pipeline's tests run it in front of the embedded store):
//   - Caddy is known only to the glue: no package but the root (which
//     registers the modules), caddymodule, cmd/pfr and the test helper
//     internal/testkit/incaddy depends on caddymodule or on Caddy itself
//     (github.com/caddyserver/caddy/v2/...);
//   - the pipeline and the management API do not depend on the embedded
//     store: it is one upstream among others;
//   - the store depends neither on tenancy nor auth nor the pipeline nor
//     the management API.
func TestImportRules(t *testing.T) {
	const mod = "github.com/pfrgateway/caddy-pfr"
	// The glue, and the test helper that runs Caddy inside a test process.
	glue := map[string]bool{mod: true, mod + "/caddymodule": true, mod + "/cmd/pfr": true,
		mod + "/internal/testkit/incaddy": true}
	within := func(p, pkg string) bool { return p == pkg || strings.HasPrefix(p, pkg+"/") }
	type rule struct {
		from    func(string) bool
		never   []string
		because string
	}
	rules := []rule{
		{func(p string) bool { return !glue[p] }, []string{mod + "/caddymodule", "github.com/caddyserver/caddy/v2"},
			"plain packages know nothing of Caddy"},
		{func(p string) bool { return within(p, mod+"/gateway") || within(p, mod+"/api") }, []string{mod + "/store"},
			"the pipeline does not depend on one particular upstream"},
		{func(p string) bool { return within(p, mod+"/store") },
			[]string{mod + "/tenancy", mod + "/auth", mod + "/gateway", mod + "/api"},
			"the store knows nothing of records, tokens or the pipeline"},
	}

	out, err := exec.Command("go", "list", "-json", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	seen := 0
	for {
		var p struct {
			ImportPath string
			Deps       []string
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		seen++
		for _, r := range rules {
			if !r.from(p.ImportPath) {
				continue
			}
			for _, d := range p.Deps {
				for _, n := range r.never {
					if within(d, n) {
						t.Errorf("%s depends on %s: %s", p.ImportPath, d, r.because)
					}
				}
			}
		}
	}
	if seen < 20 {
		t.Fatalf("go list named only %d packages", seen)
	}
}
