package testkit

import (
	"fmt"
	"os"
	"path/filepath"
)

// IsolateCaddyHome points this process's Caddy directories into a new
// temporary folder (whose path it returns; the caller removes it at the
// end): XDG_DATA_HOME (Caddy's default storage, its instance id) and
// XDG_CONFIG_HOME (the autosaved config), so that an in-process Caddy
// never writes to ~/.local/share/caddy or ~/.config/caddy. Call it from
// TestMain, before Caddy runs. The go command's own settings file stays
// where it was (GOENV), for the go commands the tests run.
func IsolateCaddyHome(prefix string) (string, error) {
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
	return dir, nil
}
