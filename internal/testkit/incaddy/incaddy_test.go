package incaddy

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile" // the caddyfile adapter
	"github.com/caddyserver/certmagic"

	"github.com/pfrgateway/caddy-pfr/internal/testkit"
)

// After IsolateHome, everything Caddy would write to the user's home goes
// to the temporary folder: the data and config directories, the default
// storage and the autosave path, both computed before the call.
func TestIsolateHome(t *testing.T) {
	before := caddy.DefaultStorage.Path
	dir, err := IsolateHome("pfr-incaddy-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	for name, path := range map[string]string{
		"AppDataDir":         caddy.AppDataDir(),
		"AppConfigDir":       caddy.AppConfigDir(),
		"DefaultStorage":     caddy.DefaultStorage.Path,
		"ConfigAutosavePath": caddy.ConfigAutosavePath,
	} {
		if !strings.HasPrefix(path, dir+string(filepath.Separator)) {
			t.Errorf("%s = %s, not inside %s", name, path, dir)
		}
	}
	if before == caddy.DefaultStorage.Path {
		t.Errorf("DefaultStorage stayed at %s", before)
	}
	var _ certmagic.Storage = caddy.DefaultStorage
	if os.Getenv("GOENV") == "" {
		t.Error("GOENV not kept")
	}
}

// A config that saves itself writes the autosave into the temporary home.
func TestLoadAutosavesIntoTheTemporaryHome(t *testing.T) {
	dir, err := IsolateHome("pfr-incaddy-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := Load(`{"admin":{"disabled":true}}`, "json"); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = caddy.Stop() }()
	if _, err := os.Stat(filepath.Join(dir, "config", "caddy", "autosave.json")); err != nil {
		t.Errorf("no autosave in the temporary home: %v", err)
	}
	if err := Load("not a caddyfile {", "caddyfile"); err == nil || !strings.Contains(err.Error(), "adapting the caddyfile") {
		t.Errorf("a broken Caddyfile: %v, want the adapter's error", err)
	}
}

// With ports given, a config listening anywhere else is refused before it
// loads (the admin API and every HTTP server are checked).
func TestLoadRefusesPortsNotHeld(t *testing.T) {
	dir, err := IsolateHome("pfr-incaddy-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	for _, c := range []struct{ config, want string }{
		{`{"admin":{"listen":"127.0.0.1:2999"}}`, "127.0.0.1:2999"},
		{`{"admin":{"disabled":true},"apps":{"http":{"servers":{"a":{"listen":["127.0.0.1:9081"]}}}}}`, "127.0.0.1:9081"},
		{"{\n\tadmin off\n}\nhttp://127.0.0.1:9081 {\n\trespond ok\n}", ":9081"},
	} {
		adapter := "json"
		if !strings.HasPrefix(c.config, `{"`) {
			adapter = "caddyfile"
		}
		if err := Load(c.config, adapter, 40001, 40002); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Load(%s): %v, want a refusal naming %s", c.config, err, c.want)
		}
	}
	// A config on a port this process holds loads (and listens on it:
	// held, so no other copy of the tests can be given it).
	held := testkit.Reserve(t)
	if err := Load(fmt.Sprintf(`{"admin":{"disabled":true},"apps":{"http":{"servers":{"a":{"listen":[%q]}}}}}`, held.Addr()), "json", held.Number); err != nil {
		t.Errorf("a config on a given port: %v", err)
	}
	_ = caddy.Stop()
}
