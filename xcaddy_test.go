package pfr

import (
	"bufio"
	"encoding/json"
	"go/parser"
	"go/token"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// xcaddyManifest is the part of xcaddy's Builder JSON that xcaddy.json uses.
type xcaddyManifest struct {
	CaddyVersion string `json:"caddy_version"`
	Plugins      []struct {
		ModulePath string `json:"module_path"`
		Version    string `json:"version"`
	} `json:"plugins"`
	Replacements []struct {
		Old string `json:"old"`
		New string `json:"new"`
	} `json:"replacements"`
}

// goModFacts reads the module path and the Caddy version from go.mod.
func goModFacts(t *testing.T) (module, caddyVersion string) {
	t.Helper()
	f, err := os.Open("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(strings.TrimPrefix(strings.TrimSpace(sc.Text()), "require "))
		switch {
		case len(fields) == 2 && fields[0] == "module":
			module = fields[1]
		case len(fields) >= 2 && fields[0] == "github.com/caddyserver/caddy/v2":
			caddyVersion = fields[1]
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return module, caddyVersion
}

// TestXcaddyManifestMatchesModule keeps xcaddy.json, go.mod and cmd/pfr in
// agreement: the same Caddy version, this module as the one plugin (replaced
// by the working tree), and a cmd/pfr that links exactly what xcaddy would.
func TestXcaddyManifestMatchesModule(t *testing.T) {
	raw, err := os.ReadFile("xcaddy.json")
	if err != nil {
		t.Fatal(err)
	}
	var m xcaddyManifest
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("xcaddy.json: %v", err)
	}
	module, caddyVersion := goModFacts(t)
	if module == "" || caddyVersion == "" {
		t.Fatalf("go.mod: module %q, caddy version %q", module, caddyVersion)
	}
	if m.CaddyVersion != caddyVersion {
		t.Errorf("xcaddy.json caddy_version %q, go.mod requires %q", m.CaddyVersion, caddyVersion)
	}
	if len(m.Plugins) != 1 || m.Plugins[0].ModulePath != module {
		t.Errorf("xcaddy.json plugins = %+v, want exactly %q", m.Plugins, module)
	}
	if len(m.Replacements) != 1 || m.Replacements[0].Old != module || m.Replacements[0].New != "." {
		t.Errorf("xcaddy.json replacements = %+v, want %s => .", m.Replacements, module)
	}

	file, err := parser.ParseFile(token.NewFileSet(), "cmd/pfr/main.go", nil, parser.ImportsOnly)
	if err != nil {
		t.Fatal(err)
	}
	// The modules linked in are xcaddy's (Caddy's standard ones and ours,
	// by blank import); beside them, main may use only the standard library,
	// Caddy's core and command line (and cobra, which it is built on), and our
	// own command line, none of which
	// registers a module of its own.
	var blank, named []string
	for _, imp := range file.Imports {
		p, _ := strconv.Unquote(imp.Path.Value)
		if imp.Name != nil && imp.Name.Name == "_" {
			blank = append(blank, p)
		} else {
			named = append(named, p)
		}
	}
	slices.Sort(blank)
	want := []string{"github.com/caddyserver/caddy/v2/modules/standard", module}
	slices.Sort(want)
	if !slices.Equal(blank, want) {
		t.Errorf("cmd/pfr links in %v, want exactly %v (what xcaddy's generated main imports)", blank, want)
	}
	allowed := []string{"github.com/caddyserver/caddy/v2", "github.com/caddyserver/caddy/v2/cmd", "github.com/spf13/cobra", module + "/internal/cli"}
	for _, p := range named {
		if !slices.Contains(allowed, p) && strings.Contains(strings.Split(p, "/")[0], ".") {
			t.Errorf("cmd/pfr imports %s; only the standard library and %v may stand beside the modules", p, allowed)
		}
	}
}
