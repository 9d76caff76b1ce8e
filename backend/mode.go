package backend

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// Mode says how a PFR is told apart on the upstream FHIR server. Each mode
// is a type behind the partitioner interface, in a file of its own
// (mode_*.go), registered by name: a new mode is one new file here (and
// its Caddyfile syntax, an entry of caddymodule's partitionSyntax, which a
// test checks against Modes), and nothing in the module switches on the
// mode.
type Mode string

// partitioner is one partition mode.
type partitioner interface {
	// validate checks the parts of cfg (defaults applied) that the mode
	// uses or has no use for.
	validate(cfg *Config) error
	// checkTarget validates the fields of a Target that the mode uses.
	checkTarget(cfg *Config, t Target) error
	// upstream returns t's own upstream FHIR base, for a mode that sends
	// each record to its own server; nil otherwise.
	upstream(cfg *Config, t Target) (*url.URL, error)
	// apply marks r, whose client-sent partition headers are gone and
	// whose path below the FHIR base is rest (escRest escaped), as t's.
	apply(cfg *Config, r *http.Request, t Target, up *url.URL, rest, escRest string)
	// baseSuffix is what the upstream appends to its FHIR base for t in
	// the URLs it writes ("/{partition name}" in url_prefix mode).
	baseSuffix(t Target) string
	// partitionOp addresses a partition management operation (HAPI's
	// $partition-management-*) on the upstream: the path and the headers
	// of its request; ok is false when the mode has no partitions to
	// create or delete.
	partitionOp(cfg *Config, op string) (path string, header http.Header, ok bool)
}

// modes holds every partition mode by name (see registerMode).
var modes = map[Mode]partitioner{}

// registerMode makes a partition mode known to New; each mode's file
// calls it from init.
func registerMode(name Mode, p partitioner) {
	if _, dup := modes[name]; dup {
		panic("backend: partition mode registered twice: " + string(name))
	}
	modes[name] = p
}

// Modes returns the names of the registered partition modes, sorted.
func Modes() []Mode {
	names := make([]Mode, 0, len(modes))
	for n := range modes {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// lookupMode returns the partition mode of that name.
func lookupMode(name Mode) (partitioner, error) {
	if p, ok := modes[name]; ok {
		return p, nil
	}
	names := make([]string, 0, len(modes))
	for _, n := range Modes() {
		names = append(names, string(n))
	}
	return nil, fmt.Errorf("backend: unknown partition mode %q (want %s)", name, strings.Join(names, ", "))
}

// noPerRecordUpstream is the upstream method of the modes that use the
// configured upstream for every record.
type noPerRecordUpstream struct{}

func (noPerRecordUpstream) upstream(*Config, Target) (*url.URL, error) { return nil, nil }

// noURLTemplate is the part of validate shared by the modes that send
// every record to the configured upstream.
func noURLTemplate(cfg *Config) error {
	if cfg.URLTemplate != "" {
		return fmt.Errorf("backend: a URL template is only used in per_record_url mode, not %s", cfg.Mode)
	}
	return nil
}
