package pfrproc

import (
	"context"
	"debug/buildinfo"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// importPath is the package of the pfr command. Building it by import path
// works from any directory inside the caddy-pfr module.
const importPath = "github.com/pfrgateway/caddy-pfr/cmd/pfr"

// Build compiles cmd/pfr into dir and returns the binary's path. The go
// tool's output goes to standard error. It must run inside the caddy-pfr
// module.
func Build(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "pfr")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, importPath)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building cmd/pfr (inside the caddy-pfr module): %w", err)
	}
	return bin, nil
}

// Revision returns the VCS revision binary was built from, shortened to 12
// characters ("+dirty" when the working tree had changes), as the go tool
// stamped it in the binary. When the binary carries none (built with
// -buildvcs=false) and builtHere says it was built from the working
// directory's checkout, it returns "git HEAD <rev>" (with "+dirty" when
// tracked files differ from HEAD); otherwise "unknown revision".
func Revision(ctx context.Context, binary string, builtHere bool) string {
	unknown := "unknown revision"
	if builtHere {
		if head, err := exec.CommandContext(ctx, "git", "rev-parse", "--short=12", "HEAD").Output(); err == nil {
			unknown = "git HEAD " + strings.TrimSpace(string(head))
			if changes, err := exec.CommandContext(ctx, "git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(changes) > 0 {
				unknown += "+dirty"
			}
		}
	}
	info, err := buildinfo.ReadFile(binary)
	if err != nil {
		return unknown
	}
	rev, dirty := "", false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return unknown
	}
	rev = rev[:min(len(rev), 12)]
	if dirty {
		rev += "+dirty"
	}
	return rev
}
