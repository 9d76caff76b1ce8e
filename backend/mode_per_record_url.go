package backend

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// ModePerRecordURL sends every PFR to its own FHIR server, whose base URL
// comes from a template (one container or cloud store per person).
const ModePerRecordURL Mode = "per_record_url"

func init() { registerMode(ModePerRecordURL, perRecordURLMode{}) }

// perRecordURLMode is ModePerRecordURL.
type perRecordURLMode struct{}

func (perRecordURLMode) validate(cfg *Config) error {
	switch {
	case cfg.URLTemplate == "":
		return fmt.Errorf("backend: per_record_url mode needs a URL template")
	case !strings.Contains(cfg.URLTemplate, "{"):
		return fmt.Errorf("backend: URL template %q has no placeholder: every PFR would share one upstream", cfg.URLTemplate)
	}
	return nil
}

// checkTarget: the placeholders the template uses are checked for every
// mode (Backend.checkTarget).
func (perRecordURLMode) checkTarget(*Config, Target) error { return nil }

func (perRecordURLMode) upstream(cfg *Config, t Target) (*url.URL, error) {
	up, err := parseBaseTemplate(cfg.URLTemplate, t)
	if err != nil {
		return nil, fmt.Errorf("backend: per-record upstream: %w", err)
	}
	return up, nil
}

func (perRecordURLMode) apply(_ *Config, r *http.Request, _ Target, up *url.URL, rest, escRest string) {
	r.URL.Scheme, r.URL.Host = up.Scheme, up.Host
	r.Host = up.Host
	setPath(r, up.Path, up.EscapedPath(), rest, escRest)
}

func (perRecordURLMode) baseSuffix(Target) string { return "" }

// partitionOp: each record's server is its own; there is nothing to
// create in it.
func (perRecordURLMode) partitionOp(*Config, string) (string, http.Header, bool) {
	return "", nil, false
}
