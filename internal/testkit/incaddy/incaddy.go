// Package incaddy runs Caddy inside a test process: a temporary home for
// everything Caddy writes, and loading a configuration. (The in-process
// Caddy is one per process, so the tests that use it run one after the
// other; separate test processes never meet: see internal/testkit.)
package incaddy

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/certmagic"
)

// IsolateHome points this process's Caddy at a new temporary folder (whose
// path it returns; the caller removes it at the end), so that nothing is
// written to ~/.local/share/caddy or ~/.config/caddy: XDG_DATA_HOME and
// XDG_CONFIG_HOME, and the two places Caddy computed from them when its
// package was initialized, before any TestMain ran: the default storage
// (a config without a storage of its own keeps its local CA and
// certificates there) and the autosaved config's path. Call it from
// TestMain before Caddy runs. The go command's own settings file stays
// where it was (GOENV), for the go commands the tests run.
func IsolateHome(prefix string) (string, error) {
	if os.Getenv("GOENV") == "" {
		if cfg, err := os.UserConfigDir(); err == nil {
			if err := os.Setenv("GOENV", filepath.Join(cfg, "go", "env")); err != nil {
				return "", err
			}
		}
	}
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", fmt.Errorf("a temporary home for Caddy: %w", err)
	}
	for env, sub := range map[string]string{"XDG_DATA_HOME": "data", "XDG_CONFIG_HOME": "config"} {
		path := filepath.Join(dir, sub)
		if err := os.MkdirAll(path, 0o700); err != nil {
			_ = os.RemoveAll(dir)
			return "", err
		}
		if err := os.Setenv(env, path); err != nil {
			_ = os.RemoveAll(dir)
			return "", err
		}
	}
	caddy.DefaultStorage = &certmagic.FileStorage{Path: caddy.AppDataDir()}
	caddy.ConfigAutosavePath = filepath.Join(caddy.AppConfigDir(), "autosave.json")
	return dir, nil
}

// Load loads config into the in-process Caddy: a Caddyfile, or JSON when
// adapter is "json". When it returns nil, Caddy serves the new config.
// With ports given, a config that listens (an HTTP server or the admin
// API) on any other port is refused before it loads: a test server on a
// fixed port would meet another copy of the tests there.
func Load(config, adapter string, ports ...int) error {
	raw := []byte(config)
	if adapter != "json" {
		a := caddyconfig.GetAdapter(adapter)
		if a == nil {
			return fmt.Errorf("no config adapter %q", adapter)
		}
		out, _, err := a.Adapt(raw, nil)
		if err != nil {
			return fmt.Errorf("adapting the %s: %w", adapter, err)
		}
		raw = out
	}
	if len(ports) > 0 {
		if err := checkPorts(raw, ports); err != nil {
			return err
		}
	}
	return caddy.Load(raw, true)
}

// checkPorts refuses a JSON config that listens on a port not in ports.
func checkPorts(raw []byte, ports []int) error {
	var cfg struct {
		Admin *struct {
			Listen string `json:"listen"`
		} `json:"admin"`
		Apps struct {
			HTTP *struct {
				Servers map[string]struct {
					Listen []string `json:"listen"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return fmt.Errorf("reading the config's listeners: %w", err)
	}
	var addrs []string
	if cfg.Admin != nil && cfg.Admin.Listen != "" {
		addrs = append(addrs, cfg.Admin.Listen)
	}
	if cfg.Apps.HTTP != nil {
		for _, srv := range cfg.Apps.HTTP.Servers {
			addrs = append(addrs, srv.Listen...)
		}
	}
	for _, a := range addrs {
		na, err := caddy.ParseNetworkAddress(a)
		if err != nil {
			return fmt.Errorf("listener %q: %w", a, err)
		}
		if na.IsUnixNetwork() {
			continue
		}
		for p := na.StartPort; p <= na.EndPort; p++ {
			if !slices.Contains(ports, int(p)) {
				return fmt.Errorf("the config listens on %s, not on a port held for this test process %v", a, ports)
			}
		}
	}
	return nil
}
